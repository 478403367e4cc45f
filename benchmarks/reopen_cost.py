"""Engine CPU per log-stream reopen: a container with a big json-file log vs an empty one.

Usage:
  .venv/bin/python benchmarks/reopen_cost.py                       # 2M-line (≈290 MB) log
  .venv/bin/python benchmarks/reopen_cost.py --quick               # 200k lines, short runs
  .venv/bin/python benchmarks/reopen_cost.py --modes daemon \
      --set container_monitor.resume_tail_lines=1000

Every window the daemon closes its log stream and reopens it with ``since`` = the last
line it delivered. With the json-file driver the engine answers such a request by
reading the log file from its start, so the cost of a reopen grows with the log. The
figure is dockerd's CPU time (utime + stime from /proc/<dockerd>/stat) per reopen on
the big log divided by the same on an empty log (target: ratio <= 2).

Two ways, each on both containers (both running, idle):

* raw:    ``--reopens`` requests ``GET /containers/{id}/logs?follow=1&stdout=1&stderr=1&
          timestamps=1&since=<last line, seconds.nanoseconds>`` on the Docker socket, each
          closed after ``--hold`` seconds, once without and once with ``&tail=1000``
          (``--tail``); optionally ``&until=`` as the daemon sends (``--with-until``);
* daemon: the real daemon with ``container_monitor.stream_window: 1s``
          (``--stream-window``) monitoring only that container for ``--daemon-duration``
          seconds, as after a restart: a first
          run (not measured) resumes from positions set at the container's last line and
          runs until it has caught up (the positions file holds each stream's checked
          time past its last line, or ``--warmup-max`` seconds), is stopped (SIGTERM),
          and the measured run restarts on its positions. ``--no-restart`` measures the
          first run instead (a restart from positions without checked times, as written
          before they existed). dockerd CPU per window, windows from
          ``log_capturer_stream_windows_total`` (requests, proof reads included);
          ``tail_fallbacks`` and ``proof_reads`` count ``log_capturer_stream_tail_
          fallbacks_total`` and ``..._proof_reads_total`` (0 also for a daemon without
          them); ``--set key.path=value`` passes config keys.

Other activity on the engine (other containers logging, a soak test) also burns dockerd
CPU. Each measurement is bracketed by idle baselines of the same length (nothing of
ours running) and their mean rate is subtracted; run it on a quiet engine for clean
figures (``baseline_share`` says how much of the raw delta was background).

The big container is the backlog container of ``capture_throughput.py`` (reused when
one was kept with ``--keep``; ``--keep`` here keeps it too).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from log_capturer_testkit import (
    BENCH_LABEL,
    Daemon,
    Fleet,
    cpu_seconds,
    deep_merge,
    dockerd_pid,
    metric_total,
)
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log
from log_capturer_testkit.sink import parse_ts
from log_capturer_testkit.workloads import backlog_expected, ensure_backlog, log_file_size

SOCKET = "/var/run/docker.sock"
API = "v1.41"


def last_line_ts_ns(client: Any, container_id: str) -> int:
    """Timestamp (ns) of the container's last log line, 0 if it has none."""
    raw = client.api.logs(container_id, stdout=True, stderr=True, timestamps=True, tail=1)
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return 0
    return int(parse_ts(text.split(" ", 1)[0].encode()) * 1e9)


def last_stream_marks(client: Any, container_id: str) -> dict[str, int]:
    """Timestamp (ns) of the last line of each stream. (The engine applies ``tail`` to the
    file before the stream filter, so ``tail=1`` of one stream is often empty: take the
    last of a longer tail.)"""
    out = {}
    for stream in ("stdout", "stderr"):
        raw = client.api.logs(
            container_id,
            stdout=stream == "stdout",
            stderr=stream == "stderr",
            timestamps=True,
            tail=50000,  # awk flushes its buffered stdout after its last stderr line
        )
        lines = raw.decode("utf-8", "replace").strip().splitlines()
        text = lines[-1] if lines else ""
        if text:
            # exact nanoseconds, not a float round trip
            stamp = text.split(" ", 1)[0]
            secs = int(parse_ts(stamp[:19].encode() + b"Z"))
            frac = stamp[20:].rstrip("Z")
            out[stream] = secs * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    return out


