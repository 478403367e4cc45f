"""Shared helpers for the benchmark scripts (not a test module; nothing here asserts).

* containers: every container a benchmark creates carries ``log-capturer-bench=<run id>``
  and is removed by that label in a ``finally`` (other containers on the engine are never
  touched); the 2M-line backlog container can be kept and reused across scripts;
* process figures from ``/proc``: CPU seconds (utime + stime), RSS;
* Prometheus histograms: quantiles from bucket deltas, as ``histogram_quantile`` does;
* :class:`SinkTailer`: follows the file sink, stamps arrival times and samples the
  delivery lag (arrival minus the record's Docker timestamp);
* :func:`audit_numbered`: every numbered line delivered exactly once.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The soak's least-squares slope, so benchmarks and smoke test judge growth alike.
from scripts.smoke_test import slope_per_min  # noqa: E402,F401

IMAGE = os.environ.get("TEST_IMAGE", "log-capturer-test/busybox:1")
LABEL = "log-capturer-bench"
BACKLOG_LABEL = "log-capturer-bench-backlog"  # value: the generator spec, for reuse
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAD = "some payload to look like a real log line, with a few more words in it"


def new_run_id(prefix: str) -> str:
    return f"{prefix}{int(time.time())}-{os.getpid()}"


def docker_client(pool: int = 64) -> docker.DockerClient:
    return docker.from_env(max_pool_size=pool, timeout=120)


def engine_version(client: docker.DockerClient) -> str:
    v = client.version()
    return f"{v.get('Version')} (API {v.get('ApiVersion')})"


def cleanup_on_sigterm() -> None:
    """SIGTERM (e.g. from ``timeout``) unwinds like Ctrl-C, so ``finally`` blocks remove
    the containers."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def add_code_arg(parser: Any) -> None:
    cleanup_on_sigterm()
    parser.add_argument(
        "--code",
        default=str(REPO),
        help="source tree whose log_capturer the daemon runs (default: the tree of this "
        "script; the venv's editable install may point elsewhere)",
    )


def code_env(code: str) -> dict[str, str]:
    """Environment that makes ``python -m log_capturer`` import the tree ``code``."""
    return {"PYTHONPATH": str(Path(code).resolve())}


def code_version(code: str) -> str:
    """``<path>@<commit>`` (``+dirty`` if log_capturer/ has uncommitted changes)."""
    try:
        commit = subprocess.run(
            ["git", "-C", code, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", code, "status", "--porcelain", "log_capturer"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(code)
    return f"{Path(code).resolve()}@{commit}{'+dirty' if dirty else ''}"


def write_json(summary: dict[str, Any], path: str | None) -> None:
    """Print the summary (last thing on stdout) and write it to ``path`` if given."""
    text = json.dumps(summary, indent=1, default=str)
    print(text, flush=True)
    if path:
        Path(path).write_text(text + "\n")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        raw = fh.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def dockerd_pid() -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() == "dockerd":
                    return int(entry)
        except OSError:
            continue
    raise RuntimeError("no dockerd process found")


# -- containers ----------------------------------------------------------------------------


class BenchContainers:
    """Creates containers labelled with this run's id; :meth:`cleanup` removes exactly those."""

    def __init__(self, client: docker.DockerClient, run_id: str, keep: bool = False) -> None:
        self.client = client
        self.run_id = run_id
        self.keep = keep
        self.created: list[str] = []
        self._lock = threading.Lock()

    def run(
        self,
        script: str,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        log_max_size: str | None = None,
    ) -> tuple[str, float, float]:
        """Create and start a container; (id, time.time() before the call, after it)."""
        log_config = None
        if log_max_size:
            log_config = docker.types.LogConfig(type="json-file", config={"max-size": log_max_size})
        before = time.time()
        container = self.client.containers.run(
            IMAGE,
            ["sh", "-c", script],
            name=name,
            detach=True,
            labels={LABEL: self.run_id, **(labels or {})},
            log_config=log_config,
        )
        after = time.time()
        with self._lock:
            self.created.append(container.id)
        return container.id, before, after

    def run_many(
        self,
        specs: list[tuple[str, str]],
        workers: int = 8,
        labels: dict[str, str] | None = None,
        log_max_size: str | None = None,
    ) -> dict[str, tuple[str, float, float]]:
        """Start (name, script) containers with a thread pool; name -> run() result."""

        def one(spec: tuple[str, str]) -> tuple[str, tuple[str, float, float]]:
            name, script = spec
            return name, self.run(script, name=name, labels=labels, log_max_size=log_max_size)

        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(one, specs))

    def kill_all(self, workers: int = 8) -> None:
        def one(container: Any) -> None:
            with contextlib.suppress(docker.errors.APIError):
                container.kill()

        running = self.client.containers.list(filters={"label": f"{LABEL}={self.run_id}"})
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, running))

    def cleanup(self, workers: int = 8) -> None:
        if self.keep:
            log(f"--keep: leaving containers labelled {LABEL}={self.run_id}")
            return

        def one(container: Any) -> None:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                log(f"could not remove {container.name}: {exc}")

        mine = self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.run_id}"})
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, mine))
        if mine:
            log(f"removed {len(mine)} containers labelled {LABEL}={self.run_id}")


