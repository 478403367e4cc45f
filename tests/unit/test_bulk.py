"""The bulk decoder gives exactly what the chunked, frame and line decoders give."""

from __future__ import annotations

import random
import struct

import pytest

from log_capturer.docker.bulk import BulkLineDecoder
from log_capturer.docker.chunked import ChunkedBodyError, ChunkedDecoder
from log_capturer.docker.frames import ChunkParseStats, FrameDecoder
from log_capturer.docker.lines import LineAssembler, Lines, LogLine
from log_capturer.timestamps import format_rfc3339_ns


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


def chunk(data: bytes, ext: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), ext, data)


def ts(rng: random.Random, second: int) -> bytes:
    return b"2026-11-23T12:%02d:%02d.%09dZ" % (second // 60 % 60, second % 60, rng.randrange(10**9))


def random_body(rng: random.Random, n: int) -> bytes:
    """A log body as the engine sends it, with every case the fast path must hand over."""
    wire = b""
    second = 0
    for _ in range(n):
        second += rng.random() < 0.05
        kind = rng.choice((1, 1, 1, 2))
        stamp = ts(rng, second)
        roll = rng.random()
        message = bytes(rng.choice(b"abc \t\r\xff\xc3\xa9\x00") for _ in range(rng.randint(0, 40)))
        if roll < 0.03:  # a line the engine split at 16 KiB
            big = bytes(rng.choice(b"xyz") for _ in range(rng.randint(16385, 40000)))
            pieces = [big[i : i + 16384] for i in range(0, len(big), 16384)]
            for i, piece in enumerate(pieces):
                end = b"\n" if i == len(pieces) - 1 else b""
                wire += chunk(frame(kind, stamp + b" " + piece + end))
        elif roll < 0.05:  # a frame across two chunks
            data = frame(kind, stamp + b" " + message + b"\n")
            cut = rng.randint(1, len(data) - 1)
            wire += chunk(data[:cut]) + chunk(data[cut:])
        elif roll < 0.07:  # two frames in one chunk
            wire += chunk(frame(kind, stamp + b" a\n") + frame(3 - kind, stamp + b" b\n"))
        elif roll < 0.08:  # a chunk extension
            wire += chunk(frame(kind, stamp + b" " + message + b"\n"), b";x=1")
        elif roll < 0.09:  # no timestamp / a date strptime refuses / a non-RFC 3339 one
            bad = rng.choice(
                (b"", b"garbage ", b"2026-13-45T12:00:00.000000000Z ", b"2026-11-23T12:00:00Z ")
            )
            wire += chunk(frame(kind, bad + message + b"\n"))
        elif roll < 0.10:  # a frame with a newline inside (split defensively)
            wire += chunk(frame(kind, stamp + b" one\ntwo\n"))
        elif roll < 0.11:  # upper-case hex size with leading zeros
            data = frame(kind, stamp + b" " + message + b"\n")
            wire += b"%06X\r\n%s\r\n" % (len(data), data)
        elif roll < 0.12:  # an empty frame, a type-0 frame
            wire += chunk(frame(kind, b"")) + chunk(frame(0, b"stdin?"))
        else:
            wire += chunk(frame(kind, stamp + b" " + message + b"\n"))
    if rng.random() < 0.5:  # a last line without newline (the container stopped)
        wire += chunk(frame(1, ts(rng, second) + b" the end"))
    return wire + b"0\r\n\r\n"


def essentials(lines: list[LogLine]) -> list[tuple[str, int, bytes, bool]]:
    """What a line is, whatever spelling of its timestamp the decoder kept."""
    return [(ln.stream, ln.ts_ns, ln.message, ln.truncated) for ln in lines]


def reference(wire: bytes, max_line: int) -> tuple[list[LogLine], int]:
    stats = ChunkParseStats()
    frames = FrameDecoder(stats)
    assembler = LineAssembler(max_line)
    out: list[LogLine] = []
    for c in frames.feed(ChunkedDecoder().feed(wire)):
        out.extend(assembler.add(c))
    out.extend(assembler.flush())
    return out, stats.bad_timestamps


def bulk(wire: bytes, max_line: int, rng: random.Random) -> tuple[list[LogLine], int, int, bool]:
    stats = ChunkParseStats()
    frames = FrameDecoder(stats)
    assembler = LineAssembler(max_line)
    decoder = BulkLineDecoder(frames, assembler)
    out = Lines.empty()
    pos = 0
    while pos < len(wire):
        step = rng.choice((1, 7, 100, 4096, 65536, 300000))
        out.extend(decoder.feed(wire[pos : pos + step]))
        pos += step
    done = decoder.done
    out.add_loglines(assembler.flush())
    lines = list(
        map(LogLine, out.streams, out.ts_ns(), out.stamps, out.messages, out.truncated_flags())
    )
    # Columns carry Docker's canonical spelling of each line's timestamp.
    assert [ln.ts_text for ln in lines] == [format_rfc3339_ns(ln.ts_ns).encode() for ln in lines]
    return lines, stats.bad_timestamps, decoder.fast_lines, done


@pytest.mark.parametrize("seed", range(30))
def test_bulk_equals_the_general_decoders(seed: int) -> None:
    rng = random.Random(seed)
    wire = random_body(rng, 600)
    max_line = rng.choice((10**6, 20, 20000))
    want, want_bad = reference(wire, max_line)
    got, got_bad, fast, done = bulk(wire, max_line, rng)
    assert essentials(got) == essentials(want)
    assert got_bad == want_bad
    assert done
    assert isinstance(got[0], LogLine)
    if max_line != 20:
        assert fast > 0  # the common case did take the fast path


def test_all_plain_lines_take_the_fast_path_at_any_boundary() -> None:
    rng = random.Random(1)
    lines = [frame(1 + i % 2, ts(rng, i // 100) + b" line %d\n" % i) for i in range(1000)]
    wire = b"".join(chunk(x) for x in lines) + b"0\r\n\r\n"
    for step in (1, 5, 333, 10**6):
        stats = ChunkParseStats()
        decoder = BulkLineDecoder(FrameDecoder(stats), LineAssembler(10**6))
        out = Lines.empty()
        for i in range(0, len(wire), step):
            out.extend(decoder.feed(wire[i : i + step]))
        assert out.messages == [b"line %d" % i for i in range(1000)]
        assert out.streams[:2] == ["stdout", "stderr"]
        assert out.truncated is None
        assert decoder.done
        if step > 1:
            assert decoder.fast_lines > 900


def test_a_line_without_timestamp_keeps_the_last_one_the_fast_path_saw() -> None:
    stamp = b"2026-11-23T12:13:10.147869933Z"
    wire = chunk(frame(1, stamp + b" first\n")) + chunk(frame(1, b"nots\n")) + b"0\r\n\r\n"
    decoder = BulkLineDecoder(FrameDecoder(), LineAssembler(100))
    out = decoder.feed(wire)
    stamped = list(zip(out.messages, out.stamps, strict=False))
    assert stamped == [(b"first", stamp), (b"nots", stamp)]
    assert decoder.fast_lines == 1


def test_malformed_chunks_are_still_errors() -> None:
    with pytest.raises(ChunkedBodyError):
        BulkLineDecoder(FrameDecoder(), LineAssembler(100)).feed(b"zz\r\nabc\r\n")
