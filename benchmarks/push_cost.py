#!/usr/bin/env python3
"""What a Loki push costs the daemon itself: the backlog into a stand-in Loki that does no
work, against the file sink, same run.

Usage:
  .venv/bin/python benchmarks/push_cost.py [--lines 1000000] [--rounds 3] --reuse
  .venv/bin/python benchmarks/push_cost.py --sinks standin,base --base-code TREE
  .venv/bin/python benchmarks/push_cost.py --quick

The backlog container of benchmarks/capture_throughput.py (kept and reused with
``--reuse``) is read, in rotating order each round, by the daemon with only

* standin: the Loki sink, into a local HTTP server of this script that reads each push and
           answers ``204`` at once (no decoding, no storage: next to no CPU);
* base:    the same, running the ``log_capturer`` of ``--base-code TREE`` (two versions
           compared in the same run);
* file:    the file sink (the default config's sink).

Measured per run: wall time from the daemon's start until it counts every line accepted
(``log_capturer_sink_records_total{status="accepted"}``, scraped every 0.1 s), its CPU
seconds and CPU µs per line, the engine's CPU seconds meanwhile. Printed: per run, and the
ratios of every pair (time and CPU) with median and spread; the JSON summary is the last
thing on stdout. Into a real Loki the shared cores also run Loki (loki_backlog.py); here
only the daemon's own work differs between the sinks. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from log_capturer_testkit import BENCH_LABEL, Daemon, cpu_seconds, dockerd_pid
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log, spread
from log_capturer_testkit.workloads import backlog_expected, ensure_backlog

ACCEPTED = 'log_capturer_sink_records_total{sink="%s",status="accepted"}'


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def run_daemon(args: argparse.Namespace, sink: str, url: str, label_value: str,
               expected: int, where: Path) -> dict[str, Any]:
    if sink == "file":
        sinks: dict[str, Any] = {}
        counted = ACCEPTED % "file"
    else:
        sinks = {"file": {"enabled": False},
                 "loki": {"enabled": True, "url": url, "host": "bench",
                          "spool_dir": str(where / "spool"),
                          "dead_letter_path": str(where / "dead.jsonl")}}
        counted = ACCEPTED % "loki"
    code = args.base_code if sink == "base" else args.code
    daemon = Daemon(where, label_value, {
        "container_monitor": {"stream_window": args.stream_window},
        "pipeline": {"batch_size": 10_000},
        "sinks": sinks,
        "logging": {"level": "warning"},
    }, env=common.code_env(code), label=BENCH_LABEL)
    engine0 = cpu_seconds(dockerd_pid())
    started = time.monotonic()
    daemon.start(wait_ready=False)
    try:
        deadline = started + args.drain_timeout
        while True:
            time.sleep(0.1)
            try:
                done = daemon.metric(counted)
            except OSError:  # not listening yet
                continue
            if done >= expected or time.monotonic() > deadline:
                break
        seconds = time.monotonic() - started
        cpu = cpu_seconds(daemon.pid)
    finally:
        daemon.stop()
    return {"seconds": round(seconds, 2), "complete": done >= expected, "cpu_s": round(cpu, 2),
            "cpu_us_per_line": round(cpu / expected * 1e6, 2),
            "engine_cpu_s": round(cpu_seconds(dockerd_pid()) - engine0, 2)}



def main() -> int:
    parser = common.BenchParser(__doc__, quick={"lines": 20_000, "rounds": 1},
                                drain_timeout=600, stream_window="30s",
                                backlog_lines=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each in rotated order")
    parser.add_argument("--sinks", default="standin,file",
                        help="comma-separated, of: standin, base, file")
    parser.add_argument("--base-code", default=None, metavar="TREE",
                        help="sink 'base': the Loki sink of the log_capturer in TREE")
    args = parser.parse()
    sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    if not sinks or set(sinks) - {"standin", "base", "file"}:
        parser.error("--sinks: choose from standin, base, file")
    if "base" in sinks and not args.base_code:
        parser.error("--sinks base needs --base-code TREE")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, name="standin", daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    client = common.docker_client()
    container, reused = ensure_backlog(client, args.lines, args.reuse,
                                       common.new_run_id("pushcost"))
    expected = backlog_expected(args.lines)
    label_value = container.labels[BENCH_LABEL]
    runs: list[dict[str, Any]] = []
    try:
        with common.workdir(args, "push-cost-") as work:
            for n in range(args.rounds):
                result: dict[str, Any] = {}
                for sink in sinks[n % len(sinks):] + sinks[: n % len(sinks)]:
                    where = work / f"r{n}-{sink}"
                    where.mkdir()
                    result[sink] = run_daemon(args, sink, url, label_value, expected, where)
                    log(f"round {n + 1} {sink}: {result[sink]}")
                runs.append(result)
    finally:
        server.shutdown()
        server.server_close()
        if not (args.keep or reused):  # made by this run: removed (a reused one is kept)
            container.remove(force=True)
    complete = [r for r in runs if all(r[s]["complete"] for s in sinks)]
    ratios = {}
    for i, a in enumerate(sinks):
        for b in sinks[i + 1:]:
            if complete:
                ratios[f"time_{a}_over_{b}"] = spread(
                    [r[a]["seconds"] / r[b]["seconds"] for r in complete])
                ratios[f"cpu_{a}_over_{b}"] = spread(
                    [r[a]["cpu_s"] / r[b]["cpu_s"] for r in complete])
    for key, value in ratios.items():
        log(f"{key}: median {value['median']} (min {value['min']}, max {value['max']})")
    common.write_json({"benchmark": "push_cost", "lines": expected, "rounds": runs,
                       "ratios": ratios, "sinks": sinks, "base_code": args.base_code,
                       "code": common.code_version(args.code)}, args.json_out)
    return 0 if len(complete) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
