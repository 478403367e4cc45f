"""Live capture: does the daemon keep up with containers writing now, and at what CPU cost?

Usage:
  .venv/bin/python benchmarks/live_throughput.py                 # both phases, full size
  .venv/bin/python benchmarks/live_throughput.py --quick         # a 15 s check of each
  .venv/bin/python benchmarks/live_throughput.py --phases fast --fast-containers 10

Three phases, each with its own daemon (shipped defaults: stream_window 30s, batch_wait
200ms; override with --stream-window) capturing only this run's containers:

* fast:   ``--fast-containers`` (10) containers each writing numbered lines as fast as
          they can (awk, buffered) for ``--fast-duration`` (60 s);
* steady: ``--steady-containers`` (50) containers at ``--steady-rate`` (1000) lines/s
          each (10 flushed bursts a second) for ``--steady-duration`` (60 s);
* flood:  ``--quiet-containers`` (20) at ``--quiet-rate`` (10) lines/s each for
          ``--quiet-duration`` (60 s), and ``--flood-delay`` (5 s) after they start one
          container writing ``--flood-lines`` (2,000,000) lines as fast as it can;
* backlog: the same quiet containers, and one that wrote ``--flood-lines`` lines and
          stays running, left out by the daemon's filters until a reload selects it
          ``--backlog-at`` (30 s) after the start: its whole log is read at once (the
          engine serves a written log faster than a live one, so the daemon, not the
          engine, sets the pace).

``--set key.path=value`` adds config keys (e.g. ``pipeline.stages.redact.enabled=true``).

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
* exactly-once: every number 1..N of every container delivered once (``audit``);
* flood only: ``quiet`` / ``loud``, the tail lag of the quiet containers' lines (every
  one of them) and of the flooding container's (sampled), each p50/p99/max;
* ``--trace``: ``lag_parts``, where the time of the lines went inside the daemon
  (``benchmarks/lagtrace/``: engine -> socket read -> queued -> taken by the dispatcher ->
  written, per group; it costs the daemon CPU, so its figures are not the headline ones).

Targets (issues): fast phase lag p99 < 2 s while keeping up; flood phase quiet-line lag
p99 < 1 s; all lines exactly once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from log_capturer_testkit import (
    BENCH_LABEL,
    Daemon,
    Fleet,
    audit_numbered,
    cpu_seconds,
    deep_merge,
    dockerd_pid,
    metric_total,
    percentile,
    rss_mb,
    wait_count,
    wait_for,
)
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log
from log_capturer_testkit.lagtrace import summarize
from log_capturer_testkit.metrics import (
    fraction_le,
    histogram_buckets,
    histogram_delta,
    histogram_quantile,
)
from log_capturer_testkit.sink import SinkTailer
from log_capturer_testkit.workloads import counted_script, numbered_script, written_lines

LAG = "log_capturer_delivery_lag_seconds"
TRACER = Path(__file__).resolve().parent / "lagtrace"  # its sitecustomize.py


@dataclass
class Group:
    """Containers of a phase that write alike: ``count`` of them run ``script`` for about
    ``duration`` seconds, started ``delay`` seconds after the phase's first group."""

    name: str
    count: int
    script: str
    duration: float
    delay: float = 0.0
    selected_at: float | None = None
    """Left out by the daemon's filters until a reload selects the group this long after
    the start; its containers write their log, then stay running (not waited for)."""


def lag_figures(lags: list[float]) -> dict[str, Any]:
    return {
        "lag_tail_p50_s": round(percentile(lags, 0.5), 3),
        "lag_tail_p99_s": round(percentile(lags, 0.99), 3),
        "lag_tail_max_s": round(max(lags), 3) if lags else None,
        "lag_tail_samples": len(lags),
    }


