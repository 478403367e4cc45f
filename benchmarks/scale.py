"""Scale: hundreds of monitored containers sharing a capped connection pool.

Usage:
  .venv/bin/python benchmarks/scale.py                     # 500 containers, max_open 64, 5 min
  .venv/bin/python benchmarks/scale.py --quick             # 50 containers, max_open 16, 90 s
  .venv/bin/python benchmarks/scale.py --containers 200 --duration 180 --max-open 32

``--containers`` (500) containers run for ``--duration`` seconds: a ``--busy-share``
(10 %) write ``--busy-rate`` (200) numbered lines/s, the rest one line every
``--idle-interval`` (10) s. ``docker.pool.max_open`` is ``--max-open`` (64), below the
number of monitors, so monitors take turns on connections. During the run
``--probes`` (50) extra containers are started one by one, evenly spread; each writes a
line at once, sleeps 3 s and ends. One daemon captures only this run's containers
(shipped defaults otherwise: stream_window 30s, wait_timeout 10s; see --stream-window).

Reported (JSON at the end; per-sample series with --json-out):

* exactly-once: every number 1..N of every container delivered once (``audit``);
* daemon RSS (VmRSS of /proc/<pid>/status): max over the run (issue: < 300 MB), and the
  most the daemon held besides its queue (``log_capturer_buffered_bytes``: held tail
  reads, recent lines, split lines; MB) and in its queue (message bytes);
* threads and FDs from /metrics (``log_capturer_threads``,
  ``log_capturer_file_descriptors_open``) sampled every ``--sample-interval`` s: min/max
  and the least-squares slope per minute while every container runs, raw and net of one
  thread per monitor / one FD per pooled connection (flat = slope near 0);
* time from ``docker run`` returning (create + start) to the probe's first line in the
  file sink: median and p90 (issue: median < 2 s);
* the pool: wait timeouts, the longest wait queue, the delivery drain after the end.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from log_capturer_testkit import (
    BENCH_LABEL,
    Daemon,
    Fleet,
    Started,
    audit_numbered,
    cpu_seconds,
    metric_total,
    percentile,
    rss_mb,
    scrape,
    slope_per_min,
    wait_count,
)
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log
from log_capturer_testkit.sink import SinkTailer
from log_capturer_testkit.workloads import numbered_script, slow_script, written_lines

PROBE_MARK = b'"container_name":"bench-scale-probe'


class ProbeWatch:
    """Arrival time of the first sink line of each probe container (fed by the tailer)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self._lock = threading.Lock()

    def on_line(self, line: bytes, arrival: float) -> None:
        if PROBE_MARK not in line:
            return
        start = line.find(PROBE_MARK) + len(b'"container_name":"')
        name = line[start : line.find(b'"', start)].decode()
        with self._lock:
            self.first.setdefault(name, arrival)


def main() -> int:
    p = common.BenchParser(
        __doc__,
        quick={
            "containers": 50,
            "max_open": 16,
            "duration": 90,
            "probes": 10,
            "sample_interval": 5,
        },
        drain_timeout=900,
        stall_timeout=180,
        stream_window="30s",
    )
    p.add_argument("--containers", type=int, default=500)
    p.add_argument("--busy-share", type=float, default=0.1, help="share of busy containers")
    p.add_argument("--busy-rate", type=float, default=200, help="lines/s of a busy container")
    p.add_argument("--idle-interval", type=float, default=10, help="s between idle lines")
    p.add_argument("--duration", type=float, default=300, help="s each container runs")
    p.add_argument("--max-open", type=int, default=64, help="docker.pool.max_open")
    p.add_argument("--probes", type=int, default=50, help="containers timed to first line")
    p.add_argument("--wait-timeout", default="10s", help="docker.pool.wait_timeout")
    p.add_argument("--start-workers", type=int, default=8, help="parallel docker run calls")
    p.add_argument("--sample-interval", type=float, default=10)
    args = p.parse()
    client = common.docker_client(pool=max(16, args.start_workers * 2))
    run_id = common.new_run_id("scale")
    containers = Fleet(client, run_id, label=BENCH_LABEL, keep=args.keep)
    with common.workdir(args, "bench-scale-") as workdir:
        try:
            return run(args, client, run_id, containers, workdir)
        finally:
            containers.remove_all(workers=args.start_workers)


