"""Batch admission gives what the line-by-line loop gave: records, seqs, marks, counts."""

from __future__ import annotations

import random

import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import LogLine
from log_capturer.monitor.admit import admit_batch
from log_capturer.monitor.marks import Mark, StreamDedup
from log_capturer.pipeline.record import LogRecord

INFO = ContainerInfo("a" * 64, "name", "image", {})


@pytest.mark.parametrize("seed", range(10))
def test_admit_batch_equals_admitting_line_by_line(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        clock = {"stdout": 0, "stderr": 0, "tty": 0}
        lines = []
        for _ in range(rng.randrange(40)):
            stream = rng.choice(("stdout", "stderr", "tty"))
            clock[stream] += rng.choice((0, 0, 1, 2))
            message = bytes([rng.randrange(256)]) * rng.randrange(3)
            lines.append(LogLine(stream, clock[stream], b"ts", message, rng.random() < 0.1))
        streams = rng.choice((("stdout",), ("stdout", "stderr"), ("stderr",)))
        start = {s: Mark(rng.randrange(5), rng.randrange(3)) for s in streams}
        one = {s: StreamDedup(m) for s, m in start.items()}
        many = {s: StreamDedup(m) for s, m in start.items()}
        want = []
        want_sizes = []
        for line in lines:
            dedup = one.get(line.stream)
            seq = dedup.admit(line.ts_ns) if dedup is not None else None
            if seq is not None:
                want_sizes.append(len(line.message))
                want.append(
                    LogRecord(
                        INFO,
                        line.stream,
                        line.ts_ns,
                        seq,
                        line.ts_text.decode(),
                        line.message.decode("utf-8", "replace"),
                        line.truncated,
                    )
                )
        got = admit_batch(lines, many, INFO)
        assert got.records == want
        assert got.sizes == want_sizes
        marks = dict(start)
        counts: dict[str, int] = {}
        sizes: dict[str, int] = {}
        handled = rng.randrange(len(want) + 1)
        truncated = got.commit(handled, many, marks, counts, sizes)
        for stream in streams:
            taken = [r for r in want[:handled] if r.stream == stream]
            expected = max([start[stream], *(Mark(r.ts_ns, r.seq) for r in taken)])
            assert marks[stream] == expected
            assert counts.get(stream, 0) == len(taken)
        assert truncated == sum(r.truncated for r in want[:handled])


def test_admit_all_matches_admit_line_by_line() -> None:
    rng = random.Random(7)
    for _ in range(200):
        timestamps = sorted(rng.randrange(20) for _ in range(rng.randrange(30)))
        if rng.random() < 0.3 and timestamps:  # the clock stepped back
            timestamps.insert(rng.randrange(len(timestamps)), rng.randrange(20))
        mark = Mark(rng.randrange(22), rng.randrange(4))
        one, many = StreamDedup(mark), StreamDedup(mark)
        cut = rng.randrange(len(timestamps) + 1)  # two runs: the state carries over
        want = [one.admit(ts) for ts in timestamps]
        got = many.admit_all(timestamps[:cut]) + many.admit_all(timestamps[cut:])
        assert got == want
        assert (many.mark, many.dropped, many.clock_backwards) == (
            one.mark,
            one.dropped,
            one.clock_backwards,
        )