def run_phase(
    args: argparse.Namespace,
    client: Any,
    phase: str,
    groups: list[Group],
    workdir: Path,
    watch: str | None = None,
) -> dict[str, Any]:
    """One daemon capturing ``groups``; the containers of group ``watch`` (if given) have
    the lag of every line reported apart (``quiet``) from the others' (``loud``)."""
    run_id = common.new_run_id(f"live-{phase}-")
    containers = Fleet(client, run_id, label=BENCH_LABEL, keep=args.keep)
    env = common.code_env(args.code)
    trace = workdir / phase / "lagtrace.txt"
    if args.trace:
        env["PYTHONPATH"] += f":{TRACER}"
        env["LOG_CAPTURER_LAG_TRACE"] = str(trace)
    prefix = f"bench-live-{phase}-"
    later = [f"{prefix}{g.name}*" for g in groups if g.selected_at is not None]
    daemon = Daemon(
        workdir / phase,
        run_id,
        deep_merge(
            {
                "container_monitor": {"stream_window": args.stream_window, "exclude_names": later},
                "positions": {"flush_interval": "1s"},
                "pipeline": {"batch_wait": "200ms"},
            },
            common.parse_sets(args.set),
        ),
        env=env,
        label=BENCH_LABEL,
    )
    tailer: SinkTailer | None = None
    dockerd = dockerd_pid()
    try:
        daemon.start()
        tailer = SinkTailer(
            daemon.output,
            sample_every=args.sample_every,
            watch=f'"container_name":"{prefix}{watch}'.encode() if watch else None,
        )
        tailer.start()
        before = daemon.metrics()
        cpu0 = cpu_seconds(daemon.pid)
        engine0 = cpu_seconds(dockerd)
        t0 = time.time()
        tailer.measure_between(t0, math.inf)
        specs: list[tuple[str, str]] = []
        ids: list[str] = []
        staying: list[str] = []
        for group in groups:
            wait = t0 + group.delay - time.time()
            if wait > 0:
                time.sleep(wait)  # the workload's schedule, not a wait for a condition
            names = [f"{prefix}{group.name}{i}-{run_id}" for i in range(group.count)]
            batch = [(name, group.script) for name in names]
            # No network: they only write logs (and need no bridge on the engine).
            started = containers.run_many(batch, workers=8, network_mode="none")
            at = time.time() - t0
            log(f"{phase}: {group.count} {group.name} containers started at {at:.1f}s")
            specs += batch
            ids += [started[name].id for name, _ in batch]
            if group.selected_at is not None:
                staying += [started[name].id for name, _ in batch]
        if later:
            for cid in staying:

                def ended(cid: str = cid) -> bool:
                    return written_lines(client, cid) >= 0  # its end marker is there

                wait_for(ended, 600, what="a backlog written")
            wait = t0 + min(g.selected_at or 0.0 for g in groups if g.selected_at) - time.time()
            if wait > 0:
                time.sleep(wait)  # the workload's schedule, not a wait for a condition
            daemon.config["container_monitor"]["exclude_names"] = []
            daemon.reload()
            wait_for(lambda: daemon.reloads("applied") >= 1, 60, what="the reload")
            log(f"{phase}: {', '.join(later)} selected at {time.time() - t0:.1f}s")
        writing = max(g.delay + g.duration for g in groups)
        for cid in ids:
            if cid not in staying:
                client.api.wait(cid, timeout=writing + 120)
        t_written = time.time()
        written = [written_lines(client, cid) for cid in ids]
        missing_end = sum(1 for n in written if n < 0)
        total = sum(n + 1 for n in written if n >= 0)  # + the end marker
        log(f"{phase}: writers done after {t_written - t0:.1f}s, {total} lines written")
        if not wait_count(
            lambda: tailer.stats.lines if tailer else 0,
            total,
            args.drain_timeout,
            args.stall_timeout,
            lambda: daemon.running,
        ):
            log(f"{phase}: delivery stopped at {tailer.stats.lines}/{total} lines")
        t_done = time.time()
        cpu = cpu_seconds(daemon.pid) - cpu0
        engine = cpu_seconds(dockerd) - engine0
        rss = rss_mb(daemon.pid)
        after = daemon.metrics()
        # SIGTERM drains the queue: the output audited is all the daemon ever wrote.
        exit_code = daemon.stop()
        tailer.stop()
        audit = audit_numbered(daemon.output, [n for n, _ in specs])
        hist = histogram_delta(
            histogram_buckets(after, LAG, 'sink="file"'),
            histogram_buckets(before, LAG, 'sink="file"'),
        )
        lags = tailer.stats.lag_samples + tailer.stats.watched_lags
        delivered = tailer.stats.lines
        write_span = max(t_written - t0, 1e-9)
        deliver_span = max(t_done - t0, 1e-9)
        blocked = metric_total(after, "log_capturer_queue_blocked_seconds_total") - (
            metric_total(before, "log_capturer_queue_blocked_seconds_total")
        )
        result: dict[str, Any] = {
            "containers": len(specs),
            "groups": {g.name: {"containers": g.count, "started_after_s": g.delay} for g in groups},
            "lines_written": total,
            "lines_delivered": delivered,
            "containers_without_end_marker": missing_end,
            "written_lines_per_s": round(total / write_span),
            "delivered_lines_per_s": round(delivered / deliver_span),
            "delivered_ratio": round((delivered / deliver_span) / (total / write_span), 3)
            if total
            else None,
            "drain_after_writers_s": round(t_done - t_written, 2),
            **lag_figures(lags),
            "lag_hist_p50_s": round(histogram_quantile(0.5, hist), 3),
            "lag_hist_p99_s": round(histogram_quantile(0.99, hist), 3),
            "lag_hist_share_le_2_5s": round(fraction_le(2.5, hist), 5),
            "daemon_cpu_s": round(cpu, 2),
            "daemon_cpu_s_per_million_lines": round(cpu / total * 1e6, 2) if total else None,
            "dockerd_cpu_s": round(engine, 2),
            "dockerd_cpu_s_per_million_lines": round(engine / total * 1e6, 2) if total else None,
            "daemon_rss_mb": round(rss, 1),
            "queue_blocked_s": round(blocked, 2),
            "audit": asdict(audit),
            "exactly_once": audit.ok() and missing_end == 0,
            "daemon_exit_code": exit_code,
        }
        if watch:
            result["quiet"] = lag_figures(tailer.stats.watched_lags)
            result["loud"] = lag_figures(tailer.stats.lag_samples)
        if args.trace:
            result["lag_parts"] = summarize(trace, {g.name: f"{prefix}{g.name}" for g in groups})
        log(f"{phase}: {json.dumps(result)}")
        return result
    finally:
        try:
            if tailer is not None and tailer.is_alive():
                tailer.stop()
        finally:
            try:
                if daemon.running:
                    daemon.stop()
            finally:
                containers.remove_all()


