"""Whole log lines straight from the raw chunked body, many per socket read, in C loops.

The engine writes every log message as its own HTTP chunk holding one frame:
``<hex size>\\r\\n`` + ``[1|2, 0, 0, 0, length]`` + ``<30-byte RFC 3339> <message>\\n``
+ ``\\r\\n``. Decoding that chunk by chunk, frame by frame, line by line in Python
costs several microseconds a line. Here one ``re.split`` over a socket read cuts
every such chunk into its columns (size, stream, length, timestamp, message) in C;
the sizes and lengths are then checked against the message lengths, also in C, so a
chunk is only taken when its size, its frame and its single trailing newline agree
exactly with what the chunked, frame and line decoders would have made of it.

Anything else (a line the engine split at 16 KiB, a frame across two chunks, a
chunk extension, a message with no timestamp, an over-long line, the last chunk) and
everything after it in the same read goes through those general decoders, which stay
the reference; the fast path resumes once they hold nothing (no partial chunk, frame
or split line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat

from ..timestamps import TimestampError, seconds_of
from .chunked import ChunkedBodyError, ChunkedDecoder
from .frames import ENGINE_CHUNK_BYTES, FrameDecoder
from .lines import LineAssembler, Lines

# One chunk = one frame = one line. Groups: size, stream kind, frame length, timestamp
# (and its seconds), message. DOTALL: the length is binary.
_CHUNK_LINE = re.compile(
    rb"([0-9a-fA-F]{1,8})\r\n([\x01\x02])\x00\x00\x00(.{4})"
    rb"((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{9}Z) ([^\n]*)\n\r\n",
    re.DOTALL,
)
_GROUPS = 6
_STEP = _GROUPS + 1  # re.split: the text before each match, then its groups
_CHUNK_OVERHEAD = 40  # 8 header + 30 timestamp + space + newline, beyond the message
_FRAME_OVERHEAD = 32  # timestamp + space + newline
_MATCH_OVERHEAD = 44  # chunk overhead + CRLF after the size + CRLF after the data
_STREAMS = {b"\x01": "stdout", b"\x02": "stderr"}
# By message length: the chunk size as the engine writes it (lower-case hex, no leading
# zeros) and the frame's length field (big-endian), for every message one chunk holds.
_HEX = [b"%x" % (n + _CHUNK_OVERHEAD) for n in range(ENGINE_CHUNK_BYTES + 1)]
_FRAME_LENGTH = [(n + _FRAME_OVERHEAD).to_bytes(4, "big") for n in range(ENGINE_CHUNK_BYTES + 1)]
# re.split scans at most this much at a time (larger than any one-line chunk), and after
# this many chunks the fast path does not take, the rest of a read goes the general way:
# a read of mixed chunks costs at most _MAX_GAPS fruitless scans of _WINDOW bytes.
_WINDOW = 256 * 1024
_MAX_GAPS = 16


class BulkLineDecoder:
    """Feed raw bytes of a chunked multiplexed log body, get whole lines.

    ``frames``/``assembler`` are the general decoders (their state is shared, so
    the two paths hand over exactly); ``done`` once the body's last chunk passed.
    """

    def __init__(self, frames: FrameDecoder, assembler: LineAssembler) -> None:
        self._frames = frames
        self._assembler = assembler
        self._chunks = ChunkedDecoder()
        self._rest = b""  # the start of a chunk not complete yet
        self.fast_lines = 0  # lines taken by the fast path (for tests and profiling)

    @property
    def done(self) -> bool:
        return self._chunks.done

    def feed(self, raw: bytes) -> Lines:
        data = self._rest + raw if self._rest else raw
        self._rest = b""
        out = Lines.empty()
        pos = 0
        size = len(data)
        gaps = _MAX_GAPS
        while pos < size:
            if not self._chunks.at_chunk_start:
                self._slow(data[pos:], out)  # in the middle of a chunk
                break
            if self._can_go_fast():
                used = self._fast(data[pos : pos + _WINDOW], out)
                if used:
                    pos += used
                    continue
            extent = self._chunk_extent(data, pos)
            if extent is None:
                self._rest = data[pos:]  # wait for the rest of this chunk
                break
            if not gaps:
                self._slow(data[pos:], out)
                break
            gaps -= 1
            # One chunk the fast path does not take, or cannot yet (a frame or line is
            # open): the general decoders, chunk by chunk until they hold nothing.
            self._slow(data[pos : pos + extent], out)
            pos += extent
        return out

    def _slow(self, data: bytes, out: Lines) -> None:
        for chunk in self._frames.feed(self._chunks.feed(data)):
            out.add_loglines(self._assembler.add(chunk))

    def _can_go_fast(self) -> bool:
        return (
            self._chunks.at_chunk_start
            and not self._frames.buffered
            and not self._assembler.has_pending
        )

    @staticmethod
    def _chunk_extent(data: bytes, pos: int) -> int | None:
        """Length of the chunk at ``pos``, None if it is not complete yet. The last chunk
        and a malformed size line take everything: the general decoder handles them."""
        end = data.find(b"\r\n", pos, pos + 4096)
        if end < 0:
            return None if len(data) - pos < 4096 else len(data) - pos
        try:
            size = int(data[pos:end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return len(data) - pos
        if size <= 0:
            return len(data) - pos
        extent = end + 2 + size + 2 - pos
        return extent if len(data) - pos >= extent else None

    def _fast(self, data: bytes, out: Lines) -> int:
        """Append the lines of the leading run of one-line chunks in ``data`` to ``out``;
        returns the run's length in bytes (0: none)."""
        parts = _CHUNK_LINE.split(data)
        if len(parts) == 1 or parts[0]:
            return 0
        # parts: [b"", size, kind, length, ts, seconds, message, between, size, ...]
        sizes = parts[1::_STEP]
        messages = parts[6::_STEP]
        lengths = list(map(len, messages))
        count = len(messages)
        used = sum(map(len, sizes)) + sum(lengths) + _MATCH_OVERHEAD * count
        if used + len(parts[-1]) != len(data):
            # Text between two matches (every "between" but the last, the tail, is empty
            # when the matches are contiguous): only the run before it counts.
            between = parts[_STEP::_STEP]
            count = list(map(bool, between)).index(True) + 1
            del sizes[count:], messages[count:], lengths[count:]
            used = sum(map(len, sizes)) + sum(lengths) + _MATCH_OVERHEAD * count
        try:  # the engine's own spelling of each size and frame length, from tables
            expected = list(map(_HEX.__getitem__, lengths))
            framed = list(map(_FRAME_LENGTH.__getitem__, lengths))
        except IndexError:  # a line longer than the engine puts in one message
            return 0
        frame_lengths = parts[3::_STEP]
        if len(frame_lengths) > count:
            del frame_lengths[count:]
        ok = count
        if sizes != expected:
            ok = _agreeing(sizes, expected)
        if frame_lengths != framed:
            ok = min(ok, _agreeing(frame_lengths, framed))
        if ok and max(lengths) > self._assembler.max_line_bytes:
            too_long = [n > self._assembler.max_line_bytes for n in lengths]
            ok = min(ok, _agreeing(too_long, [False] * ok))
        if ok == 0:
            return 0
        kinds = parts[2::_STEP]
        ts = parts[4::_STEP]
        seconds = parts[5::_STEP]
        if ok < len(kinds):
            del kinds[ok:], ts[ok:], seconds[ok:]
        if ok < count:
            del sizes[ok:], messages[ok:], lengths[ok:]
            count = ok
            used = sum(map(len, sizes)) + sum(lengths) + _MATCH_OVERHEAD * count
        try:  # a date strptime refuses goes the general way, which counts it
            for prefix in set(seconds):
                seconds_of(prefix)
        except TimestampError:
            return 0
        outs = kinds.count(b"\x01")
        if outs == count or outs == 0:  # one stream: the usual read
            out.streams += repeat("stdout" if outs else "stderr", count)
        else:
            out.streams += map(_STREAMS.__getitem__, kinds)
        out.stamps += ts
        out.messages += messages
        out.size += used - (_MATCH_OVERHEAD * count + sum(map(len, sizes)))
        if out.truncated is not None:
            out.truncated += repeat(False, count)
        self._frames.note_bulk(
            count, {_STREAMS[kind]: ts[i] for i, kind in _last_of_each(kinds)}
        )
        self.fast_lines += count
        return used


def _agreeing(got: Sequence[object], want: Sequence[object]) -> int:
    """How many leading items agree."""
    for index, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return index
    return min(len(got), len(want))


def _last_of_each(kinds: list[bytes]) -> list[tuple[int, bytes]]:
    """(index, kind) of the last line of each stream in ``kinds``."""
    out = []
    last = len(kinds) - 1
    for kind in set(kinds):
        out.append((last - kinds[::-1].index(kind), kind))
    return out


__all__ = ["BulkLineDecoder", "ChunkedBodyError"]