def backlog_script(lines: int, then: str = "exec sleep 2147483647") -> str:
    """N numbered stdout lines (≈150 B each in the json-file log), every 10th also a line on
    stderr, then ``then`` (by default: stay running, so the container can also serve as
    the big log of the reopen benchmark)."""
    return (
        f"awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) {{ "
        f'printf "line %d of the benchmark, some payload to look like a real log\\n", i; '
        f'if (i % 10 == 0) printf "err %d\\n", i > "/dev/stderr" }} }}\'; '
        f"echo backlog-done >&2; {then}"
    )


def backlog_expected(lines: int) -> int:
    """Lines the backlog container writes: stdout + stderr + the ``backlog-done`` marker."""
    return lines + lines // 10 + 1


def ensure_backlog(
    client: docker.DockerClient, lines: int, reuse: bool, run_id: str
) -> tuple[Any, bool]:
    """The running backlog container of ``lines`` lines: a kept one (label
    ``log-capturer-bench-backlog=v1-<lines>``) when ``reuse``, else a new one labelled with
    ``run_id``. Returns (container, reused)."""
    spec = f"v1-{lines}"
    if reuse:
        for c in client.containers.list(filters={"label": f"{BACKLOG_LABEL}={spec}"}):
            if c.labels.get(LABEL):
                log(f"reusing backlog container {c.name} ({c.labels[LABEL]})")
                return c, True
    started = time.monotonic()
    container = client.containers.run(
        IMAGE,
        ["sh", "-c", backlog_script(lines)],
        detach=True,
        name=f"bench-backlog-{lines}-{run_id}",
        labels={LABEL: run_id, BACKLOG_LABEL: spec},
    )
    log(f"writing a {lines}-line backlog in {container.name} ...")

    def done() -> bool:
        # The tail counts both streams, and awk flushes its stdout after its stderr:
        # look back far enough for the marker.
        tail = container.logs(stdout=False, stderr=True, tail=20000)
        return b"backlog-done" in tail

    while not done():
        container.reload()
        if container.status != "running":
            raise RuntimeError(f"backlog container exited early: {container.status}")
        time.sleep(1)
    log(f"backlog written in {time.monotonic() - started:.1f}s")
    return container, False


def log_file_size(container: Any) -> int:
    container.reload()
    path = container.attrs.get("LogPath") or ""
    try:
        return os.path.getsize(path)
    except OSError:
        return -1


def numbered_script(
    duration_s: float, rate: float = 0, pad: str = PAD, end_marker: bool = True, ticks: int = 10
) -> str:
    """awk writing ``<n> <pad>`` lines 1, 2, 3 ... for ``duration_s`` seconds, then
    ``end <n>``. ``rate`` 0 = as fast as it can (buffered writes); otherwise ``rate``
    lines/s in ``ticks`` bursts a second (flushed), catching up at each second boundary."""
    end = 'printf "end %d\\n", i; ' if end_marker else ""
    if rate <= 0:
        body = (
            f"end = systime() + {duration_s:g}; i = 0; "
            f'while (1) {{ for (k = 0; k < 2000; k++) {{ i++; printf "%d {pad}\\n", i }} '
            f"if (systime() >= end) break }} {end}"
        )
    else:
        body = (
            f"start = systime(); end = start + {duration_s:g}; i = 0; sec = start; tick = 0; "
            f"while (1) {{ now = systime(); if (now >= end) break; "
            f"if (now != sec) {{ sec = now; tick = 0 }} if (tick < {ticks}) tick++; "
            f"target = {rate:g} * (now - start) + int({rate:g} * tick / {ticks}); "
            f'while (i < target) {{ i++; printf "%d {pad}\\n", i }} fflush(); '
            f'system("usleep {int(1e6 / ticks)}") }} {end}'
        )
    return f"awk 'BEGIN {{ {body} }}'"


