#!/usr/bin/env python3
"""CPU to encode one 1 MiB Loki push, per entry: the sink's protobuf + snappy and JSON + gzip.

    .venv/bin/python benchmarks/loki_encoding.py [--lines N] [--rounds R]

Builds N records of about 100 bytes (a web server's log line), then times, best of R
rounds: records -> columns (``Encoder.streams``), columns -> pushes of ``batch_bytes``,
and the bodies of those pushes, for both encodings. Prints µs per entry and the body
bytes per entry (stderr), and the JSON summary last on stdout.
"""

from __future__ import annotations

import time

from log_capturer.discovery.container import ContainerInfo
from log_capturer.pipeline.record import LogRecord
from log_capturer.sinks.loki import LokiSinkConfig
from log_capturer.sinks.loki.encode import Encoder, split_pushes
from log_capturer_testkit import bench


def main() -> None:
    parser = bench.BenchParser(
        __doc__, quick={"lines": 5_000, "rounds": 1}, daemon=False, containers=False
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse()
    container = ContainerInfo(id="c" * 64, name="web-1", image="shop/web:2")
    now = time.time_ns()
    records = [
        LogRecord(container, "stdout", now + i * 1000, 0, "",
                  f"2026-11-23 12:13:10,147 INFO [worker-{i % 8}] GET /api/v1/items/{i} 200 "
                  f"{i * 7 % 1000}ms user=alice")
        for i in range(args.lines)
    ]
    summary: dict[str, dict[str, float]] = {}
    for encoding in ("protobuf", "json"):
        encoder = Encoder(LokiSinkConfig(enabled=True, encoding=encoding))
        best = {"columns": 1e9, "pushes": 1e9, "bodies": 1e9}
        body_bytes = 0
        pushes = 0
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            streams = encoder.streams(records)
            t1 = time.perf_counter()
            batch = split_pushes(streams, encoder.config.batch_bytes, encoding)
            t2 = time.perf_counter()
            bodies = [p.body() for p in batch]
            t3 = time.perf_counter()
            for key, seconds in (("columns", t1 - t0), ("pushes", t2 - t1), ("bodies", t3 - t2)):
                best[key] = min(best[key], seconds)
            body_bytes, pushes = sum(map(len, bodies)), len(batch)
        per = {k: round(v / args.lines * 1e6, 3) for k, v in best.items()}
        per["total"] = round(sum(per.values()), 3)
        summary[encoding] = {**per, "pushes": pushes,
                             "body_bytes_per_entry": round(body_bytes / args.lines, 1)}
        bench.log(f"{encoding:9s} µs/entry: columns {per['columns']}, pushes {per['pushes']}, "
                  f"bodies {per['bodies']}, total {per['total']}; {pushes} pushes, "
                  f"{body_bytes / args.lines:.1f} body bytes/entry")
    bench.write_json({"lines": args.lines, "results": summary}, args.json_out)


if __name__ == "__main__":
    main()
