"""Live capture: does the daemon keep up with containers writing now, and at what CPU cost?

Usage:
  .venv/bin/python benchmarks/live_throughput.py                 # both phases, full size
  .venv/bin/python benchmarks/live_throughput.py --quick         # a 15 s check of each
  .venv/bin/python benchmarks/live_throughput.py --phases fast --fast-containers 10

Two phases, each with its own daemon (shipped defaults: stream_window 30s, batch_wait
200ms; override with --stream-window) capturing only this run's containers:

* fast:   ``--fast-containers`` (10) containers each writing numbered lines as fast as
          they can (awk, buffered) for ``--fast-duration`` (60 s);
* steady: ``--steady-containers`` (50) containers at ``--steady-rate`` (1000) lines/s
          each (10 flushed bursts a second) for ``--steady-duration`` (60 s).

Per phase it reports:

* lines the engine received (the reference: what the containers wrote, by the ``end N``
  marker each writes last) and lines delivered, their rates over the phase, and
  ``delivered_ratio`` = delivered / written rate (1.0 = kept up);
* delivery lag (sink write minus the record's Docker timestamp) p50/p99/max, two ways:
  a reader tailing ``logs.jsonl`` stamping each read's arrival (sampled lines) and the
  daemon's own ``log_capturer_delivery_lag_seconds{sink="file"}`` histogram (p99
  interpolated within its buckets, plus the share of records at or below 2.5 s);
* the daemon's CPU seconds (utime + stime from /proc) per million lines, and dockerd's
  over the same span as the reference (the engine receiving and serving the logs);
* exactly-once: every number 1..N of every container delivered once (``audit``).

Targets (issue): fast phase lag p99 < 2 s while keeping up; all lines exactly once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import _common as common
from _common import log

from tests.integration.harness import Daemon

LAG = "log_capturer_delivery_lag_seconds"


def written_lines(client: Any, container_id: str) -> int:
    """N of the ``end N`` marker (the container's last line), or -1 if missing."""
    tail = client.api.logs(container_id, stdout=True, stderr=False, tail=1).decode()
    parts = tail.strip().split()
    if len(parts) == 2 and parts[0] == "end" and parts[1].isdigit():
        return int(parts[1])
    return -1


def run_phase(
    args: argparse.Namespace,
    client: Any,
    phase: str,
    count: int,
    rate: float,
    duration: float,
    workdir: Path,
) -> dict[str, Any]:
    run_id = common.new_run_id(f"live-{phase}-")
    containers = common.BenchContainers(client, run_id, keep=args.keep)
    daemon = Daemon(
        workdir / phase,
        run_id,
        {
            "container_monitor": {"stream_window": args.stream_window},
            "positions": {"flush_interval": "1s"},
            "pipeline": {"batch_wait": "200ms"},
        },
        env=common.code_env(args.code),
        label=common.LABEL,
    )
    tailer: common.SinkTailer | None = None
    dockerd = common.dockerd_pid()
    try:
        daemon.start()
        tailer = common.SinkTailer(daemon.data / "logs.jsonl", sample_every=args.sample_every)
        tailer.start()
        before = daemon.metrics()
        cpu0 = common.cpu_seconds(daemon.pid)
        engine0 = common.cpu_seconds(dockerd)
        t0 = time.time()
        tailer.measure_between(t0, math.inf)
        script = common.numbered_script(duration, rate)
        specs = [(f"bench-live-{phase}{i}-{run_id}", script) for i in range(count)]
        started = containers.run_many(specs, workers=8)
        log(f"{phase}: {count} containers started in {time.time() - t0:.1f}s")
        ids = [started[name][0] for name, _ in specs]
        for cid in ids:
            client.api.wait(cid, timeout=duration + 120)
        t_written = time.time()
        written = [written_lines(client, cid) for cid in ids]
        missing_end = sum(1 for n in written if n < 0)
        total = sum(n + 1 for n in written if n >= 0)  # + the end marker
        log(f"{phase}: writers done after {t_written - t0:.1f}s, {total} lines written")
        common.wait_delivery(tailer, total, args.drain_timeout, args.stall_timeout)
        t_done = time.time()
        cpu = common.cpu_seconds(daemon.pid) - cpu0
        engine = common.cpu_seconds(dockerd) - engine0
        rss = common.rss_mb(daemon.pid)
        after = daemon.metrics()
        time.sleep(2)  # a duplicate would show up now
        tailer.stop()
        audit = common.audit_numbered(daemon.data / "logs.jsonl", [n for n, _ in specs])
        hist = common.histogram_delta(
            common.histogram_buckets(after, LAG, 'sink="file"'),
            common.histogram_buckets(before, LAG, 'sink="file"'),
        )
        lags = tailer.stats.lag_samples
        delivered = tailer.stats.lines
        write_span = max(t_written - t0, 1e-9)
        deliver_span = max(t_done - t0, 1e-9)
        blocked = common.metric_total(after, "log_capturer_queue_blocked_seconds_total") - (
            common.metric_total(before, "log_capturer_queue_blocked_seconds_total")
        )
        result: dict[str, Any] = {
            "containers": count,
            "rate_per_container": rate or "max",
            "duration_s": duration,
            "lines_written": total,
            "lines_delivered": delivered,
            "containers_without_end_marker": missing_end,
            "written_lines_per_s": round(total / write_span),
            "delivered_lines_per_s": round(delivered / deliver_span),
            "delivered_ratio": round((delivered / deliver_span) / (total / write_span), 3)
            if total
            else None,
            "drain_after_writers_s": round(t_done - t_written, 2),
            "lag_tail_p50_s": round(common.percentile(lags, 0.5), 3),
            "lag_tail_p99_s": round(common.percentile(lags, 0.99), 3),
            "lag_tail_max_s": round(max(lags), 3) if lags else None,
            "lag_tail_samples": len(lags),
            "lag_hist_p50_s": round(common.histogram_quantile(0.5, hist), 3),
            "lag_hist_p99_s": round(common.histogram_quantile(0.99, hist), 3),
            "lag_hist_share_le_2_5s": round(common.fraction_le(2.5, hist), 5),
            "daemon_cpu_s": round(cpu, 2),
            "daemon_cpu_s_per_million_lines": round(cpu / total * 1e6, 2) if total else None,
            "dockerd_cpu_s": round(engine, 2),
            "dockerd_cpu_s_per_million_lines": round(engine / total * 1e6, 2) if total else None,
            "daemon_rss_mb": round(rss, 1),
            "queue_blocked_s": round(blocked, 2),
            "audit": asdict(audit),
            "exactly_once": audit.ok() and missing_end == 0,
        }
        log(f"{phase}: {json.dumps(result)}")
        return result
    finally:
        try:
            if tailer is not None and tailer.is_alive():
                tailer.stop()
        finally:
            try:
                if daemon.proc is not None and daemon.proc.poll() is None:
                    daemon.stop()
            finally:
                containers.cleanup()


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--phases", default="fast,steady", help="comma list: fast, steady")
    p.add_argument("--fast-containers", type=int, default=10)
    p.add_argument("--fast-duration", type=float, default=60)
    p.add_argument("--steady-containers", type=int, default=50)
    p.add_argument("--steady-rate", type=float, default=1000, help="lines/s per container")
    p.add_argument("--steady-duration", type=float, default=60)
    p.add_argument("--stream-window", default="30s", help="container_monitor.stream_window")
    p.add_argument("--sample-every", type=int, default=100, help="lag sample every N lines")
    p.add_argument("--drain-timeout", type=float, default=300, help="wait for delivery (s)")
    p.add_argument(
        "--stall-timeout", type=float, default=90, help="give up when nothing arrives this long"
    )
    p.add_argument("--quick", action="store_true", help="3 fast x 15 s, 10 steady x 200/s x 15 s")
    p.add_argument("--keep", action="store_true", help="keep containers (debugging)")
    p.add_argument("--workdir", help="keep the daemons' data here (default: a temp dir)")
    p.add_argument("--json-out", help="also write the JSON summary here")
    common.add_code_arg(p)
    args = p.parse_args()
    if args.quick:
        args.fast_containers, args.fast_duration = 3, 15
        args.steady_containers, args.steady_rate, args.steady_duration = 10, 200, 15
    client = common.docker_client()
    summary: dict[str, Any] = {
        "benchmark": "live_throughput",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engine": common.engine_version(client),
        "code": common.code_version(args.code),
        "stream_window": args.stream_window,
    }
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        for phase in [x.strip() for x in args.phases.split(",") if x.strip()]:
            if phase == "fast":
                summary["fast"] = run_phase(
                    args, client, "fast", args.fast_containers, 0, args.fast_duration, workdir
                )
            elif phase == "steady":
                summary["steady"] = run_phase(
                    args,
                    client,
                    "steady",
                    args.steady_containers,
                    args.steady_rate,
                    args.steady_duration,
                    workdir,
                )
            else:
                p.error(f"unknown phase {phase!r}")
    common.write_json(summary, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
