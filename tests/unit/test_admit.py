"""Batch admission gives what admitting line by line gives: lines, seqs, marks, counts."""

from __future__ import annotations

import random

import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import Lines
from log_capturer.monitor.admit import StreamDedup, admit
from log_capturer.positions.marks import Mark
from log_capturer.timestamps import format_rfc3339_ns

INFO = ContainerInfo("a" * 64, "name", "image", {})
BASE = 1_700_000_000 * 1_000_000_000


def ts(n: int) -> bytes:
    return format_rfc3339_ns(BASE + n).encode()


def one_by_one(
    reads: list[Lines], dedups: dict[str, StreamDedup]
) -> list[tuple[str, bytes, bytes, int]]:
    out = []
    for lines in reads:
        for stream, stamp, message in zip(lines.streams, lines.stamps, lines.messages, strict=True):
            dedup = dedups.get(stream)
            if dedup is None:
                continue
            result = dedup.admit([stamp], [message], len(message))
            if result is None:
                out.append((stream, stamp, message, 1))
            elif result[0][0]:
                out.append((stream, stamp, message, result[1][0]))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_admitting_reads_equals_admitting_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(30):
        clock = {"stdout": 0, "stderr": 0}
        reads: list[Lines] = []
        for _ in range(rng.randrange(1, 6)):
            lines = Lines.empty()
            for _ in range(rng.randrange(1, 40)):
                stream = rng.choice(("stdout", "stdout", "stderr"))
                roll = rng.random()
                if roll < 0.05:
                    clock[stream] -= rng.randrange(1, 4)  # a step back
                elif roll < 0.7:
                    clock[stream] += rng.choice((1, 2))
                lines.streams.append(stream)
                lines.stamps.append(ts(max(clock[stream], 0)))
                lines.messages.append(rng.choice((b"a", b"b", b"c\\"))[: rng.randrange(3)])
            reads.append(lines)
        streams = rng.choice((("stdout",), ("stdout", "stderr"), ("stderr",)))
        start = {s: Mark(BASE + rng.randrange(5), rng.randrange(3)) for s in streams}
        want = one_by_one(reads, {s: StreamDedup(m) for s, m in start.items()})
        dedups = {s: StreamDedup(m) for s, m in start.items()}
        got: list[tuple[str, bytes, bytes, int]] = []
        marks = dict(start)
        for lines in reads:
            admitted = admit(lines, dedups, INFO)
            batch = admitted.batch
            if batch is None:
                assert admitted.lines == {}
                continue
            columns = (batch.streams, batch.lines.stamps, batch.lines.messages, batch.seq_list())
            got += zip(*columns, strict=True)
            assert batch.container is INFO
            for stream, count in admitted.lines.items():
                assert count == batch.streams.count(stream)
            assert set(batch.ends) == set(admitted.lines)
            marks.update(batch.ends)
        assert got == want
        assert marks == {s: max(start[s], dedups[s].mark) for s in streams}


def test_a_read_in_order_is_admitted_whole_without_copies() -> None:
    dedup = StreamDedup(Mark(BASE + 1, 1))
    first = Lines(["stdout"] * 2, [ts(1), ts(2)], [b"old", b"new"])
    assert admit(first, {"stdout": dedup}, INFO).batch is not None  # the window's first read
    second = Lines(["stdout"] * 3, [ts(3), ts(4), ts(5)], [b"x", b"y", b"z"])
    admitted = admit(second, {"stdout": dedup}, INFO)
    assert admitted.batch is not None
    assert admitted.batch.lines is second  # taken as it is
    assert admitted.batch.seq_list() == [1, 1, 1]
    assert admitted.batch.ends == {"stdout": Mark(BASE + 5, 1)}
    assert (admitted.lines, admitted.bytes) == ({"stdout": 3}, {"stdout": 3})


def test_lines_of_a_stream_not_asked_for_are_dropped() -> None:
    lines = Lines(["stdout", "stderr"], [ts(1), ts(1)], [b"o", b"e"])
    admitted = admit(lines, {"stderr": StreamDedup(Mark())}, INFO)
    assert admitted.batch is not None
    assert admitted.batch.lines.messages == [b"e"]
