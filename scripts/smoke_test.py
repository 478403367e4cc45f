"""The soak test users run before a release (see scripts/smoke_test.sh for usage).

It runs load containers that write numbered lines at a steady rate and churns
short-lived containers, samples the daemon's metrics at every checkpoint, and at the
end fails, naming the criterion, unless: file descriptors and threads do not grow
(least-squares slope after warm-up under 0.5/min each), API requests reuse pooled
connections (ratio >= 0.9 after warm-up), the daemon never crashed or restarted (and
the one it starts exits 0 on SIGTERM), resident memory
(``process_resident_memory_bytes``) grows by at most ``--rss-growth-max`` MB over the
second half of the run (the least-squares slope of its checkpoints there, times its
length; the bound comes from soaks of a daemon that levels off: benchmarks/README.md),
and every line each container wrote (as the engine's own log has it) was delivered
exactly once, in order per stream. The daemon it starts is stopped before the audit,
so the audit sees all it will ever deliver. A daemon that dies mid-soak (it stops
answering /metrics, or its process exited) is a failure: the soak stops its load,
audits what was delivered, and still writes its summary and chart.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker

from log_capturer.config.types import parse_duration
from log_capturer_testkit import (
    REPO,
    SMOKE_LABEL,
    TEST_IMAGE,
    Daemon,
    Fleet,
    audit_engine,
    engine_lines,
    metric_total,
    read_records,
    scrape,
    slope_per_min,
    wait_for,
)

FD_SLOPE_MAX = 0.5  # per minute
THREAD_SLOPE_MAX = 0.5
REUSE_MIN = 0.9
RSS_GROWTH_MAX_MB = 4.0
"""Default bound on RSS growth over the second half of a soak (see benchmarks/README.md,
"Memory": derived from soaks of the fixed daemon)."""


@dataclass
class Checkpoint:
    """One sample. Slopes use ``base_threads`` (threads minus one per monitored container)
    and ``base_fds`` (FDs minus pooled Docker connections): what a leak grows, while the
    raw counts also move with how many churned containers are alive at that instant."""

    at_s: float
    threads: float
    fds: float
    monitors: float
    pool_open: float
    base_threads: float
    base_fds: float
    rss_mb: float
    lines: float
    api_requests: float
    api_reuses: float
    start_time: float


@dataclass
class Summary:
    run_id: str
    duration_s: float
    containers: int
    churn_per_min: float
    checkpoints: list[Checkpoint] = field(default_factory=list)
    fd_slope_per_min: float = 0.0
    thread_slope_per_min: float = 0.0
    rss_slope_mb_per_min: float = 0.0
    rss_mb_min: float = 0.0
    rss_mb_max: float = 0.0
    rss_growth_mb_second_half: float = 0.0
    rss_growth_max_mb: float = RSS_GROWTH_MAX_MB
    daemon_exit_code: int | None = None
    churned_removed: int = 0
    api_reuse_ratio: float = 0.0
    restarts: int = 0
    crashed: bool = False
    lines_expected: int = 0
    lines_delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    out_of_order_streams: int = 0
    containers_audited: int = 0
    failures: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="smoke_test.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", default="30m", help="how long to run (default 30m)")
    p.add_argument("--interval", default="2m", help="time between checkpoints (default 2m)")
    p.add_argument("--containers", type=int, default=50, help="load containers (default 50)")
    p.add_argument(
        "--churn-per-min",
        type=float,
        default=20,
        help="short-lived containers started per minute (default 20)",
    )
    p.add_argument("--rate", type=float, default=10, help="lines/s per load container (default 10)")
    p.add_argument(
        "--warmup",
        default="",
        help="checkpoints before this are not used for slopes "
        "(default: the larger of one interval and 10%% of the duration)",
    )
    p.add_argument("--stream-window", default="5s", help="stream_window of the daemon it starts")
    p.add_argument(
        "--rss-growth-max",
        type=float,
        default=RSS_GROWTH_MAX_MB,
        help="fail when resident memory grows by more than this many MB over the second "
        "half of the run (default %(default)s)",
    )
    p.add_argument(
        "--metrics-url",
        default="",
        help="use a running daemon's /metrics instead "
        "of starting one (then --output-file is required for the audit)",
    )
    p.add_argument("--output-file", default="", help="the file sink output to audit")
    p.add_argument(
        "--output-dir",
        default="",
        help="where the summary and chart go (default smoke-output/<time>)",
    )
    p.add_argument(
        "--keep-churned",
        action="store_true",
        help="keep every churned container until the end (default: remove each once it "
        "exited and its lines were delivered, as docker run --rm would, so the daemon "
        "must forget it; kept, the daemon remembers each one's position)",
    )
    p.add_argument("--image", default=TEST_IMAGE, help="image of the load (default %(default)s)")
    p.add_argument(
        "--daemon-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the daemon it starts (repeatable)",
    )
    args = p.parse_args(argv)
    try:
        args.duration_s = parse_duration(args.duration)
        args.interval_s = parse_duration(args.interval)
        args.warmup_s = (
            parse_duration(args.warmup)
            if args.warmup
            else max(args.interval_s, 0.1 * args.duration_s)
        )
    except ValueError as exc:
        p.error(str(exc))
    if args.metrics_url and not args.output_file:
        p.error("--metrics-url needs --output-file (the sink output to audit)")
    if args.interval_s <= 0 or args.duration_s < 2 * args.interval_s:
        p.error("--duration must cover at least two --interval")
    return args


class Delivered:
    """Records per container name in the file sink output, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._offset = 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a line being written is read next time
        for line in data[:end].splitlines():
            self.counts[json.loads(line)["container_name"]] += 1
        self._offset += end


