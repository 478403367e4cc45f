#!/usr/bin/env python3
"""CPU to encode the same batches for each network sink, per entry: Loki's push (protobuf +
snappy, JSON + gzip) and OTLP (protobuf + gzip, JSON + gzip, protobuf uncompressed).

    .venv/bin/python benchmarks/otlp_encoding.py [--lines N] [--rounds R]

Builds N lines of about 110 bytes (a web server's log, some numbers varying) as the
capture's batches (a socket read's columns, 1,000 lines each, every 10th line on
stderr), then times, best of R rounds: batches -> columns -> requests of ``batch_bytes``
(``build``), and the bodies of those requests. Prints µs per entry and body bytes per
entry (stderr), and the JSON summary last on stdout. In-process: no server, no network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import Lines
from log_capturer.pipeline.batch import Batch, LineBatch
from log_capturer.positions.marks import Mark
from log_capturer.sinks.loki import LokiSinkConfig
from log_capturer.sinks.loki.encode import Encoder as LokiEncoder
from log_capturer.sinks.otlp import OtlpSinkConfig
from log_capturer.sinks.otlp.encode import Encoder as OtlpEncoder
from log_capturer.timestamps import format_rfc3339_ns
from log_capturer_testkit import bench


def batches(lines: int) -> list[Batch]:
    container = ContainerInfo(id="c" * 64, name="web-1", image="shop/web:2",
                              labels={"com.docker.compose.service": "web"})
    now = time.time_ns()
    out: list[Batch] = []
    for start in range(0, lines, 1000):
        ids = range(start, min(lines, start + 1000))
        columns = Lines(
            ["stderr" if i % 10 == 9 else "stdout" for i in ids],
            [format_rfc3339_ns(now + i * 1000).encode() for i in ids],
            [f"2026-11-23 12:13:10,147 INFO [worker-{i % 8}] GET /api/v1/items/{i} 200 "
             f"{i * 7 % 1000}ms user=alice".encode() for i in ids],
            None,
        )
        ends = {"stdout": Mark(now + ids[-1] * 1000, 1), "stderr": Mark(now + ids[-1] * 1000, 1)}
        out.append(LineBatch(container, columns, ends))
    return out


def measure(build: Callable[[Sequence[Batch]], list[Any]], rounds: int,
            lines: int) -> dict[str, float]:
    best_build, best_bodies, size, requests = 1e9, 1e9, 0, 0
    for _ in range(rounds):
        data = batches(lines)  # new each round: a batch keeps what was computed of it
        t0 = time.perf_counter()
        payloads = build(data)
        t1 = time.perf_counter()
        bodies = [p.body() for p in payloads]
        t2 = time.perf_counter()
        best_build, best_bodies = min(best_build, t1 - t0), min(best_bodies, t2 - t1)
        size, requests = sum(map(len, bodies)), len(bodies)
    per = {"build": best_build / lines * 1e6, "bodies": best_bodies / lines * 1e6}
    return {**{k: round(v, 3) for k, v in per.items()},
            "total": round(sum(per.values()), 3), "requests": requests,
            "body_bytes_per_entry": round(size / lines, 1)}


def main() -> None:
    parser = bench.BenchParser(
        __doc__, quick={"lines": 5_000, "rounds": 1}, daemon=False, containers=False
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse()
    encoders: dict[str, Callable[[Sequence[Batch]], list[Any]]] = {
        "loki protobuf+snappy": LokiEncoder(LokiSinkConfig(encoding="protobuf")).build,
        "loki json+gzip": LokiEncoder(LokiSinkConfig(encoding="json")).build,
        "otlp protobuf+gzip": OtlpEncoder(OtlpSinkConfig()).build,
        "otlp protobuf": OtlpEncoder(OtlpSinkConfig(compression="none")).build,
        "otlp json+gzip": OtlpEncoder(OtlpSinkConfig(encoding="json")).build,
    }
    results = {}
    for name, build in encoders.items():
        r = results[name] = measure(build, args.rounds, args.lines)
        bench.log(f"{name:22s} µs/entry: build {r['build']}, bodies {r['bodies']}, total "
                  f"{r['total']}; {r['requests']} requests, {r['body_bytes_per_entry']} body "
                  "bytes/entry")
    bench.write_json({"lines": args.lines, "results": results}, args.json_out)


if __name__ == "__main__":
    main()