def slow_script(duration_s: float, interval_s: float, pad: str = PAD) -> str:
    """sh writing ``<n> <pad>`` every ``interval_s`` seconds for ``duration_s``, then
    ``end <n>`` (a mostly idle container; no fork but sleep between lines)."""
    return (
        f"i=0; end=$(( $(date +%s) + {int(duration_s)} )); "
        f'while [ "$(date +%s)" -lt "$end" ]; do i=$((i+1)); echo "$i {pad}"; '
        f'sleep {interval_s:g}; done; echo "end $i"'
    )


# -- metrics -------------------------------------------------------------------------------


def metric_total(metrics: dict[str, float], name: str) -> float:
    """Sum of every series of ``name`` (any labels)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


_LE = re.compile(r'le="([^"]+)"')


def histogram_buckets(
    metrics: dict[str, float], name: str, match: str = ""
) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of ``name`` summed over series containing ``match``."""
    out: dict[float, float] = {}
    for key, value in metrics.items():
        if not key.startswith(name + "_bucket{") or match not in key:
            continue
        m = _LE.search(key)
        if m:
            le = float(m.group(1))
            out[le] = out.get(le, 0.0) + value
    return sorted(out.items())


def histogram_delta(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    prior = dict(before)
    return [(le, count - prior.get(le, 0.0)) for le, count in after]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile: linear inside the bucket; the +Inf bucket answers
    the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def fraction_le(bound: float, buckets: list[tuple[float, float]]) -> float:
    """Share of observations at or below the largest bucket bound <= ``bound``."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    below = [count for le, count in buckets if le <= bound]
    return (below[-1] if below else 0.0) / buckets[-1][1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[idx]


class Sampler(threading.Thread):
    """Calls ``fn`` every ``interval`` seconds and keeps (elapsed, result)."""

    def __init__(self, fn: Callable[[], dict[str, float]], interval: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.fn = fn
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.errors = 0
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic() - self._t0, self.fn()))
            except Exception:
                self.errors += 1
            if self._halt.wait(self.interval):
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


# -- the file sink -------------------------------------------------------------------------

_SECONDS: dict[bytes, int] = {}


def parse_ts(raw: bytes) -> float:
    """``2026-11-23T12:13:10.147869933Z`` -> epoch seconds (float)."""
    head = raw[:19]
    secs = _SECONDS.get(head)
    if secs is None:
        secs = calendar.timegm(time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S"))
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        _SECONDS[head] = secs
    frac = raw[19:].rstrip(b"Z")
    return secs + (float(frac) if frac.startswith(b".") else 0.0)


def record_ts(line: bytes) -> float | None:
    start = line.find(b'"ts":"')
    if start < 0:
        return None
    start += 6
    end = line.find(b'"', start)
    try:
        return parse_ts(line[start:end])
    except ValueError:
        return None


@dataclass
class TailStats:
    lines: int = 0
    lag_samples: list[float] = field(default_factory=list)
    first_arrival: float = 0.0
    last_arrival: float = 0.0


class SinkTailer(threading.Thread):
    """Follows ``logs.jsonl`` as it grows. Each read is stamped with ``time.time()``; the
    lag of the first line of every read and of every ``sample_every``-th line is
    ``arrival - ts`` (an upper bound by up to one poll interval). ``on_line`` (if given)
    sees every complete line with its arrival time."""

    def __init__(
        self,
        path: Path,
        sample_every: int = 100,
        poll: float = 0.02,
        on_line: Callable[[bytes, float], None] | None = None,
    ) -> None:
        super().__init__(name="sink-tailer", daemon=True)
        self.path = path
        self.sample_every = sample_every
        self.poll = poll
        self.on_line = on_line
        self.stats = TailStats()
        self._halt = threading.Event()
        self._window: tuple[float, float] | None = None

    def measure_between(self, start: float, end: float) -> None:
        """Only keep lag samples of lines whose ts is in [start, end] (epoch seconds)."""
        self._window = (start, end)

    def run(self) -> None:
        fh = None
        pending = b""
        try:
            while not self._halt.is_set():
                if fh is None:
                    try:
                        fh = open(self.path, "rb")  # noqa: SIM115 - closed in finally
                    except FileNotFoundError:
                        self._halt.wait(self.poll)
                        continue
                data = fh.read(4 << 20)
                if not data:
                    self._halt.wait(self.poll)
                    continue
                now = time.time()
                data = pending + data
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                self._consume(data[:cut], now)
            if fh is not None:  # whatever is left once asked to stop
                data = pending + fh.read()
                cut = data.rfind(b"\n") + 1
                self._consume(data[:cut], time.time())
        finally:
            if fh is not None:
                fh.close()

    def _consume(self, chunk: bytes, now: float) -> None:
        if not chunk:
            return
        lines = chunk.split(b"\n")
        lines.pop()  # after the last newline
        s = self.stats
        if not s.first_arrival:
            s.first_arrival = now
        s.last_arrival = now
        s.lines += len(lines)
        window = self._window
        for idx in range(0, len(lines), self.sample_every):
            ts = record_ts(lines[idx])
            if ts is None or (window and not window[0] <= ts <= window[1]):
                continue
            s.lag_samples.append(now - ts)
        if self.on_line is not None:
            for line in lines:
                self.on_line(line, now)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)


def wait_delivery(tailer: SinkTailer, total: int, timeout: float, stall: float) -> bool:
    """Wait until the sink holds ``total`` lines; give up after ``timeout`` or when no new
    line arrived for ``stall`` seconds. True if all arrived."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while tailer.stats.lines < total:
        now = time.monotonic()
        if tailer.stats.lines != last:
            last, last_change = tailer.stats.lines, now
        if now > deadline or now - last_change > stall:
            log(f"delivery stopped at {tailer.stats.lines}/{total} lines")
            return False
        time.sleep(0.05)
    return True


@dataclass
class Audit:
    containers: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    incomplete: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.incomplete)