def api_ts(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return f"{secs}.{frac:09d}"


def one_reopen(container_id: str, since_ns: int, tail: int, hold: float, until: bool) -> int:
    """One follow request held open ``hold`` seconds; returns the bytes received."""
    params = {"follow": 1, "stdout": 1, "stderr": 1, "timestamps": 1}
    if since_ns:
        params["since"] = api_ts(since_ns)  # type: ignore[assignment]
    if tail:
        params["tail"] = tail
    if until:
        params["until"] = api_ts(time.time_ns() + int(hold * 1e9))  # type: ignore[assignment]
    path = f"/{API}/containers/{container_id}/logs?{urllib.parse.urlencode(params)}"
    received = 0
    deadline = time.monotonic() + hold
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(SOCKET)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n".encode())
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            received += len(data)
            if data.endswith(b"0\r\n\r\n"):  # the engine ended the body (until reached)
                break
    return received


def idle_rate(dockerd: int, seconds: float) -> float:
    """dockerd CPU seconds per second while nothing of ours runs."""
    c0, t0 = cpu_seconds(dockerd), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(dockerd) - c0) / (time.monotonic() - t0)


def settle(dockerd: int, idle: float, max_wait: float) -> float:
    """Wait until dockerd is back to its idle CPU rate (two 1 s samples at most
    ``idle`` + 0.05 CPU/s): a request the client closed can leave the engine still
    scanning the log file. Returns the seconds waited."""
    started = time.monotonic()
    calm = 0
    while time.monotonic() - started < max_wait:
        c0 = cpu_seconds(dockerd)
        time.sleep(1)
        calm = calm + 1 if cpu_seconds(dockerd) - c0 <= idle * 1.2 + 0.05 else 0
        if calm >= 2:
            break
    return time.monotonic() - started


def bracketed(dockerd: int, baseline_s: float, fn: Any, settle_max: float) -> dict[str, float]:
    """Run ``fn`` (returns a count and extras) with idle baselines before and after it;
    the engine CPU counted runs until dockerd is idle again (``settle_s``), so work the
    engine goes on doing after the requests closed is part of the cost."""
    before = idle_rate(dockerd, baseline_s)
    c0, t0 = cpu_seconds(dockerd), time.monotonic()
    count, extra = fn()
    run_s = time.monotonic() - t0
    settled = settle(dockerd, before, settle_max)
    elapsed = time.monotonic() - t0
    delta = cpu_seconds(dockerd) - c0
    after = idle_rate(dockerd, baseline_s)
    background = (before + after) / 2 * elapsed
    net = max(delta - background, 0.0)
    return {
        "count": count,
        "run_s": round(run_s, 2),
        "settle_s": round(settled, 1),
        "dockerd_cpu_s": round(delta, 3),
        "idle_rate_before": round(before, 3),
        "idle_rate_after": round(after, 3),
        "background_cpu_s": round(background, 3),
        "baseline_share": round(background / delta, 3) if delta else 0.0,
        "dockerd_cpu_ms_each": round(net / count * 1000, 3) if count else float("nan"),
        # without subtracting the background: an upper bound
        "dockerd_cpu_ms_each_upper": round(delta / count * 1000, 3) if count else float("nan"),
        **extra,
    }