class Load:
    """Owns the load and churn containers (a :class:`Fleet` labelled for the soak);
    removes all of them at the end, even on interrupt.

    Given ``delivered``, a churned container is removed once it exited and every line
    its log holds was delivered (what the engine had is kept for the audit), as a
    ``docker run --rm`` container goes: the daemon must then forget it. Kept instead,
    every churned container stays on the engine, and the daemon keeps its position
    (some 3.5 KB each) for as long as it does."""

    def __init__(self, client: docker.DockerClient, image: str, run_id: str) -> None:
        self.fleet = Fleet(client, run_id, label=SMOKE_LABEL, image=image)
        self.client = client
        self.run_id = run_id
        self.stop = threading.Event()
        self.churned: list[str] = []
        self.churn_errors = 0
        self.removed: dict[str, dict[str, list[str]]] = {}  # name -> the engine's lines
        self._delivered: Delivered | None = None
        self._exited: dict[str, dict[str, list[str]]] = {}  # not removed yet
        self._pending: list[str] = []
        self._churn: threading.Thread | None = None

    def start_load(self, count: int, rate: float) -> list[str]:
        pause = f"{1 / rate:.3f}"
        script = (
            'i=0; while true; do i=$((i+1)); echo "$i"; '
            'if [ $((i % 10)) -eq 0 ]; then echo "e $i" >&2; fi; sleep ' + pause + "; done"
        )
        names = []
        for n in range(count):
            name = f"smoke-load{n}-{self.run_id}"
            self._run(script, name)
            names.append(name)
        return names

    def remove_when_delivered(self, delivered: Delivered) -> None:
        self._delivered = delivered

    def start_churn(self, per_min: float) -> None:
        if per_min <= 0:
            return
        self._churn = threading.Thread(
            target=self._churn_loop, args=(60 / per_min,), name="churn", daemon=True
        )
        self._churn.start()

    def _churn_loop(self, every: float) -> None:
        n = 0
        while not self.stop.wait(every):
            name = f"smoke-churn{n}-{self.run_id}"
            try:
                self._run("seq 1 200; echo done >&2", name)
                self.churned.append(name)
                self._pending.append(name)
            except docker.errors.DockerException as exc:
                self.churn_errors += 1
                print(f"churn container failed to start: {exc}", file=sys.stderr)
            n += 1
            self._remove_delivered()

    def _remove_delivered(self) -> None:
        if self._delivered is None:
            return
        self._delivered.poll()
        waiting = []
        for name in self._pending:
            try:
                lines = self._exited.get(name)
                if lines is None:
                    if self.client.containers.get(name).status != "exited":
                        waiting.append(name)
                        continue
                    lines = self._exited[name] = engine_lines(self.client, name)
                if self._delivered.counts[name] < sum(map(len, lines.values())):
                    waiting.append(name)
                    continue
                self.client.containers.get(name).remove()
                self.removed[name] = self._exited.pop(name)
            except docker.errors.DockerException as exc:
                waiting.append(name)
                print(f"churn container {name} not removed yet: {exc}", file=sys.stderr)
        self._pending = waiting

    def _run(self, script: str, name: str) -> None:
        # No network: the load only writes logs (and a veth pair per container costs the
        # engine and the host for nothing).
        self.fleet.run(script, name=name, log_max_size="50m", network_mode="none")

    def finish(self) -> None:
        self.stop.set()
        if self._churn is not None:
            self._churn.join(30)


