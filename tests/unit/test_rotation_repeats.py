"""What the engine sends when a json-file log rotates, and what must be delivered.

Issue 11, item 1. A followed json-file stream (``max-size``) re-sends, right after a
rotation, the last K lines it had already sent: the same bytes with the same
timestamps, K contiguous lines ending at the last line before the rotation, then it
goes on with the new lines. So within one stream the timestamps step back (or, for
K = 1, repeat the previous line's timestamp exactly). Measured here on Docker 20.10
(``benchmarks/rotation_repeats.py``, a plain follow stream of one container with
``max-size=1m, max-file=5``, 4 to 6 rotations a run, 60,000 lines of ~75 bytes or 6,000
of ~1 KB, in bursts of 10 to 60,000 lines): a repeat at most rotations (0 to 3 of 4
without one per run); K from 1 to 356 lines (up to 27 KB of short lines; 65 lines,
70 KB of 1 KB lines); the first repeated line 0 to 23 ms older than the newest line
sent (K lines of how fast they were written: for a slow writer, minutes); K = 1 (an
exact repeat of the previous line, no step back) in about half of the runs. Never a
repeat that was not such a suffix, never different bytes or timestamps.

A wall clock stepping back is the other cause of a timestamp going back within a
stream; its lines are new and must be delivered.

The scenarios are data (stream, timestamp, message) read by one request; ``admit``
maps them onto the admission API, so a new API only changes ``admit``. Each scenario
is also cut into socket reads at several points (a repeat can straddle two reads).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import Lines
from log_capturer.monitor.admit import StreamDedup
from log_capturer.monitor.admit import admit as admit_read
from log_capturer.positions.marks import ZERO, Mark
from log_capturer.timestamps import format_rfc3339_ns

INFO = ContainerInfo("a" * 64, "rotating", "image", {})
T0 = 1_795_000_000_000_000_000
Line = tuple[str, int, bytes]  # stream, timestamp ns, message

def admit(reads: list[list[Line]], marks: dict[str, Mark] | None = None) -> list[Line]:
    """What one request delivers of ``reads`` (its socket reads, in order), resuming
    from ``marks`` (per stream; the request's ``since`` is the oldest of them)."""
    streams = sorted({line[0] for read in reads for line in read} | set(marks or {}))
    dedups = {s: StreamDedup((marks or {}).get(s, ZERO)) for s in streams}
    out: list[Line] = []
    for read in reads:
        if not read:
            continue
        lines = Lines(
            [s for s, _, _ in read],
            [format_rfc3339_ns(ts).encode() for _, ts, _ in read],
            [message for _, _, message in read],
        )
        batch = admit_read(lines, dedups, INFO).batch
        if batch is not None:
            out += zip(batch.streams, batch.ts_ns(), batch.lines.messages, strict=True)
    return out


def cuts(lines: list[Line], points: int = 7) -> Iterator[list[list[Line]]]:
    """``lines`` as one read, then split into two reads at ``points`` places."""
    yield [lines]
    for n in range(1, points + 1):
        at = len(lines) * n // (points + 1)
        yield [lines[:at], lines[at:]]


def written(first: int, last: int, stream: str = "stdout", pad: int = 0) -> list[Line]:
    """Lines ``n first`` .. ``n last`` as the engine stamped them (0.5 ms apart)."""
    padding = b"p" * pad
    return [(stream, T0 + n * 500_000, b"n %d%s" % (n, padding)) for n in range(first, last + 1)]


@pytest.mark.parametrize(("k", "pad"), [(1, 0), (43, 0), (100, 0), (356, 0), (65, 1000)])
def test_the_last_k_lines_sent_again_after_a_rotation_are_delivered_once(
    k: int, pad: int
) -> None:
    lines = written(1, 400, pad=pad)
    stream = lines + lines[-k:] + written(401, 450, pad=pad)
    for reads in cuts(stream):
        assert admit(reads) == lines + written(401, 450, pad=pad), [len(r) for r in reads]


def test_a_repeat_of_the_last_line_alone_does_not_even_step_back() -> None:
    lines = written(1, 100)  # then line 100 again: the previous line's own timestamp
    for reads in cuts(lines + lines[-1:] + written(101, 110)):
        assert admit(reads) == written(1, 110)


def test_a_repeat_reaching_back_to_lines_the_inclusive_since_sent_again() -> None:
    """Reopened at the mark (line 100): the engine sends line 100 again (inclusive since,
    dropped), 101..150, then, at a rotation, 100..150 once more (the engine filters its
    repeat by ``since`` too, so it never reaches further back than line 100)."""
    mark = Mark(T0 + 100 * 500_000, 1)
    for reads in cuts(written(100, 150) + written(100, 150) + written(151, 160)):
        assert admit(reads, {"stdout": mark}) == written(101, 160)


def test_both_streams_repeat_the_suffix_of_the_shared_file() -> None:
    """stdout and stderr share one json-file log: the repeat is the file's last K lines,
    both streams mixed; each stream must get its own lines once, in order."""
    out, err = written(1, 300, "stdout"), written(1, 300, "stderr")
    shared = [line for pair in zip(out, err, strict=True) for line in pair]
    more = zip(written(301, 320), written(301, 320, "stderr"), strict=True)
    after = [line for pair in more for line in pair]
    for reads in cuts(shared + shared[-75:] + after):
        got = admit(reads)
        for stream in ("stdout", "stderr"):
            assert [x for x in got if x[0] == stream] == written(1, 320, stream)


def test_a_wall_clock_stepping_back_delivers_the_lines_it_stamps() -> None:
    """New lines, stamped up to 2 s earlier than the last one: all delivered, in order,
    even where their text equals an earlier line's (it is the timestamp and the bytes
    together that make a repeat)."""
    before = written(1, 50)
    back = T0 + 50 * 500_000 - 2_000_000_000
    after = [("stdout", back + n * 500_000, f"n {n}".encode()) for n in range(1, 31)]
    for reads in cuts(before + after):
        assert admit(reads) == before + after


def test_a_stream_without_rotation_is_untouched() -> None:
    lines = written(1, 500) + written(1, 500, "stderr")
    for reads in cuts(lines):
        assert admit(reads) == lines
