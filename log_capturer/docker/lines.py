"""Whole log lines from the engine's chunks: split lines joined, oversized lines truncated."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import compress
from operator import itemgetter
from typing import NamedTuple

from ..buffers import LINE_OVERHEAD, BufferBudget, Kind
from ..timestamps import format_rfc3339_ns, seconds_of
from .frames import Chunk

TS_BYTES = 30  # Docker's RFC 3339 with nine fraction digits: "2006-01-02T15:04:05.000000000Z"
_seconds_of = itemgetter(slice(0, 19))  # a timestamp's YYYY-MM-DDTHH:MM:SS
_fraction_of = itemgetter(slice(20, 29))  # its nine fraction digits


class LogLine(NamedTuple):
    """One complete line of one stream, with the Docker timestamp of its first byte.

    A tuple: the bulk decoder (bulk.py) builds hundreds per socket read in C
    (``tuple.__new__`` over zipped columns), and unpacking one is cheap.
    """

    stream: str
    ts_ns: int
    ts_text: bytes
    message: bytes
    truncated: bool


class Lines:
    """The whole lines of one socket read, as columns: one list per field, in read order.

    ``stamps`` holds Docker's canonical timestamps (30 bytes, nine fraction digits, UTC),
    which sort as the times they stand for, so ordering and dedup compare them as
    bytes and nanoseconds are computed only where a consumer needs them. ``truncated``
    is None when no line was cut (always, on the bulk decoder's fast path).
    """

    __slots__ = ("messages", "size", "stamps", "streams", "truncated")

    def __init__(
        self,
        streams: list[str],
        stamps: list[bytes],
        messages: list[bytes],
        truncated: list[bool] | None = None,
        size: int | None = None,
    ) -> None:
        self.streams = streams
        self.stamps = stamps
        self.messages = messages
        self.truncated = truncated
        self.size = sum(map(len, messages)) if size is None else size
        """Message bytes."""

    def __len__(self) -> int:
        return len(self.messages)

    def __bool__(self) -> bool:
        return bool(self.messages)

    @classmethod
    def empty(cls) -> Lines:
        return cls([], [], [], None, 0)

    def select(self, keep: list[bool]) -> Lines:
        """The lines whose ``keep`` is True, in order."""
        return Lines(
            list(compress(self.streams, keep)),
            list(compress(self.stamps, keep)),
            list(compress(self.messages, keep)),
            None if self.truncated is None else list(compress(self.truncated, keep)),
        )

    def extend(self, other: Lines) -> None:
        """Append ``other``'s lines after these."""
        if other.truncated is not None and self.truncated is None:
            self.truncated = [False] * len(self.messages)
        self.streams += other.streams
        self.stamps += other.stamps
        self.messages += other.messages
        self.size += other.size
        if self.truncated is not None:
            self.truncated += other.truncated or [False] * len(other.messages)

    def add_loglines(self, lines: Iterable[LogLine]) -> None:
        """Append lines from the general decoders (their timestamps made canonical)."""
        for stream, ts_ns, ts_text, message, truncated in lines:
            if len(ts_text) != TS_BYTES:
                ts_text = format_rfc3339_ns(ts_ns).encode()
            self.streams.append(stream)
            self.stamps.append(ts_text)
            self.messages.append(message)
            self.size += len(message)
            if truncated and self.truncated is None:
                self.truncated = [False] * (len(self.messages) - 1)
            if self.truncated is not None:
                self.truncated.append(truncated)

    @classmethod
    def of(cls, lines: Iterable[LogLine]) -> Lines:
        """Columns of the general decoders' lines."""
        out = cls.empty()
        out.add_loglines(lines)
        return out

    def ts_ns(self) -> list[int]:
        """Nanoseconds of every line (computed on demand)."""
        return ts_ns_of(self.stamps)

    def truncated_flags(self) -> list[bool]:
        return self.truncated if self.truncated is not None else [False] * len(self.messages)



def ts_ns_of(ts: list[bytes]) -> list[int]:
    """Nanoseconds of canonical Docker timestamps, in C-level passes (seconds cached)."""
    seconds: list[bytes] = list(map(_seconds_of, ts))
    at = {prefix: seconds_of(prefix) * 1_000_000_000 for prefix in set(seconds)}
    fractions: Iterator[bytes] = map(_fraction_of, ts)
    return list(map(int.__add__, map(at.__getitem__, seconds), map(int, fractions)))


class _Pending:
    __slots__ = ("parts", "size", "stream", "truncated", "ts_ns", "ts_text")

    def __init__(self, chunk: Chunk) -> None:
        self.stream = chunk.stream
        self.ts_ns = chunk.ts_ns
        self.ts_text = chunk.ts_text
        self.parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def append(self, data: bytes, limit: int) -> None:
        room = limit - self.size
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self.parts.append(data)
            self.size += len(data)

    def finish(self) -> LogLine:
        return LogLine(self.stream, self.ts_ns, self.ts_text, b"".join(self.parts), self.truncated)


class LineAssembler:
    """Joins the chunks of lines the engine split, per stream; caps lines at ``max_line_bytes``.

    Only the last chunk of a split line ends with a newline, and all its chunks carry
    the first chunk's timestamp. A line still incomplete when a window closes is
    ``discard``-ed: the next window re-reads it whole from its timestamp.
    """

    def __init__(self, max_line_bytes: int, buffers: BufferBudget | None = None) -> None:
        self.max_line_bytes = max_line_bytes
        self._pending: dict[str, _Pending] = {}
        self._buffers = buffers  # counts the lines being joined (kind "partial"), if given

    @property
    def has_pending(self) -> bool:
        """A split line is being joined (the bulk decoder's fast path must wait)."""
        return bool(self._pending)

    def add(self, chunk: Chunk) -> Iterator[LogLine]:
        pending = self._pending.get(chunk.stream)
        if pending is not None and pending.ts_ns != chunk.ts_ns:
            # A new message started: the previous one ended without a newline.
            del self._pending[chunk.stream]
            self._count(-pending.size - LINE_OVERHEAD)
            yield pending.finish()
            pending = None
        if pending is None:
            if chunk.complete:
                data = chunk.data
                truncated = len(data) > self.max_line_bytes
                if truncated:
                    data = data[: self.max_line_bytes]
                yield LogLine(chunk.stream, chunk.ts_ns, chunk.ts_text, data, truncated)
                return
            pending = self._pending[chunk.stream] = _Pending(chunk)
            self._count(LINE_OVERHEAD)
        before = pending.size
        pending.append(chunk.data, self.max_line_bytes)
        self._count(pending.size - before)
        if chunk.complete:
            del self._pending[chunk.stream]
            self._count(-pending.size - LINE_OVERHEAD)
            yield pending.finish()

    def _count(self, size: int) -> None:
        if self._buffers is not None:
            self._buffers.add(Kind.PARTIAL, size)

    def _drop_all(self) -> dict[str, _Pending]:
        pending, self._pending = self._pending, {}
        self._count(-sum(p.size + LINE_OVERHEAD for p in pending.values()))
        return pending

    def flush(self) -> Iterator[LogLine]:
        """End of a finished body (the container stopped): unterminated lines are final."""
        for item in self._drop_all().values():
            yield item.finish()

    def pending_ts(self) -> dict[str, int]:
        """Per stream, the timestamp of a line still incomplete (not yet delivered)."""
        return {stream: p.ts_ns for stream, p in self._pending.items()}

    def discard(self) -> int:
        """Drop incomplete lines; returns how many were dropped (they will be re-read)."""
        return len(self._drop_all())
