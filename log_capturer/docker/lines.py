"""Whole log lines from the engine's chunks: split lines joined, oversized lines truncated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .frames import Chunk


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

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._pending: dict[str, _Pending] = {}

    @property
    def pending_bytes(self) -> int:
        return sum(p.size for p in self._pending.values())

    @property
    def has_pending(self) -> bool:
        """A split line is being joined (the bulk decoder's fast path must wait)."""
        return bool(self._pending)

    def add(self, chunk: Chunk) -> Iterator[LogLine]:
        pending = self._pending.get(chunk.stream)
        if pending is not None and pending.ts_ns != chunk.ts_ns:
            # A new message started: the previous one ended without a newline.
            del self._pending[chunk.stream]
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
        pending.append(chunk.data, self.max_line_bytes)
        if chunk.complete:
            del self._pending[chunk.stream]
            yield pending.finish()

    def flush(self) -> Iterator[LogLine]:
        """End of a finished body (the container stopped): unterminated lines are final."""
        pending, self._pending = self._pending, {}
        for item in pending.values():
            yield item.finish()

    def pending_ts(self) -> dict[str, int]:
        """Per stream, the timestamp of a line still incomplete (not yet delivered)."""
        return {stream: p.ts_ns for stream, p in self._pending.items()}

    def discard(self) -> int:
        """Drop incomplete lines; returns how many were dropped (they will be re-read)."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped
