#!/usr/bin/env python3
"""A backlog into a real Grafana Loki: this daemon's Loki push and OTLP sinks against
Promtail v3.4.6, same run.

Usage:
  .venv/bin/python benchmarks/loki_backlog.py [--lines 1000000] [--rounds 4]
  .venv/bin/python benchmarks/loki_backlog.py --quick          # 20k lines, one round
  .venv/bin/python benchmarks/loki_backlog.py --shippers daemon,promtail   # a subset
  .venv/bin/python benchmarks/loki_backlog.py --shippers daemon,base,promtail --base-code ../main

The backlog container of benchmarks/capture_throughput.py (N numbered stdout lines, every
10th also a stderr line; kept and reused with ``--reuse``) is shipped, in rotating
order each round, by

* daemon:   ``python -m log_capturer run`` with only the Loki sink (protobuf + snappy,
            pushes of ``batch_bytes``; ``--batch-size`` records per dispatcher batch);
* base:     the same, running the ``log_capturer`` of ``--base-code TREE`` (an older
            checkout: two versions compared in the same run);
* otlp:     the same daemon with only the OTLP sink, into Loki's ``/otlp/v1/logs``
            (protobuf + gzip, requests of ``batch_bytes``);
* promtail: Promtail v3.4.6 (../shared/peers) with ``docker_sd_configs`` on
            unix:///var/run/docker.sock, filtered on the container's label, and
            ``__meta_docker_container_name`` relabelled (regex ``/(.*)``) to
            ``container_name``;

each into a fresh Loki v3.4.6 (../shared/peers, the shared single-binary config, its
default limits unless ``--ingestion-mb``: 4 MB/s, bursts of 6 MB, beyond which Loki
answers 429). Measured per run: wall time from the shipper's start until every line is
in Loki (its ``/metrics`` polled every 0.1 s, then a ``count_over_time`` query to confirm:
see :func:`wait_loki_lines`) and until its first line was (``first_s``), the shipper's
CPU seconds and CPU µs per line, Loki's CPU seconds; pushes (each counted once however
often it was retried), their body bytes (compressed, each push once: the daemon's
``log_capturer_sink_push_bytes``, Promtail's ``promtail_encoded_bytes_total``) and the
requests by HTTP status (429s included: the daemon's
``log_capturer_sink_request_duration_seconds``, Promtail's
``promtail_request_duration_seconds``); for the daemon also the bytes of every request
(retries included), Loki's mean answer time and how long its reader waited for room in
the queue (``queue_blocked_s``: above 0, shipping was the slower side). Printed: per
round, and the ratios promtail/daemon (time: above 1 = the daemon is faster; also
``from_first``, each one's time from its first line in Loki: start-up and discovery left
out) and daemon/promtail (CPU: below 1 = the daemon spends less) with median and spread,
the same for every other pair run; the JSON summary is the last thing on stdout. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from log_capturer_testkit import (
    BENCH_LABEL,
    Daemon,
    Fleet,
    cpu_seconds,
    free_port,
    metric_total,
    scrape,
)
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log, spread
from log_capturer_testkit.loki import RealLoki, peer_binary
from log_capturer_testkit.workloads import backlog_expected, ensure_backlog


def loki_count(loki: RealLoki, selector: str, window_s: int) -> int:
    """Entries matching ``selector`` in the last ``window_s`` seconds, counted by Loki."""
    query = f"sum(count_over_time({selector}[{window_s}s]))"
    url = f"{loki.url}/loki/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            result = json.load(response)["data"]["result"]
    except OSError:
        return -1
    return int(float(result[0]["value"][1])) if result else 0


_PUSH_ROUTES = ('route="loki_api_v1_push"', 'route="otlp_v1_logs"')


def loki_taken(loki: RealLoki) -> tuple[float, float] | None:
    """(lines Loki has taken, its push requests in flight), from its ``/metrics``: the lines
    its distributor parsed (``loki_distributor_lines_received_total``, counted as a push is
    read) less those it discarded (``loki_discarded_samples_total``: rate limited, too old,
    ...). A line sent twice (a retried 5xx) is counted twice, so the figure can run ahead
    of what is stored: :func:`wait_loki_lines` checks it with a count query."""
    try:
        metrics = scrape(f"{loki.url}/metrics", timeout=10)
    except OSError:
        return None
    taken = (metric_total(metrics, "loki_distributor_lines_received_total")
             - metric_total(metrics, "loki_discarded_samples_total"))
    inflight = sum(v for k, v in metrics.items() if k.startswith("loki_inflight_requests{")
                   and any(route in k for route in _PUSH_ROUTES))
    return taken, inflight


def wait_loki_lines(loki: RealLoki, selector: str, window_s: int, expected: int,
                    timeout: float) -> tuple[float | None, float, float | None]:
    """When (monotonic) every line was in Loki, or None at ``timeout``; Loki's CPU
    seconds then; when (monotonic) it had taken the first line.

    Loki's ``/metrics`` is polled every 0.1 s until it has taken ``expected`` lines with no
    push in flight; a count query then confirms that all are queryable (if not, the count
    is polled every second and its success is the moment). Polling only the count query,
    as this benchmark did before, cost Loki up to a CPU-second a query over a million
    lines (3.9 of its 6.4 CPU-seconds in a daemon run, 6.4 of 9.4 in a Promtail run: the
    harness took a core from the runs it timed) and was a second coarse."""
    deadline = time.monotonic() + timeout
    done: float | None = None
    first: float | None = None
    while done is None and time.monotonic() < deadline:
        progress = loki_taken(loki)
        if first is None and progress is not None and progress[0] > 0:
            first = time.monotonic()
        if progress is not None and progress[0] >= expected and progress[1] == 0:
            done = time.monotonic()
        else:
            time.sleep(0.1)
    cpu = loki.cpu_seconds()
    last = -1
    while time.monotonic() < deadline:
        last = loki_count(loki, selector, window_s)
        if last >= expected:
            return (time.monotonic() if done is None else done), cpu, first
        done = None  # the metrics ran ahead (lines sent twice): the query decides
        time.sleep(1.0)
        cpu = loki.cpu_seconds()
    log(f"timed out at {last} of {expected} lines")
    return None, cpu, first


def start_loki(workdir: Path, ingestion_mb: float | None) -> RealLoki:
    limits: dict[str, Any] = {}
    if ingestion_mb:
        limits = {"ingestion_rate_mb": ingestion_mb, "ingestion_burst_size_mb": ingestion_mb * 2}
    loki = RealLoki(workdir, auth=False, limits=limits, overrides={})
    return loki.start()


def run_daemon(args: argparse.Namespace, loki: RealLoki, label_value: str, selector: str,
               window_s: int, expected: int, workdir: Path, sink: str = "loki",
               code: str | None = None) -> dict[str, Any]:
    where = {"spool_dir": str(workdir / "spool"), "dead_letter_path": str(workdir / "dead.jsonl")}
    if sink == "loki":
        sinks = {"loki": {"enabled": True, "url": loki.url, "host": "bench", **where}}
    else:  # Loki makes container.name the container_name label: the same selector
        sinks = {"otlp": {"enabled": True, "endpoint": f"{loki.url}/otlp", "host": "bench",
                          **where}}
    daemon = Daemon(
        workdir,
        label_value,
        {
            "container_monitor": {"stream_window": args.stream_window},
            "pipeline": {"batch_size": args.batch_size},
            "sinks": {"file": {"enabled": False}, **sinks},
            "logging": {"level": "warning"},
        },
        env=common.code_env(code or args.code),
        label=BENCH_LABEL,
    )
    loki_cpu0 = loki.cpu_seconds()
    started = time.monotonic()
    daemon.start(wait_ready=False)
    try:
        done, loki_cpu, first = wait_loki_lines(loki, selector, window_s, expected,
                                                args.drain_timeout)
        cpu = cpu_seconds(daemon.pid)
        metrics = daemon.metrics()
    finally:
        daemon.stop()
    statuses = by_label(metrics, "log_capturer_sink_request_duration_seconds_count", "status")
    return {
        "seconds": None if done is None else round(done - started, 2),
        "first_s": None if first is None else round(first - started, 2),
        "cpu_s": round(cpu, 2),
        "loki_cpu_s": round(loki_cpu - loki_cpu0, 2),
        # a push retried is one push, several requests; each push's body counted once
        # (code before log_capturer_sink_push_bytes: its requests that succeeded)
        "pushes": int(metric_total(metrics, "log_capturer_sink_push_bytes_count")
                      or sum(v for k, v in statuses.items() if k.startswith("2"))),
        "requests_by_status": statuses,
        "bytes_sent": int(metric_total(metrics, "log_capturer_sink_push_bytes_sum")
                          or metric_total(metrics, "log_capturer_sink_request_bytes_total")),
        "requests_bytes": int(metric_total(metrics, "log_capturer_sink_request_bytes_total")),
        # Loki's answer time per request, and how long the reader waited for room in the
        # queue (the shipping side was the slower one for that long)
        "request_s_mean": round(
            metric_total(metrics, "log_capturer_sink_request_duration_seconds_sum")
            / max(1.0, sum(statuses.values())), 3),
        "queue_blocked_s": round(
            metric_total(metrics, "log_capturer_queue_blocked_seconds_total"), 2),
    }


def run_promtail(args: argparse.Namespace, loki: RealLoki, label_value: str, selector: str,
                 window_s: int, expected: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    config = {
        "server": {"http_listen_address": "127.0.0.1", "http_listen_port": port,
                   "grpc_listen_port": 0, "log_level": "warn"},
        "positions": {"filename": str(workdir / "positions.yaml")},
        "clients": [{"url": f"{loki.url}/loki/api/v1/push"}],
        "scrape_configs": [{
            "job_name": "docker",
            "docker_sd_configs": [{
                "host": "unix:///var/run/docker.sock",
                "refresh_interval": "5s",
                "filters": [{"name": "label", "values": [f"{BENCH_LABEL}={label_value}"]}],
            }],
            "relabel_configs": [
                {"source_labels": ["__meta_docker_container_name"], "regex": "/(.*)",
                 "target_label": "container_name"},
                {"source_labels": ["__meta_docker_container_log_stream"],
                 "target_label": "stream"},
            ],
        }],
    }
    path = workdir / "promtail.yaml"
    path.write_text(yaml.safe_dump(config))
    binary = peer_binary("promtail")
    loki_cpu0 = loki.cpu_seconds()
    started = time.monotonic()
    with open(workdir / "promtail.log", "ab") as out:
        proc = subprocess.Popen([str(binary), f"-config.file={path}"], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        done, loki_cpu, first = wait_loki_lines(loki, selector, window_s, expected,
                                                args.drain_timeout)
        cpu = cpu_seconds(proc.pid)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    statuses = by_label(metrics, "promtail_request_duration_seconds_count", "status_code")
    return {
        "seconds": None if done is None else round(done - started, 2),
        "first_s": None if first is None else round(first - started, 2),
        "cpu_s": round(cpu, 2),
        "loki_cpu_s": round(loki_cpu - loki_cpu0, 2),
        # a push retried is one push, several requests; each push's body counted once
        "pushes": int(sum(statuses.values())
                      - metric_total(metrics, "promtail_batch_retries_total")),
        "requests_by_status": statuses,
        "bytes_sent": int(metric_total(metrics, "promtail_encoded_bytes_total")),
    }


def run_otlp(args: argparse.Namespace, loki: RealLoki, label_value: str, selector: str,
             window_s: int, expected: int, workdir: Path) -> dict[str, Any]:
    return run_daemon(args, loki, label_value, selector, window_s, expected, workdir, "otlp")


def run_base(args: argparse.Namespace, loki: RealLoki, label_value: str, selector: str,
             window_s: int, expected: int, workdir: Path) -> dict[str, Any]:
    if not args.base_code:
        raise SystemExit("--shippers base needs --base-code TREE")
    return run_daemon(args, loki, label_value, selector, window_s, expected, workdir, "loki",
                      args.base_code)


RUNNERS = {"daemon": run_daemon, "otlp": run_otlp, "promtail": run_promtail, "base": run_base}
PAIRS = (("daemon", "promtail"), ("otlp", "promtail"), ("otlp", "daemon"), ("base", "promtail"),
         ("daemon", "base"))
"""(a, b): ratios b/a of time (above 1 = a is faster), a/b of CPU, pushes and bytes."""


def by_label(metrics: dict[str, float], name: str, label: str) -> dict[str, int]:
    """The series of ``name`` summed by the value of ``label``."""
    out: dict[str, int] = {}
    pattern = re.compile(rf'{label}="([^"]*)"')
    for key, value in metrics.items():
        if key.startswith(name + "{"):
            found = pattern.search(key)
            status = found.group(1) if found else "?"
            out[status] = out.get(status, 0) + int(value)
    return dict(sorted(out.items()))



def main() -> int:
    parser = common.BenchParser(
        __doc__,
        quick={"lines": 20_000, "rounds": 1},
        drain_timeout=900,
        stream_window="30s",
        backlog_lines=1_000_000,
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each in rotated order")
    parser.add_argument("--shippers", default="daemon,otlp,promtail",
                        help="comma-separated, of: daemon (Loki push), otlp, promtail")
    parser.add_argument("--batch-size", type=int, default=10_000,
                        help="the daemon's pipeline.batch_size (records per sink write)")
    parser.add_argument("--ingestion-mb", type=float, default=None,
                        help="Loki's ingestion_rate_mb, its burst twice that (default: Loki's "
                        "own, 4 and 6)")
    parser.add_argument("--base-code", default=None, metavar="TREE",
                        help="shipper 'base': the Loki sink of the log_capturer in TREE (an "
                        "older checkout), to compare two versions in the same run")
    args = parser.parse()
    shippers = [s.strip() for s in args.shippers.split(",") if s.strip()]
    unknown = set(shippers) - set(RUNNERS)
    if unknown or not shippers:
        parser.error(f"--shippers: unknown {sorted(unknown)}; choose from {sorted(RUNNERS)}")

    client = common.docker_client()
    run_id = common.new_run_id("lokibench")
    containers = Fleet(client, run_id, label=BENCH_LABEL, keep=args.keep)
    with common.workdir(args, "loki-backlog-") as work:
        return run(args, shippers, client, run_id, containers, work)


def run(args: argparse.Namespace, shippers: list[str], client: Any, run_id: str,
        containers: Fleet, work: Path) -> int:
    rounds: list[dict[str, Any]] = []
    try:
        container, reused = ensure_backlog(client, args.lines, args.reuse, run_id)
        if reused and not args.keep:
            containers.keep = True  # not ours to remove
        label_value = container.labels[BENCH_LABEL]
        expected = backlog_expected(args.lines)
        name = container.name
        selector = f'{{container_name="{name}"}}'
        container.reload()
        created = container.attrs["Created"][:19]
        age = time.time() - time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%S"))
        window_s = int(age + 3600 * 24)  # covers every line of the backlog, whatever its age
        log(f"{expected} lines in {name}; {args.rounds} rounds")
        for n in range(args.rounds):
            order = shippers[n % len(shippers):] + shippers[: n % len(shippers)]
            result: dict[str, Any] = {}
            for shipper in order:
                where = work / f"r{n}-{shipper}"
                where.mkdir()
                loki = start_loki(where / "loki", args.ingestion_mb)
                try:
                    result[shipper] = RUNNERS[shipper](args, loki, label_value, selector,
                                                       window_s, expected, where)
                finally:
                    loki.cleanup()
                r = result[shipper]
                r["cpu_us_per_line"] = round(r["cpu_s"] / expected * 1e6, 2)
                log(f"round {n + 1} {shipper}: {json.dumps(r)}")
            rounds.append(result)
        complete = [r for r in rounds if all(r[shipper]["seconds"] for shipper in shippers)]
        ratios: dict[str, dict[str, float]] = {}
        for a, b in PAIRS:
            if not complete or a not in shippers or b not in shippers:
                continue
            ratios |= {
                f"speed_{b}_over_{a}": spread(
                    [r[b]["seconds"] / r[a]["seconds"] for r in complete]),
                f"cpu_{a}_over_{b}": spread([r[a]["cpu_s"] / r[b]["cpu_s"] for r in complete]),
                f"loki_cpu_{a}_over_{b}": spread(
                    [r[a]["loki_cpu_s"] / max(r[b]["loki_cpu_s"], 0.01) for r in complete]),
                f"pushes_{a}_over_{b}": spread(
                    [r[a]["pushes"] / max(r[b]["pushes"], 1) for r in complete]),
                f"bytes_{a}_over_{b}": spread(
                    [r[a]["bytes_sent"] / max(r[b]["bytes_sent"], 1) for r in complete]),
            }
            # the time from each one's first line in Loki: its start-up (discovery,
            # Promtail's first docker_sd refresh) left out; only where both saw one
            from_first = [
                (r[b]["seconds"] - r[b]["first_s"]) / (r[a]["seconds"] - r[a]["first_s"])
                for r in complete
                if r[a]["first_s"] is not None and r[b]["first_s"] is not None
            ]
            if from_first:
                ratios[f"from_first_{b}_over_{a}"] = spread(from_first)
        for key, value in ratios.items():
            log(f"{key}: median {value['median']} (min {value['min']}, max {value['max']})")
        common.write_json({
            "benchmark": "loki_backlog",
            "lines": expected,
            "rounds": rounds,
            "ratios": ratios,
            "medians": {
                shipper: {key: statistics.median(r[shipper][key] for r in complete)
                          for key in ("seconds", "cpu_s", "cpu_us_per_line", "loki_cpu_s",
                                      "pushes", "bytes_sent")}
                for shipper in shippers
            } if complete else {},
            "config": {"batch_size": args.batch_size, "ingestion_mb": args.ingestion_mb,
                       "base_code": args.base_code,
                       "quick": args.quick, "shippers": shippers},
            "engine": common.engine_version(client),
            "code": common.code_version(args.code),
        }, args.json_out)
        return 0 if len(complete) == len(rounds) else 1
    finally:
        containers.remove_all()


if __name__ == "__main__":
    sys.exit(main())