def run(
    args: argparse.Namespace,
    client: Any,
    run_id: str,
    containers: Fleet,
    workdir: Path,
) -> int:
    daemon = Daemon(
        workdir,
        run_id,
        {
            "docker": {"pool": {"max_open": args.max_open, "wait_timeout": args.wait_timeout}},
            "container_monitor": {
                "stream_window": args.stream_window,
                "retry_initial_backoff": "500ms",
                "retry_max_backoff": "30s",
            },
            "positions": {"flush_interval": "1s"},
            "pipeline": {"batch_wait": "200ms"},
        },
        env=common.code_env(args.code),
        label=BENCH_LABEL,
    )
    probes = ProbeWatch()
    tailer = SinkTailer(daemon.output, on_line=probes.on_line)
    sampler: common.Sampler | None = None
    try:
        daemon.start()
        tailer.start()
        pid = daemon.pid

        def sample() -> dict[str, float]:
            m = scrape(daemon.url + "/metrics", timeout=20)
            return {
                "rss_mb": rss_mb(pid),
                "threads": m.get("log_capturer_threads", math.nan),
                "fds": m.get("log_capturer_file_descriptors_open", math.nan),
                "monitors": m.get("log_capturer_containers_monitored", math.nan),
                "pool_open": m.get("log_capturer_docker_pool_open_connections", math.nan),
                "pool_waiting": m.get("log_capturer_docker_pool_waiting", math.nan),
                "pool_wait_timeouts": m.get(
                    "log_capturer_docker_pool_wait_timeouts_total", math.nan
                ),
                "lines": metric_total(m, "log_capturer_lines_captured_total"),
                "cpu_s": cpu_seconds(pid),
                # what the daemon holds besides the queue (buffers.py), in MB
                **{
                    f"{kind}_mb": m.get(f'log_capturer_buffered_bytes{{kind="{kind}"}}', 0) / 2**20
                    for kind in ("tail_hold", "recent", "partial")
                },
                "queue_mb": m.get("log_capturer_queue_bytes", 0) / 2**20,
            }

        sampler = common.Sampler(sample, args.sample_interval)
        sampler.start()
        t0 = time.time()
        busy = max(1, round(args.containers * args.busy_share)) if args.busy_share > 0 else 0
        step = max(1, args.containers // max(busy, 1))
        specs = []
        for i in range(args.containers):
            if busy and i % step == 0 and i // step < busy:
                script = numbered_script(args.duration, args.busy_rate, ticks=2)
                specs.append((f"bench-scale-busy{i}-{run_id}", script))
            else:
                script = slow_script(args.duration, args.idle_interval)
                specs.append((f"bench-scale-idle{i}-{run_id}", script))
        n_busy = sum(1 for name, _ in specs if "-busy" in name)
        log(f"starting {len(specs)} containers ({n_busy} busy) with {args.start_workers} workers")
        probe_times: dict[str, Started] = {}
        probe_stop = threading.Event()

        def run_probes() -> None:
            spacing = args.duration / max(args.probes, 1)
            for k in range(args.probes):
                if probe_stop.wait(spacing if k else spacing / 2):
                    return
                name = f"bench-scale-probe{k}-{run_id}"
                try:
                    probe_times[name] = containers.run_timed(
                        'echo "1 probe"; sleep 3; echo "end 1"', name=name
                    )
                except Exception as exc:
                    log(f"probe {name} failed to start: {exc}")

        prober = threading.Thread(target=run_probes, name="probes", daemon=True)
        prober.start()
        started = containers.run_many(specs, workers=args.start_workers)
        t_started = time.time()
        first_start = min(v.before for v in started.values())
        log(f"{len(started)} containers started in {t_started - t0:.1f}s")
        prober.join(args.duration + 120)
        probe_stop.set()
        all_ids = [v.id for v in started.values()] + [v.id for v in probe_times.values()]

        def wait_one(cid: str) -> None:
            client.api.wait(cid, timeout=args.duration + 600)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(wait_one, all_ids))
        t_exited = time.time()
        with ThreadPoolExecutor(16) as pool:
            written = list(pool.map(lambda c: written_lines(client, c), all_ids))
        missing_end = sum(1 for n in written if n < 0)
        total = sum(n + 1 for n in written if n >= 0)
        log(f"all containers exited after {t_exited - t0:.1f}s; {total} lines written")
        if not wait_count(
            lambda: tailer.stats.lines,
            total,
            args.drain_timeout,
            args.stall_timeout,
            lambda: daemon.running,
        ):
            log(f"delivery stopped at {tailer.stats.lines}/{total} lines")
        t_done = time.time()
        log(f"delivery done {t_done - t_exited:.1f}s after the last exit")
        sampler.stop()
        final = daemon.metrics()
        daemon_cpu = cpu_seconds(daemon.pid)
        # SIGTERM drains the queue: the output audited is all the daemon ever wrote.
        exit_code = daemon.stop(timeout=60)
        tailer.stop()
        audit = audit_numbered(daemon.output, [n for n, _ in specs] + list(probe_times))
        # probes: docker run returned -> first line in the sink
        delays = []
        never = 0
        for name, probe in probe_times.items():
            arrival = probes.first.get(name)
            if arrival is None:
                never += 1
            else:
                delays.append(arrival - probe.after)
        samples = sampler.samples
        steady_from = t_started - t0 + 30
        steady_to = first_start - t0 + args.duration - 5
        steady = [(t, s) for t, s in samples if steady_from <= t <= steady_to]

        def series(key: str, net: str = "") -> dict[str, Any]:
            pts = [(t, s[key] - (s[net] if net else 0)) for t, s in steady]
            vals = [v for _, v in pts]
            return {
                "min": min(vals) if vals else None,
                "max": max(vals) if vals else None,
                "slope_per_min": round(slope_per_min(pts), 3) if len(pts) > 1 else None,
            }

        rss = [s["rss_mb"] for _, s in samples]
        summary: dict[str, Any] = {
            "benchmark": "scale",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "engine": common.engine_version(client),
            "code": common.code_version(args.code),
            "containers": len(specs),
            "busy": n_busy,
            "busy_rate": args.busy_rate,
            "idle_interval_s": args.idle_interval,
            "duration_s": args.duration,
            "max_open": args.max_open,
            "stream_window": args.stream_window,
            "start_all_s": round(t_started - t0, 1),
            "lines_written": total,
            "lines_delivered": tailer.stats.lines,
            "containers_without_end_marker": missing_end,
            "drain_after_last_exit_s": round(t_done - t_exited, 1),
            "audit": asdict(audit),
            "exactly_once": audit.ok() and missing_end == 0,
            "rss_mb_max": round(max(rss), 1) if rss else None,
            "rss_mb_last": round(rss[-1], 1) if rss else None,
            **{
                f"{kind}_mb_max": round(max((s[f"{kind}_mb"] for _, s in samples), default=0), 1)
                for kind in ("tail_hold", "recent", "partial", "queue")
            },
            "steady_window_s": [round(steady_from, 1), round(steady_to, 1)],
            "steady_samples": len(steady),
            "threads": series("threads"),
            "threads_net_of_monitors": series("threads", "monitors"),
            "fds": series("fds"),
            "fds_net_of_pool": series("fds", "pool_open"),
            "monitors_max": max((s["monitors"] for _, s in samples), default=None),
            "pool_waiting_max": max((s["pool_waiting"] for _, s in samples), default=None),
            "pool_wait_timeouts": final.get("log_capturer_docker_pool_wait_timeouts_total"),
            "daemon_cpu_s": round(daemon_cpu, 1),
            "daemon_exit_code": exit_code,
            "probes": len(probe_times),
            "probe_never_seen": never,
            "probe_first_line_median_s": round(percentile(delays, 0.5), 3),
            "probe_first_line_p90_s": round(percentile(delays, 0.9), 3),
            "probe_first_line_max_s": round(max(delays), 3) if delays else None,
            "sampler_errors": sampler.errors,
        }
        log(json.dumps(summary))
        if args.json_out:
            summary_full = {
                **summary,
                "samples": [{"t": round(t, 1), **s} for t, s in samples],
                "probe_delays_s": sorted(round(d, 3) for d in delays),
            }
            Path(args.json_out).write_text(json.dumps(summary_full, indent=1) + "\n")
        print(json.dumps(summary, indent=1), flush=True)
        return 0
    finally:
        try:
            if sampler is not None and sampler.is_alive():
                sampler.stop()
            if tailer.is_alive():
                tailer.stop()
        finally:
            if daemon.running:
                daemon.stop(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