def audit_numbered(path: Path, names: Iterable[str]) -> Audit:
    """Every container in ``names`` wrote ``1 ..`` ``N`` then ``end N`` (numbered_script) on
    stdout: check each number arrived exactly once and the end marker arrived."""
    wanted = set(names)
    seen: dict[str, bytearray] = {}
    ends: dict[str, list[int]] = {}
    audit = Audit(containers=len(wanted))
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue
            rec = json.loads(raw)
            name = rec.get("container_name")
            if name not in wanted:
                continue
            audit.delivered += 1
            msg: str = rec["message"]
            head = msg.split(" ", 2)
            if head[0] == "end" and len(head) > 1:
                ends.setdefault(name, []).append(int(head[1]))
                continue
            if rec.get("stream") != "stdout" or not head[0].isdigit():
                audit.unexpected += 1
                continue
            n = int(head[0])
            bits = seen.setdefault(name, bytearray())
            if n >= len(bits):
                bits.extend(b"\0" * max(n + 1 - len(bits), len(bits)))
            if bits[n] < 255:
                bits[n] += 1
    for name in sorted(wanted):
        end = ends.get(name, [])
        if len(end) != 1:
            audit.incomplete.append(f"{name}: {len(end)} end markers")
            if len(end) > 1:
                audit.duplicated += len(end) - 1
        bits = seen.get(name, bytearray())
        top = end[0] if end else max((i for i, b in enumerate(bits) if b), default=0)
        audit.expected += top + 1
        for i in range(1, top + 1):
            c = bits[i] if i < len(bits) else 0
            if c == 0:
                audit.lost += 1
            elif c > 1:
                audit.duplicated += c - 1
        audit.unexpected += sum(1 for i in range(top + 1, len(bits)) if bits[i])
    if audit.incomplete and len(audit.incomplete) > 20:
        audit.incomplete = [*audit.incomplete[:20], f"... {len(audit.incomplete) - 20} more"]
    return audit
