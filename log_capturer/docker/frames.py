"""Splitting an Engine API log response into timestamped chunks.

Non-TTY containers: the body is multiplexed, each frame an 8-byte header
``[type, 0, 0, 0, size:uint32 big-endian]`` then ``size`` bytes. Type 1 is stdout,
2 stderr, 3 an error the daemon reports in-band after the 200 status.
TTY containers: the body is the raw stream, no framing.

With ``timestamps=1`` every message starts ``<RFC 3339> `` and ends with ``\\n``,
except a chunk of a line the engine split (over 16 KiB): such chunks carry exactly
16384 content bytes, no newline, and the first chunk's timestamp.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..timestamps import TimestampError, parse_docker_ts

HEADER = struct.Struct(">BxxxL")
STREAM_NAMES = {1: "stdout", 2: "stderr"}
ERROR_STREAM = 3
ENGINE_CHUNK_BYTES = 16384
_TS_MAX = 40  # longest timestamp prefix we look for a space in


class DaemonStreamError(Exception):
    """The engine reported an error inside a log stream (frame type 3)."""


class FrameError(Exception):
    """The body did not follow the multiplexed framing (corrupt or not multiplexed)."""


@dataclass(slots=True)
class Chunk:
    """One message the engine wrote: a whole line (``complete``) or a piece of a split line."""

    stream: str
    ts_ns: int
    ts_text: bytes
    data: bytes
    complete: bool


class ChunkParseStats:
    """Counts the engine's messages (``chunks``: a split line is several) and the lines
    whose timestamp could not be read (they keep the stream's last timestamp)."""

    __slots__ = ("bad_timestamps", "chunks")

    def __init__(self) -> None:
        self.bad_timestamps = 0
        self.chunks = 0


def _split_ts(segment: bytes) -> tuple[bytes, bytes] | None:
    space = segment.find(b" ", 0, _TS_MAX)
    if space <= 0:
        return None
    return segment[:space], segment[space + 1 :]


class _ChunkMaker:
    """Turns ``<ts> <content>`` segments into Chunks; shared by both decoders."""

    def __init__(self, stats: ChunkParseStats) -> None:
        self._stats = stats
        self._last: dict[str, tuple[int, bytes]] = {}

    def make(self, stream: str, segment: bytes, complete: bool) -> Chunk:
        self._stats.chunks += 1
        parts = _split_ts(segment)
        if parts is not None:
            try:
                ts_ns = parse_docker_ts(parts[0])
            except TimestampError:
                parts = None
            else:
                self._last[stream] = (ts_ns, parts[0])
                return Chunk(stream, ts_ns, parts[0], parts[1], complete)
        self._stats.bad_timestamps += 1
        ts_ns, ts_text = self._last.get(stream, (0, b"1970-01-01T00:00:00.000000000Z"))
        return Chunk(stream, ts_ns, ts_text, segment, complete)


class FrameDecoder:
    """Incremental decoder for the multiplexed body: feed bytes, get Chunks."""

    def __init__(self, stats: ChunkParseStats | None = None) -> None:
        self._buf = bytearray()
        self._maker = _ChunkMaker(stats or ChunkParseStats())

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def note_bulk(self, count: int, last: dict[str, bytes]) -> None:
        """``count`` one-chunk lines were decoded elsewhere (bulk.py): count them, and
        their timestamps (``last``: per stream, its last line's) are the streams' last."""
        self._maker._stats.chunks += count
        self._maker._last.update({s: (parse_docker_ts(t), t) for s, t in last.items()})

    def feed(self, data: bytes) -> Iterator[Chunk]:
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        try:
            while size - pos >= 8:
                kind, length = HEADER.unpack_from(buf, pos)
                if kind not in (0, 1, 2, 3) or buf[pos + 1 : pos + 4] != b"\0\0\0":
                    raise FrameError(f"bad frame header {bytes(buf[pos : pos + 8])!r}")
                end = pos + 8 + length
                if end > size:
                    break
                payload = bytes(buf[pos + 8 : end])
                pos = end
                if kind == ERROR_STREAM:
                    raise DaemonStreamError(payload.decode("utf-8", "replace").strip())
                if kind == 0 or not payload:
                    continue
                yield from self._chunks(STREAM_NAMES[kind], payload)
        finally:
            del buf[:pos]

    def _chunks(self, stream: str, payload: bytes) -> Iterator[Chunk]:
        # One frame is one message; a frame with several newlines is split defensively.
        start = 0
        while start < len(payload):
            nl = payload.find(b"\n", start)
            if nl < 0:
                yield self._maker.make(stream, payload[start:], False)
                return
            yield self._maker.make(stream, payload[start:nl], True)
            start = nl + 1


class RawDecoder:
    """Incremental decoder for a TTY container's raw body: feed bytes, get Chunks.

    Message ends are the newline, or 16384 content bytes for a line the engine split;
    the next piece must then start with the same timestamp. The terminal's ``\\r``
    before ``\\n`` is removed.
    """

    def __init__(self, stats: ChunkParseStats | None = None, stream: str = "tty") -> None:
        self._buf = bytearray()
        self._stream = stream
        self._maker = _ChunkMaker(stats or ChunkParseStats())

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> Iterator[Chunk]:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                space = buf.find(b" ", pos, pos + _TS_MAX)
                if space < 0:
                    if len(buf) - pos < _TS_MAX:
                        break  # timestamp not complete yet
                    space = pos - 1  # no timestamp at all: the maker counts it
                content_start = space + 1
                limit = content_start + ENGINE_CHUNK_BYTES
                nl = buf.find(b"\n", content_start, limit)
                if nl >= 0:
                    end = nl + 1
                    line = bytes(buf[pos:nl])
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    yield self._maker.make(self._stream, line, True)
                elif len(buf) >= limit:
                    end = limit
                    yield self._maker.make(self._stream, bytes(buf[pos:limit]), False)
                else:
                    break
                pos = end
        finally:
            del buf[:pos]

    def flush(self) -> Iterator[Chunk]:
        """At the end of a finished body: what is left is a last line without newline."""
        if self._buf:
            rest = bytes(self._buf)
            self._buf.clear()
            yield self._maker.make(self._stream, rest, False)