def audit(
    client: docker.DockerClient,
    names: list[str],
    output: Path,
    summary: Summary,
    removed: dict[str, dict[str, list[str]]],
) -> None:
    """Each container's lines, as the engine's own log has them (had them, for those
    removed already), against the sink output."""
    result = audit_engine(client, names, read_records(output), known=removed)
    summary.lines_expected += result.expected
    summary.lines_delivered += result.delivered
    summary.lost += result.lost
    summary.duplicated += result.duplicated
    summary.unexpected += result.unexpected
    summary.out_of_order_streams += result.out_of_order
    summary.containers_audited += result.containers
    for name, streams in result.engine.items():
        if name.startswith("smoke-load"):
            numbers = [int(x) for x in streams["stdout"] if x.isdigit()]
            if numbers != list(range(1, len(numbers) + 1)):
                summary.failures.append(f"{name}: the engine's own log is not 1..N")


def write_chart(summary: Summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [c.at_s / 60 for c in summary.checkpoints]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for ax, keys, title in (
        (axes[0], ("threads", "base_threads"), "threads"),
        (axes[1], ("fds", "base_fds"), "open FDs"),
        (axes[2], ("rss_mb",), "RSS (MB)"),
        (axes[3], ("lines",), "lines captured"),
    ):
        for key in keys:
            label = "without monitors/pool" if key.startswith("base_") else "total"
            ax.plot(
                minutes, [getattr(c, key) for c in summary.checkpoints], marker="o", label=label
            )
        if len(keys) > 1:
            ax.legend(loc="upper left", fontsize="small")
        ax.set_ylabel(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(
        f"log_capturer soak {summary.run_id}: fd slope "
        f"{summary.fd_slope_per_min:+.2f}/min, thread slope "
        f"{summary.thread_slope_per_min:+.2f}/min, RSS slope "
        f"{summary.rss_slope_mb_per_min:+.2f} MB/min\n(RSS growth over the second half "
        f"{summary.rss_growth_mb_second_half:+.1f} MB, bound {summary.rss_growth_max_mb:g})"
    )
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:10]
    out_dir = Path(args.output_dir or REPO / "smoke-output" / time.strftime("%Y%m%dT%H%M%S"))
    out_dir.mkdir(parents=True, exist_ok=True)
    client = docker.from_env()
    load = Load(client, args.image, run_id)
    summary = Summary(run_id, args.duration_s, args.containers, args.churn_per_min)
    summary.rss_growth_max_mb = args.rss_growth_max
    daemon: Daemon | None = None
    interrupted = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        interrupted.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.metrics_url:
            metrics_url, output = args.metrics_url, Path(args.output_file)
        else:
            env = dict(kv.split("=", 1) for kv in args.daemon_env)
            daemon = Daemon(
                out_dir / "daemon",
                run_id,
                {
                    "container_monitor": {"stream_window": args.stream_window},
                    "positions": {"flush_interval": "1s"},
                    "pipeline": {"batch_wait": "200ms"},
                },
                env=env,
                label=SMOKE_LABEL,
            )
            daemon.start()
            metrics_url = daemon.url + "/metrics"
            output = Path(args.output_file) if args.output_file else daemon.output
        if not args.keep_churned:
            load.remove_when_delivered(Delivered(output))
        load_names = load.start_load(args.containers, args.rate)
        load.start_churn(args.churn_per_min)
        pid = f", daemon pid {daemon.pid}" if daemon is not None else ""
        print(
            f"smoke {run_id}: {args.containers} load containers at {args.rate:g} lines/s, "
            f"churn {args.churn_per_min:g}/min, {args.duration} with checkpoints every "
            f"{args.interval}; output {out_dir}{pid}",
            flush=True,
        )
        started = time.monotonic()
        total = int(args.duration_s // args.interval_s)
        for n in range(1, total + 1):
            if interrupted.wait(max(0.0, started + n * args.interval_s - time.monotonic())):
                summary.failures.append("interrupted")
                break
            m = None
            if not daemon_died(daemon, summary):
                try:
                    m = scrape(metrics_url)
                except OSError as exc:  # URLError included: nothing answers
                    if not daemon_died(daemon, summary):
                        summary.crashed = True
                        summary.failures.append(f"daemon not answering /metrics: {exc}")
            if m is None:
                print(f"[{n}/{total}] the daemon is gone: {summary.failures[-1]}", flush=True)
                break
            threads = m.get("log_capturer_threads", 0)
            fds = m.get("log_capturer_file_descriptors_open", 0)
            monitors = m.get("log_capturer_containers_monitored", 0)
            pool_open = m.get("log_capturer_docker_pool_open_connections", 0)
            cp = Checkpoint(
                at_s=time.monotonic() - started,
                threads=threads,
                fds=fds,
                monitors=monitors,
                pool_open=pool_open,
                base_threads=threads - monitors,
                base_fds=fds - pool_open,
                rss_mb=m.get("process_resident_memory_bytes", 0) / 2**20,
                lines=metric_total(m, "log_capturer_lines_captured_total"),
                api_requests=m.get('log_capturer_docker_pool_requests_total{kind="api"}', 0),
                api_reuses=m.get('log_capturer_docker_pool_reuses_total{kind="api"}', 0),
                start_time=m.get("process_start_time_seconds", 0),
            )
            summary.checkpoints.append(cp)
            first = summary.checkpoints[0]
            minutes = cp.at_s / 60
            ratio = (cp.api_reuses / cp.api_requests) if cp.api_requests else 1.0
            when = f"{minutes:.0f}m" if args.interval_s >= 60 else f"{minutes:.1f}m"
            print(
                f"[{n}/{total}] {when}: threads={cp.threads:.0f} "
                f"({cp.base_threads - first.base_threads:+.0f}, "
                f"{slope_now(summary, 'base_threads', args):+.2f}/min) "
                f"fds={cp.fds:.0f} ({cp.base_fds - first.base_fds:+.0f}, "
                f"{slope_now(summary, 'base_fds', args):+.2f}/min) "
                f"reuse={ratio:.3f} lines={cp.lines:.0f} monitors={cp.monitors:.0f} "
                f"rss={cp.rss_mb:.0f}MB ({slope_now(summary, 'rss_mb', args):+.2f}/min)",
                flush=True,
            )
        load.finish()
        load.fleet.kill_all()
        finish_and_audit(args, client, load, load_names, output, summary, daemon, metrics_url)
    finally:
        load.finish()
        load.fleet.remove_all()
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is None:
            code = daemon.stop()
            if code != 0:
                summary.failures.append(f"daemon exit code {code} on SIGTERM")
    (out_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    if summary.checkpoints:
        write_chart(summary, out_dir / "chart.png")
    print(json.dumps({k: v for k, v in asdict(summary).items() if k != "checkpoints"}, indent=1))
    if summary.failures:
        print("SMOKE TEST FAILED: " + "; ".join(summary.failures), flush=True)
        return 1
    print(f"SMOKE TEST PASSED ({out_dir})", flush=True)
    return 0


def daemon_died(daemon: Daemon | None, summary: Summary) -> bool:
    """Whether the daemon this script started has exited (recorded once as a crash)."""
    if daemon is None or daemon.proc is None or daemon.proc.poll() is None:
        return False
    if summary.daemon_exit_code is None:
        summary.daemon_exit_code = daemon.proc.returncode
        summary.crashed = True
        summary.failures.append(f"daemon exited with {daemon.proc.returncode} mid-soak")
    return True


def second_half_growth(summary: Summary, args: argparse.Namespace) -> float:
    """RSS growth in MB over the second half of the run (after warm-up): the slope of
    its checkpoints times its length, so one noisy sample moves it little."""
    start = float(max(args.warmup_s, args.duration_s / 2))
    points = [(c.at_s, c.rss_mb) for c in summary.checkpoints if c.at_s >= start]
    if len(points) < 2:
        return 0.0
    return slope_per_min(points) * (float(args.duration_s) - start) / 60


def slope_now(summary: Summary, key: str, args: argparse.Namespace) -> float:
    points = [(c.at_s, getattr(c, key)) for c in summary.checkpoints if c.at_s >= args.warmup_s]
    return slope_per_min(points)


def finish_and_audit(
    args: argparse.Namespace,
    client: docker.DockerClient,
    load: Load,
    load_names: list[str],
    output: Path,
    summary: Summary,
    daemon: Daemon | None,
    metrics_url: str,
) -> None:
    names = load_names + list(load.churned)
    if not summary.crashed:
        drain(args, client, names, output, summary, daemon, load.removed)
    # What the daemon said last: its final /metrics, or the last checkpoint if it died.
    final = last_checkpoint_metrics(summary)
    if not summary.crashed:
        try:
            final = scrape(metrics_url)
        except OSError as exc:
            if not daemon_died(daemon, summary):
                summary.crashed = True
                summary.failures.append(f"daemon not answering /metrics: {exc}")
    if daemon is not None and not daemon_died(daemon, summary):
        code = daemon.stop()
        if code != 0:
            summary.failures.append(f"daemon exit code {code} on SIGTERM")
    summary.churned_removed = len(load.removed)
    audit(client, names, output, summary, load.removed)
    judge(args, summary, final)


def drain(
    args: argparse.Namespace,
    client: docker.DockerClient,
    names: list[str],
    output: Path,
    summary: Summary,
    daemon: Daemon | None,
    removed: dict[str, dict[str, list[str]]],
) -> None:
    """Wait until the daemon delivered what the stopped containers left (a window or
    two) and, for the daemon started here, until its monitors are done."""
    expected_total = 0
    for name in names:
        lines = removed[name] if name in removed else engine_lines(client, name)
        expected_total += sum(len(v) for v in lines.values())

    def delivered() -> int:
        if daemon_died(daemon, summary):
            return expected_total  # nothing more will come: audit what is there
        try:
            with open(output, "rb") as fh:
                return sum(1 for line in fh if line.endswith(b"\n"))
        except FileNotFoundError:
            return 0

    try:
        wait_for(lambda: delivered() >= expected_total, 120, interval=1, what="delivery")
    except AssertionError as exc:
        print(f"warning: {exc}", file=sys.stderr)
    if daemon is not None:
        # Every container has exited: once their monitors are done the daemon reads
        # nothing more, and SIGTERM drains its queue and saves positions. The output
        # audited then is all it will ever write: a duplicate cannot come late.
        try:
            daemon.wait_monitors_done(60)
        except (AssertionError, OSError) as exc:
            if not daemon_died(daemon, summary):
                summary.failures.append(str(exc))
    else:
        # A daemon this script does not own keeps running: give a straggler (a
        # duplicate) one more window before the audit.
        time.sleep(max(3.0, parse_duration(args.stream_window)))


def last_checkpoint_metrics(summary: Summary) -> dict[str, float]:
    """The figures :func:`judge` reads from the final /metrics, as the last checkpoint had them."""
    if not summary.checkpoints:
        return {}
    last = summary.checkpoints[-1]
    return {
        'log_capturer_docker_pool_requests_total{kind="api"}': last.api_requests,
        'log_capturer_docker_pool_reuses_total{kind="api"}': last.api_reuses,
        "process_start_time_seconds": last.start_time,
    }


def judge(args: argparse.Namespace, summary: Summary, final: Mapping[str, float]) -> None:
    """Slopes, reuse and restarts from the checkpoints and ``final``; the failure list."""
    warm = [c for c in summary.checkpoints if c.at_s >= args.warmup_s]
    summary.fd_slope_per_min = slope_per_min([(c.at_s, c.base_fds) for c in warm])
    summary.thread_slope_per_min = slope_per_min([(c.at_s, c.base_threads) for c in warm])
    summary.rss_slope_mb_per_min = slope_per_min([(c.at_s, c.rss_mb) for c in warm])
    summary.rss_growth_mb_second_half = second_half_growth(summary, args)
    if warm:
        summary.rss_mb_min = min(c.rss_mb for c in warm)
        summary.rss_mb_max = max(c.rss_mb for c in warm)
        requests = (
            final.get('log_capturer_docker_pool_requests_total{kind="api"}', 0)
            - warm[0].api_requests
        )
        reuses = (
            final.get('log_capturer_docker_pool_reuses_total{kind="api"}', 0) - warm[0].api_reuses
        )
        summary.api_reuse_ratio = reuses / requests if requests else 1.0
    starts = {c.start_time for c in summary.checkpoints}
    starts.add(final.get("process_start_time_seconds", 0))
    starts.discard(0)
    summary.restarts = max(0, len(starts) - 1)
    failures = summary.failures
    if summary.crashed:
        # A soak cut short: growth figures over what ran are reported, not judged (the
        # crash is in the list already).
        pass
    else:
        if len(warm) < 2:
            failures.append("fewer than two checkpoints after warm-up: no slope")
        if summary.fd_slope_per_min >= FD_SLOPE_MAX:
            failures.append(f"fd growth {summary.fd_slope_per_min:.2f}/min >= {FD_SLOPE_MAX}")
        if summary.thread_slope_per_min >= THREAD_SLOPE_MAX:
            failures.append(
                f"thread growth {summary.thread_slope_per_min:.2f}/min >= {THREAD_SLOPE_MAX}"
            )
        if summary.rss_growth_mb_second_half > summary.rss_growth_max_mb:
            failures.append(
                f"rss growth {summary.rss_growth_mb_second_half:.1f} MB over the second half "
                f"> {summary.rss_growth_max_mb:g} MB"
            )
        if summary.api_reuse_ratio < REUSE_MIN:
            failures.append(f"api connection reuse {summary.api_reuse_ratio:.3f} < {REUSE_MIN}")
    if summary.restarts:
        failures.append(f"daemon restarted ({summary.restarts} restarts)")
    if summary.lost:
        failures.append(f"{summary.lost} lines lost")
    if summary.duplicated:
        failures.append(f"{summary.duplicated} lines duplicated")
    if summary.unexpected:
        failures.append(f"{summary.unexpected} lines nobody wrote")
    if summary.out_of_order_streams:
        failures.append(f"{summary.out_of_order_streams} streams out of order")


if __name__ == "__main__":
    sys.exit(run(parse_args(sys.argv[1:])))