def raw_mode(
    args: argparse.Namespace, dockerd: int, targets: dict[str, tuple[str, int]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tail in (0, args.tail):
        key = f"tail_{tail}" if tail else "no_tail"
        per: dict[str, Any] = {}
        for which, (cid, since_ns) in targets.items():

            def run(cid: str = cid, since_ns: int = since_ns, tail: int = tail) -> Any:
                received = sum(
                    one_reopen(cid, since_ns, tail, args.hold, args.with_until)
                    for _ in range(args.reopens)
                )
                return args.reopens, {"bytes_received": received}

            per[which] = bracketed(dockerd, args.baseline, run, args.settle_max)
            log(f"raw {key} {which}: {json.dumps(per[which])}")
        per.update(compare(per["big"], per["empty"]))
        out[key] = per
    return out


def ratio(big: dict[str, Any], empty: dict[str, Any]) -> float | None:
    """Big / empty per reopen; None when the empty one is lost in the background noise
    (then ``big_minus_empty_ms_each`` is the figure to read)."""
    b, e = float(big["dockerd_cpu_ms_each"]), float(empty["dockerd_cpu_ms_each"])
    if not e or e != e or b != b:
        return None
    return round(b / e, 2)


def compare(big: dict[str, Any], empty: dict[str, Any]) -> dict[str, Any]:
    b, e = big["dockerd_cpu_ms_each"], empty["dockerd_cpu_ms_each"]
    upper = empty["dockerd_cpu_ms_each_upper"]
    return {
        "ratio_big_vs_empty": ratio(big, empty),
        # the empty log's cost is often lost in the background: big (net) / empty (upper
        # bound) is a lower bound of the ratio that is always defined
        "ratio_lower_bound": round(b / upper, 2) if upper and upper == upper else None,
        "big_minus_empty_ms_each": round(b - e, 3) if b == b and e == e else None,
    }


def daemon_mode(
    args: argparse.Namespace,
    dockerd: int,
    client: Any,
    targets: dict[str, tuple[str, int]],
    workdir: Path,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which, (cid, _since) in targets.items():
        container = client.containers.get(cid)
        common_overrides = {
            "container_monitor": {"stream_window": args.stream_window},
            "positions": {"flush_interval": "1s"},
        }
        overrides = deep_merge(common_overrides, common.parse_sets(args.set))
        daemon = Daemon(
            workdir / which,
            container.labels[BENCH_LABEL],
            overrides,
            env=common.code_env(args.code),
            label=BENCH_LABEL,
        )
        marks = last_stream_marks(client, cid)
        if marks:  # resume at the last line, as after a restart
            daemon.data.mkdir(parents=True, exist_ok=True)
            streams = {s: {"ts": api_ts(ns), "ts_ns": ns, "count": 1} for s, ns in marks.items()}
            for s in ("stdout", "stderr"):
                if s not in streams:
                    streams[s] = {"ts": api_ts(0), "ts_ns": 0, "count": 0}
            (daemon.data / "positions.json").write_text(
                json.dumps(
                    {
                        "version": 1,
                        "sinks": {},
                        "containers": {cid: {"name": container.name, "streams": streams}},
                    }
                )
            )

        if args.restart:
            warmup(args, dockerd, daemon, cid)

        def run(daemon: Daemon = daemon) -> Any:
            # counted from the daemon's start (its first window is a reopen too) to its
            # stop; the engine CPU until dockerd is idle again (see bracketed)
            daemon.start()
            try:
                time.sleep(args.daemon_duration)
                m1 = daemon.metrics()
            finally:
                daemon.stop()

            def delta(name: str) -> float:
                return metric_total(m1, name)

            windows = delta("log_capturer_stream_windows_total")
            extra = {
                "lines_captured": delta("log_capturer_lines_captured_total"),
                "lines_deduplicated": delta("log_capturer_lines_deduplicated_total"),
                "windows_by_end": {
                    k.split('end="')[1].rstrip('"}'): v
                    for k, v in m1.items()
                    if k.startswith("log_capturer_stream_windows_total{")
                },
            }
            # (series appear once counted: absent = none, or a daemon without them)
            extra["tail_fallbacks"] = delta("log_capturer_stream_tail_fallbacks_total")
            extra["proof_reads"] = delta("log_capturer_stream_proof_reads_total")
            return int(windows), extra

        try:
            out[which] = bracketed(
                dockerd, args.baseline_daemon or args.daemon_duration, run, args.settle_max
            )
        except AssertionError as exc:
            out[which] = {"error": str(exc)[:2000]}
        log(f"daemon {which}: {json.dumps(out[which])}")
    if "error" not in out.get("big", {}) and "error" not in out.get("empty", {}):
        out.update(compare(out["big"], out["empty"]))
    return out


def caught_up(daemon: Daemon, container_id: str) -> bool:
    """Whether the positions file holds, for every stream of the container with a line,
    a checked time past that line (what a caught-up daemon saves); True for a container
    without lines (nothing to catch up, and no positions file until the daemon stops)."""
    try:
        document = json.loads((daemon.data / "positions.json").read_text())
    except FileNotFoundError:
        return True
    except ValueError:
        return False
    streams = document.get("containers", {}).get(container_id, {}).get("streams", {})
    return all(
        s.get("checked_ns", 0) > s["ts_ns"] for s in streams.values() if s.get("ts_ns", 0) > 0
    )


def warmup(args: argparse.Namespace, dockerd: int, daemon: Daemon, container_id: str) -> None:
    """The daemon's life before the restart: it runs until it has caught up (at least
    one window; ``--warmup-max`` at most), then stops (SIGTERM saves the positions);
    the engine is left to go idle (a full read it asked for may outlive the request)."""
    idle = idle_rate(dockerd, 5)
    started = time.monotonic()
    daemon.start()
    try:
        while time.monotonic() - started < args.warmup_max:
            windows = metric_total(daemon.metrics(), "log_capturer_stream_windows_total")
            if windows >= 1 and caught_up(daemon, container_id):
                break
            time.sleep(1)
        metrics = daemon.metrics()
    finally:
        daemon.stop()
    log(
        f"warm-up {container_id[:12]}: {time.monotonic() - started:.1f} s, caught up "
        f"{caught_up(daemon, container_id)}, fallbacks "
        f"{metric_total(metrics, 'log_capturer_stream_tail_fallbacks_total')}, proof reads "
        f"{metric_total(metrics, 'log_capturer_stream_proof_reads_total')}"
    )
    settle(dockerd, idle, args.settle_max)


def main() -> int:
    p = common.BenchParser(
        __doc__,
        quick={"lines": 200_000, "reopens": 5, "daemon_duration": 15, "baseline": 5},
        stream_window="1s",
        backlog_lines=2_000_000,
    )
    p.add_argument("--modes", default="raw,daemon", help="comma list: raw, daemon")
    p.add_argument("--reopens", type=int, default=20, help="raw requests per variant")
    p.add_argument("--hold", type=float, default=1.0, help="raw: seconds each stays open")
    p.add_argument("--tail", type=int, default=1000, help="raw: the tail= of the second variant")
    p.add_argument("--with-until", action="store_true", help="raw: also send until=now+hold")
    p.add_argument("--daemon-duration", type=float, default=60, help="daemon: seconds per run")
    p.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="daemon: measure a restart after a run that caught up (see above)",
    )
    p.add_argument(
        "--warmup-max", type=float, default=120, help="daemon: longest first run before a restart"
    )
    p.add_argument(
        "--baseline",
        type=float,
        default=10,
        help="idle baseline (s) before and after each raw run",
    )
    p.add_argument(
        "--baseline-daemon", type=float, default=0, help="daemon baseline (s); 0 = its duration"
    )
    p.add_argument(
        "--settle-max", type=float, default=180, help="longest wait for dockerd to go idle (s)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    args = p.parse()
    client = common.docker_client()
    run_id = common.new_run_id("reopen")
    containers = Fleet(client, run_id, label=BENCH_LABEL)
    empties = Fleet(client, run_id + "-empty", label=BENCH_LABEL)
    dockerd = dockerd_pid()
    big = None
    reused = False
    try:
        big, reused = ensure_backlog(client, args.lines, args.reuse, run_id)
        # its own label value, so a daemon following one of the two never sees the other
        empty_id = empties.run("exec sleep 2147483647", name=f"bench-empty-{run_id}").id
        time.sleep(1)
        targets = {
            "big": (big.id, last_line_ts_ns(client, big.id)),
            "empty": (empty_id, time.time_ns()),
        }
        summary: dict[str, Any] = {
            "benchmark": "reopen_cost",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "engine": common.engine_version(client),
            "code": common.code_version(args.code),
            "big_log_bytes": log_file_size(big),
            "big_lines": backlog_expected(args.lines),
            "other_running_containers": len(client.containers.list()) - 1 - (0 if reused else 1),
        }
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if "raw" in modes:
            summary["raw"] = raw_mode(args, dockerd, targets)
        if "daemon" in modes:
            with common.workdir(args, "bench-reopen-") as workdir:
                summary["daemon"] = daemon_mode(args, dockerd, client, targets, workdir)
        common.write_json(summary, args.json_out)
    finally:
        empties.remove_all()
        if args.keep or reused:
            if big is not None:
                log(f"keeping the big-log container {big.name}")
            if not reused and big is not None:
                big_id = big.id
                for c in client.containers.list(all=True, filters=containers.selector):
                    if c.id != big_id:
                        c.remove(force=True)
            else:
                containers.remove_all()
        else:
            containers.remove_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
