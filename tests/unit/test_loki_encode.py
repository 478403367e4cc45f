"""Records to Loki pushes, without a Loki: columns, sizes, bodies, spool round trips."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from log_capturer.discovery.container import COMPOSE_PROJECT, COMPOSE_SERVICE, ContainerInfo
from log_capturer.pipeline.batch import RecordBatch
from log_capturer.pipeline.record import LogRecord
from log_capturer.sinks.loki import LokiSinkConfig
from log_capturer.sinks.loki.encode import ENTRY_OVERHEAD, Encoder
from log_capturer.sinks.loki.push import (
    Push,
    Streams,
    decode_json,
    decode_protobuf,
    split_pushes,
)
from log_capturer.sinks.network.columns import full_ranges

WEB = ContainerInfo(
    id="c0ffee" * 10 + "abcd", name="web", image="nginx:1.27",
    labels={COMPOSE_SERVICE: "web", COMPOSE_PROJECT: "shop"},
)
ODD = ContainerInfo(id="e" * 64, name='we"ird\\name {x}', image="i")


def rec(message: str, ts_ns: int, container: ContainerInfo = WEB, stream: str = "stdout",
        truncated: bool = False) -> LogRecord:
    return LogRecord(container, stream, ts_ns, 0, "", message, truncated=truncated)


class RecordsEncoder(Encoder):
    """The encoder, given records as the dispatcher's batches (one per container)."""

    def build_records(self, records: list[LogRecord]) -> list[Push]:
        return self.build(RecordBatch.group(records))


def encoder(**overrides: object) -> RecordsEncoder:
    return RecordsEncoder(LokiSinkConfig(enabled=True, host="h", **overrides))


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_bodies_decode_to_the_entries_in_stream_and_time_order(encoding: str) -> None:
    now = time.time_ns()
    batch = [rec("b", now + 1), rec("a", now), rec("err", now, stream="stderr"),
             rec("odd é\x00\n", now + 2, ODD), rec("cut", now + 3, truncated=True)]
    [push] = encoder(encoding=encoding, structured_metadata=["container_id", "truncated"]
                     ).build_records(batch)
    body = push.body()
    decoded = decode_protobuf(body) if encoding == "protobuf" else decode_json(body)
    got = [(decoded.labels[decoded.stream_of[i]]["container_name"],
            decoded.labels[decoded.stream_of[i]]["stream"], decoded.ts_ns[i], decoded.lines[i],
            dict(decoded.meta[i])) for i in range(len(decoded))]
    web = {"container_id": WEB.id}
    assert got == [
        ("web", "stdout", now, b"a", web),
        ("web", "stdout", now + 1, b"b", web),
        ("web", "stdout", now + 3, b"cut", {**web, "truncated": "true"}),
        ("web", "stderr", now, b"err", web),
        ('we"ird\\name {x}', "stdout", now + 2, "odd é\x00\n".encode(), {"container_id": ODD.id}),
    ]
    assert Push.from_spool(push.to_spool()).body() == body


def test_by_default_no_metadata_but_truncated_where_a_line_was_cut() -> None:
    now = time.time_ns()
    streams = encoder(max_line_bytes=1024).streams(
        [rec("x" * 3000, now), rec("short", now + 1), rec("cut before", now + 2, truncated=True)])
    assert streams.meta == [(("truncated", "true"),), (), (("truncated", "true"),)]
    assert len(streams.lines[0]) == 1024


def test_lone_surrogates_do_not_break_a_protobuf_push() -> None:
    [push] = encoder().build_records([rec("bad \ud800 half", time.time_ns())])
    assert decode_protobuf(push.body()).lines == [b"bad ? half"]


def test_pushes_are_batch_bytes_of_lines_as_promtail_counts_them() -> None:
    # Promtail's batchsize (and Loki's rate limit) count line and metadata bytes only
    now = time.time_ns()
    batch = [rec("x" * 100, now + i) for i in range(1000)]
    pushes = encoder(batch_bytes=10_240).build_records(batch)
    assert [len(p) for p in pushes[:-1]] == [102] * (len(pushes) - 1)
    assert sum(len(p) for p in pushes) == 1000
    assert all(len(p.body()) < 10_240 for p in pushes)  # snappy: smaller still
    [alone] = split_pushes(encoder().streams([rec("y" * 5000, now)]), 1024, "protobuf")
    assert len(alone) == 1


def test_pushes_of_tiny_lines_stay_under_the_body_bound_with_framing() -> None:
    streams = Streams()
    n = 100_000
    streams.add({"a": "1"}, list(range(n)), [b"x"] * n, [()] * n)
    full, rest = full_ranges(streams, 1024 * 1024, max_bytes=100 * (1 + ENTRY_OVERHEAD))
    assert [len(r) for r in full] == [100] * (n // 100 - 1) and rest == n - 100
    assert len(split_pushes(streams, 1024 * 1024, "protobuf")) == 1  # 2.5 MB framed: fits


def test_a_million_lines_of_100_bytes_are_a_hundred_pushes_of_1mib() -> None:
    # only the sizing, on columns: the body of each is built when it is sent
    streams = Streams()
    n = 1_000_000
    streams.add({"a": "1"}, list(range(n)), [b"x" * 100] * n, [()] * n)
    pushes = split_pushes(streams, 1024 * 1024, "protobuf")
    assert len(pushes) == 96  # 100 MB of lines: 95 of 10,485 lines, and the rest
    full, rest = full_ranges(streams, 1024 * 1024)
    assert len(full) == 95 and rest == 95 * 10_485


def test_subsets_and_merges_keep_stream_and_time_order() -> None:
    now = time.time_ns()
    [push] = encoder().build_records([rec(f"l{i}", now + i) for i in range(10)] +
                             [rec(f"e{i}", now + i, stream="stderr") for i in range(4)])
    left, right = push.subset(range(7)), push.subset(range(7, 14))
    assert len(left) == 7 and len(right) == 7
    odd = push.subset([1, 3, 12])
    [merged] = odd.merge([left.subset([0]), right.subset([6])])
    want = [b"l0", b"l1", b"l3", b"e2", b"e3"]
    assert [push.streams.lines[i] for i in merged.positions] == want
    decoded = decode_protobuf(merged.body())
    assert decoded.lines == want


def test_spool_entries_of_every_format_come_back() -> None:
    now = time.time_ns()
    batch = [rec("a", now, truncated=True), rec("b", now + 1)]
    for encoding in ("protobuf", "json"):
        [push] = encoder(encoding=encoding).build_records(batch)
        again = Push.from_spool(push.to_spool())
        assert again.encoding == encoding and again.body() == push.body()
        assert again.dead_letters(range(2)) == push.dead_letters(range(2))
    doc = {"streams": [{"stream": {"a": "1"}, "values": [["5", "x", {"k": "v"}]]}]}
    legacy = gzip.compress(json.dumps(doc).encode())
    old = Push.from_spool(legacy)
    assert old.encoding == "json" and old.body() == legacy
    assert old.dead_letters([0]) == [{"stream": {"a": "1"}, "ts": "5", "line": "x",
                                      "metadata": {"k": "v"}}]
    with pytest.raises(ValueError, match="not a spooled Loki push"):
        Push.from_spool(b"garbage")
    with pytest.raises(ValueError):
        Push.from_spool(b"loki-push protobuf+snappy\nnot snappy")
