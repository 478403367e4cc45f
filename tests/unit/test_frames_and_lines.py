"""Frame demultiplexing, TTY raw parsing, and the joining of lines the engine split."""

from __future__ import annotations

import calendar
import struct

import pytest

from log_capturer.docker.frames import (
    DaemonStreamError,
    FrameDecoder,
    FrameError,
    RawDecoder,
)
from log_capturer.docker.lines import LineAssembler, LogLine
from log_capturer.timestamps import format_rfc3339_ns, parse_docker_ts

TS1 = b"2026-11-23T12:13:10.147869933Z"
TS2 = b"2026-11-23T12:13:10.147929693Z"


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


def decode_all(decoder: FrameDecoder | RawDecoder, body: bytes, step: int) -> list[LogLine]:
    assembler = LineAssembler(max_line_bytes=10**7)
    out: list[LogLine] = []
    for i in range(0, len(body), step):
        for chunk in decoder.feed(body[i : i + step]):
            out.extend(assembler.add(chunk))
    return out


@pytest.mark.parametrize("step", [1, 3, 7, 8, 9, 64, 100000])
def test_frames_demultiplex_at_any_read_boundary(step: int) -> None:
    body = (
        frame(1, TS1 + b" hello\n")
        + frame(2, TS2 + b" oops\n")
        + frame(1, TS2 + b" \n")  # an empty line is a line
    )
    lines = decode_all(FrameDecoder(), body, step)
    assert [(ln.stream, ln.message) for ln in lines] == [
        ("stdout", b"hello"),
        ("stderr", b"oops"),
        ("stdout", b""),
    ]
    assert lines[0].ts_ns == parse_docker_ts(TS1)
    assert lines[0].ts_text == TS1


@pytest.mark.parametrize("step", [5, 4096, 10**6])
def test_split_line_chunks_are_joined_per_stream(step: int) -> None:
    big = bytes(range(97, 123)) * 2000  # 52000 bytes
    chunks = [big[i : i + 16384] for i in range(0, len(big), 16384)]
    body = b""
    for i, piece in enumerate(chunks):
        last = i == len(chunks) - 1
        body += frame(1, TS1 + b" " + piece + (b"\n" if last else b""))
        if i == 1:
            body += frame(2, TS2 + b" interleaved stderr\n")  # other stream between chunks
    lines = decode_all(FrameDecoder(), body, step)
    assert [(ln.stream, len(ln.message)) for ln in lines] == [("stderr", 18), ("stdout", 52000)]
    assert lines[1].message == big
    assert lines[1].ts_ns == parse_docker_ts(TS1)
    assert not lines[1].truncated


def test_daemon_error_frame_is_raised() -> None:
    decoder = FrameDecoder()
    with pytest.raises(DaemonStreamError, match="Error grabbing logs"):
        list(decoder.feed(frame(3, b"Error grabbing logs: bad file\n")))


def test_corrupt_header_is_an_error() -> None:
    with pytest.raises(FrameError):
        list(FrameDecoder().feed(b"\x07\x01\x00\x00\x00\x00\x00\x05hello"))


def test_line_without_timestamp_keeps_the_previous_one_and_is_counted() -> None:
    decoder = FrameDecoder()
    lines = decode_all(decoder, frame(1, TS1 + b" a\n") + frame(1, b"garbage\n"), 1000)
    assert [ln.message for ln in lines] == [b"a", b"garbage"]
    assert lines[1].ts_ns == lines[0].ts_ns
    assert decoder._maker._stats.bad_timestamps == 1


@pytest.mark.parametrize("step", [1, 13, 31, 16384, 10**6])
def test_tty_raw_stream_lines_and_split_lines(step: int) -> None:
    long = b"x" * 20000
    body = (
        TS1
        + b" first\r\n"
        + TS2
        + b" "
        + long[:16384]
        + TS2
        + b" "
        + long[16384:]
        + b"\r\n"
        + TS2
        + b" progress\rbar\r\n"
    )
    lines = decode_all(RawDecoder(), body, step)
    assert [(ln.stream, ln.message) for ln in lines] == [
        ("tty", b"first"),
        ("tty", long),
        ("tty", b"progress\rbar"),
    ]


def test_tty_flush_returns_last_line_without_newline() -> None:
    decoder = RawDecoder()
    assembler = LineAssembler(1000)
    assert list(decoder.feed(TS1 + b" no newline at exit")) == []
    lines = [ln for c in decoder.flush() for ln in assembler.add(c)]
    lines += list(assembler.flush())
    assert [ln.message for ln in lines] == [b"no newline at exit"]


def test_assembler_truncates_and_marks() -> None:
    assembler = LineAssembler(max_line_bytes=10)
    decoder = FrameDecoder()
    body = (
        frame(1, TS1 + b" " + b"a" * 16384)
        + frame(1, TS1 + b" bbb\n")
        + frame(1, TS2 + b" 0123456789AB\n")
    )
    lines = [ln for c in decoder.feed(body) for ln in assembler.add(c)]
    assert [(ln.message, ln.truncated) for ln in lines] == [
        (b"a" * 10, True),
        (b"0123456789", True),
    ]


def test_incomplete_line_is_discarded_for_reread_unless_flushed() -> None:
    assembler = LineAssembler(10**6)
    decoder = FrameDecoder()
    lines = [
        ln for c in decoder.feed(frame(1, TS1 + b" " + b"z" * 16384)) for ln in assembler.add(c)
    ]
    assert lines == []
    assert assembler.has_pending
    assert assembler.discard() == 1
    assert not assembler.has_pending


def test_timestamps_round_trip_and_generic_forms() -> None:
    ns = parse_docker_ts(TS1)
    assert ns == calendar.timegm((2026, 11, 23, 12, 13, 10, 0, 0, 0)) * 10**9 + 147869933
    assert format_rfc3339_ns(ns).encode() == TS1
    assert parse_docker_ts(b"2026-11-23T12:13:10Z") == (ns // 10**9) * 10**9
    assert parse_docker_ts(b"2026-11-23T13:13:10.5+01:00") == (ns // 10**9) * 10**9 + 500_000_000