def main() -> int:
    p = common.BenchParser(
        __doc__,
        quick={
            "fast_containers": 3,
            "fast_duration": 15,
            "steady_containers": 10,
            "steady_rate": 200,
            "steady_duration": 15,
            "flood_lines": 300_000,
            "backlog_at": 8,
            "quiet_containers": 5,
            "quiet_duration": 15,
        },
        drain_timeout=300,
        stall_timeout=90,
        stream_window="30s",
    )
    p.add_argument(
        "--phases",
        default="fast,steady,flood,backlog",
        help="comma list: fast, steady, flood, backlog",
    )
    p.add_argument("--fast-containers", type=int, default=10)
    p.add_argument("--fast-duration", type=float, default=60)
    p.add_argument("--steady-containers", type=int, default=50)
    p.add_argument("--steady-rate", type=float, default=1000, help="lines/s per container")
    p.add_argument("--steady-duration", type=float, default=60)
    p.add_argument("--flood-lines", type=int, default=2_000_000)
    p.add_argument("--flood-delay", type=float, default=5, help="s after the quiet ones start")
    p.add_argument("--backlog-at", type=float, default=30, help="s: when a reload selects it")
    p.add_argument("--quiet-containers", type=int, default=20)
    p.add_argument("--quiet-rate", type=float, default=10, help="lines/s per container")
    p.add_argument("--quiet-duration", type=float, default=60)
    p.add_argument(
        "--trace", action="store_true", help="report where the lines' time went (lag_parts)"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="a config key"
    )
    p.add_argument("--sample-every", type=int, default=100, help="lag sample every N lines")
    args = p.parse()
    client = common.docker_client()
    summary: dict[str, Any] = {
        "benchmark": "live_throughput",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "engine": common.engine_version(client),
        "code": common.code_version(args.code),
        "stream_window": args.stream_window,
    }
    with common.workdir(args, "bench-live-") as workdir:
        for phase in [x.strip() for x in args.phases.split(",") if x.strip()]:
            if phase == "fast":
                script = numbered_script(args.fast_duration, 0)
                groups = [Group("fast", args.fast_containers, script, args.fast_duration)]
                summary["fast"] = run_phase(args, client, "fast", groups, workdir)
            elif phase == "steady":
                script = numbered_script(args.steady_duration, args.steady_rate)
                groups = [
                    Group("steady", args.steady_containers, script, args.steady_duration)
                ]
                summary["steady"] = run_phase(args, client, "steady", groups, workdir)
            elif phase == "flood":
                quiet = numbered_script(args.quiet_duration, args.quiet_rate)
                flood = counted_script(args.flood_lines)
                groups = [
                    Group("quiet", args.quiet_containers, quiet, args.quiet_duration),
                    # As fast as it can: a minute is generous for 2,000,000 lines.
                    Group("loud", 1, flood, args.quiet_duration, args.flood_delay),
                ]
                summary["flood"] = run_phase(args, client, "flood", groups, workdir, "quiet")
            elif phase == "backlog":
                quiet = numbered_script(args.quiet_duration, args.quiet_rate)
                written = counted_script(args.flood_lines) + "; exec sleep 86400"
                groups = [
                    Group("quiet", args.quiet_containers, quiet, args.quiet_duration),
                    Group("loud", 1, written, 0, selected_at=args.backlog_at),
                ]
                summary["backlog"] = run_phase(args, client, "backlog", groups, workdir, "quiet")
            else:
                p.error(f"unknown phase {phase!r}")
    common.write_json(summary, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
