"""Entries in columns, shared by the network sinks (Loki push, OTLP).

* :func:`gather` (:func:`gather_utf8`): the batches of one delivery -> each container
  stream's timestamps, texts (or their UTF-8 bytes) and cut flags, in columns (no object
  per line), each in timestamp order;
* :class:`Streams`: what a sink makes of them: per stream (a Loki stream, an OTLP
  resource and iostream) its labels, and per entry its timestamp, line and per-entry
  pairs (Loki's structured metadata, OTLP's log record attributes), stream after stream;
* :func:`split_ranges`: consecutive entries in requests of about ``batch_bytes``;
* :func:`cut_lines` (:func:`cut_utf8`): lines cut to a byte limit, valid UTF-8.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, compress, groupby, islice, repeat
from operator import add, eq, le, methodcaller
from typing import Any, Generic, Self, TypeVar

from ...discovery.container import ContainerInfo
from ...pipeline.batch import Batch
from .numeric import stamps_ns

Meta = tuple[tuple[str, str], ...]
"""Per-entry pairs (structured metadata, log attributes) of one entry, ``()`` for none."""

NO_META: Meta = ()
ENTRY_OVERHEAD = 24
"""Bytes of framing per entry in a request body (timestamp, lengths; JSON's quotes):
counted towards :data:`MAX_BODY_BYTES`, so a request of tiny lines stays below it."""
MAX_BODY_BYTES = 3 * 1024 * 1024
"""A request's lines, pairs and framing stay under this: Loki refuses decoded pushes over
4 MiB (a 500)."""

L = TypeVar("L", str, bytes)
"""A line: text (OTLP), or its UTF-8 bytes (Loki, which sends them as captured)."""


# -- the batches' columns, per container stream ----------------------------------------------


class StreamColumns(Generic[L]):
    """One container stream's entries gathered from several batches."""

    __slots__ = ("_stamps", "container", "stream", "texts", "truncated", "ts_ns")

    def __init__(self, container: ContainerInfo, stream: str) -> None:
        self.container = container
        self.stream = stream
        self.ts_ns: list[int] = []
        self.texts: list[L] = []
        self.truncated: list[bool] | None = None  # None: no line was cut
        self._stamps: list[bytes] = []  # Docker's stamps of the last texts, not yet in ts_ns

    def add(self, ts_ns: list[int] | None, stamps: list[bytes] | None, texts: list[L],
            truncated: list[bool] | None) -> None:
        """Append lines, their times as nanoseconds (``ts_ns``) or as Docker's canonical
        stamps (``stamps``, made nanoseconds at once for a whole delivery)."""
        if truncated is not None and self.truncated is None:
            self.truncated = [False] * len(self.texts)
        if self.truncated is not None:
            self.truncated += truncated if truncated is not None else [False] * len(texts)
        if ts_ns is not None:
            self._convert()
            self.ts_ns += ts_ns
        else:
            assert stamps is not None
            self._stamps += stamps
        self.texts += texts

    def _convert(self) -> None:
        if self._stamps:
            self.ts_ns += stamps_ns(self._stamps)
            self._stamps = []

    def in_order(self) -> None:
        """Timestamp order (kept for equal timestamps), if a clock step broke it."""
        self._convert()
        if all(map(le, self.ts_ns, islice(self.ts_ns, 1, None))):
            return
        order = sorted(range(len(self.ts_ns)), key=self.ts_ns.__getitem__)
        self.ts_ns = [self.ts_ns[i] for i in order]
        self.texts = [self.texts[i] for i in order]
        if self.truncated is not None:
            self.truncated = [self.truncated[i] for i in order]


def gather(batches: Sequence[Batch]) -> list[StreamColumns[str]]:
    """Each container stream's lines of ``batches``, in timestamp order, a container's
    streams next to each other (containers in order of first appearance)."""
    return _gather(batches, methodcaller("texts"))


def gather_utf8(batches: Sequence[Batch]) -> list[StreamColumns[bytes]]:
    """As :func:`gather`, each line as valid UTF-8 bytes (:meth:`Batch.utf8`)."""
    return _gather(batches, methodcaller("utf8"))


def _gather(batches: Sequence[Batch], texts_of: Callable[[Batch], list[L]]
            ) -> list[StreamColumns[L]]:
    gathered: dict[str, dict[str, StreamColumns[L]]] = {}
    for batch in batches:
        names = batch.streams
        stamps = batch.stamps()
        ts_ns = batch.ts_ns() if stamps is None else None
        texts = texts_of(batch)
        flags = batch.truncated_flags()
        cut: list[bool] | None = flags if any(flags) else None
        container = batch.container
        own = gathered.setdefault(container.id, {})
        for stream in dict.fromkeys(names):  # in order of first appearance
            columns = own.get(stream)
            if columns is None:
                columns = own[stream] = StreamColumns(container, stream)
            if names.count(stream) == len(names):
                columns.add(ts_ns, stamps, texts, cut)
                continue
            mine = list(map(eq, names, repeat(stream)))
            columns.add(
                None if ts_ns is None else list(compress(ts_ns, mine)),
                None if stamps is None else list(compress(stamps, mine)),
                list(compress(texts, mine)),
                None if cut is None else list(compress(cut, mine)),
            )
    out = [columns for own in gathered.values() for columns in own.values()]
    for columns in out:
        columns.in_order()
    return out


# -- a sink's entries, stream after stream ----------------------------------------------------


@dataclass(slots=True)
class Streams(Generic[L]):
    """Entries in columns, stream after stream; each stream's entries in timestamp order;
    lines as text or as UTF-8 bytes (``L``), as the sink sends them."""

    labels: list[dict[str, str]] = field(default_factory=list)  # per stream
    texts: list[str] = field(default_factory=list)  # per stream: its key (Loki's spelling)
    starts: list[int] = field(default_factory=list)  # per stream: its first entry
    stream_of: list[int] = field(default_factory=list)  # per entry
    ts_ns: list[int] = field(default_factory=list)
    lines: list[L] = field(default_factory=list)
    meta: list[Meta] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    """Per stream: bytes the server adds to each of its entries, counted as the entry's
    (OTLP into Loki: the resource attributes Loki stores as every line's structured
    metadata)."""

    def __len__(self) -> int:
        return len(self.ts_ns)

    def add(
        self,
        labels: dict[str, str],
        ts_ns: Sequence[int],
        lines: Sequence[L],
        meta: Sequence[Meta],
        text: str = "",
        extra: int = 0,
    ) -> None:
        """Append one stream's entries (columns of equal length, in timestamp order);
        ``text`` is the stream's key (the Loki sink: its labels in Loki's spelling),
        ``extra`` what the server adds to each entry (:attr:`extra`)."""
        if not ts_ns:
            return
        index = len(self.labels)
        self.labels.append(labels)
        self.texts.append(text)
        self.extra.append(extra)
        self.starts.append(len(self.ts_ns))
        self.stream_of.extend([index] * len(ts_ns))
        self.ts_ns.extend(ts_ns)
        self.lines.extend(lines)
        self.meta.extend(meta)

    def tail(self, start: int) -> Self:
        """A new instance holding copies of the entries from ``start`` on, in this order."""
        out = type(self)()
        for stream, ts_ns, lines, meta in self.groups(range(start, len(self))):
            out.add(self.labels[stream], ts_ns, lines, meta, self.texts[stream],
                    self.extra[stream])
        return out

    def without_metadata(self) -> Self:
        return type(self)(
            self.labels,
            self.texts,
            self.starts,
            self.stream_of,
            self.ts_ns,
            self.lines,
            [NO_META] * len(self.ts_ns),
            self.extra,
        )

    def groups(
        self, positions: Sequence[int]
    ) -> Iterator[tuple[int, Sequence[int], Sequence[L], Sequence[Meta]]]:
        """``(stream, timestamps, lines, metadata)`` of the entries at ``positions``."""
        if isinstance(positions, range) and positions.step == 1:
            start, stop = positions.start, positions.stop
            if start >= stop:
                return
            first = self.stream_of[start]
            last = self.stream_of[stop - 1]
            for stream in range(first, last + 1):
                lo = max(start, self.starts[stream])
                hi = stop if stream == last else self.starts[stream + 1]
                yield stream, self.ts_ns[lo:hi], self.lines[lo:hi], self.meta[lo:hi]
            return
        for stream, group in groupby(positions, key=self.stream_of.__getitem__):
            ids = list(group)
            yield (
                stream,
                [self.ts_ns[i] for i in ids],
                [self.lines[i] for i in ids],
                [self.meta[i] for i in ids],
            )


def split_ranges(
    streams: Streams[Any], batch_bytes: int, max_bytes: int | None = None
) -> list[range]:
    """Consecutive entries in requests of about ``batch_bytes`` each: see
    :func:`full_ranges`; the last range may be smaller."""
    full, rest = full_ranges(streams, batch_bytes, max_bytes)
    if rest < len(streams):
        full.append(range(rest, len(streams)))
    return full


def full_ranges(
    streams: Streams[Any], batch_bytes: int, max_bytes: int | None = None
) -> tuple[list[range], int]:
    """Consecutive entries cut into requests as Promtail cuts its batches, and where the
    rest (too small for one) starts.

    A request holds ``batch_bytes`` of lines and per-entry pairs, with what the server
    adds to each entry (:attr:`Streams.extra`) (what Promtail's ``batchsize`` and Loki's
    ingestion rate limit count: no framing, before compression)
    or less when the next entry would not fit; also at most ``max_bytes``
    (:data:`MAX_BODY_BYTES`) with :data:`ENTRY_OVERHEAD` of framing per entry, so a request
    of tiny lines stays under what the server decodes. An entry larger than that goes
    alone."""
    n = len(streams)
    if not n:
        return [], 0
    limit = MAX_BODY_BYTES if max_bytes is None else max_bytes
    costs: Iterable[int]
    if any(streams.meta):
        costs = (
            len(line) + sum(len(k) + len(v) for k, v in meta)
            for line, meta in zip(streams.lines, streams.meta, strict=True)
        )
    else:
        costs = map(len, streams.lines)
    if any(streams.extra):
        costs = map(add, costs, map(streams.extra.__getitem__, streams.stream_of))
    totals = list(accumulate(costs))
    framed: list[int] | None = None  # totals with framing, when it can matter
    if totals[-1] + n * ENTRY_OVERHEAD > limit:
        framed = list(map(add, totals, range(ENTRY_OVERHEAD, (n + 1) * ENTRY_OVERHEAD,
                                             ENTRY_OVERHEAD)))
    out = []
    start = 0
    while start < n:
        done = totals[start - 1] if start else 0
        stop = bisect_right(totals, done + batch_bytes, lo=start)
        if framed is not None:
            done_framed = framed[start - 1] if start else 0
            stop = min(stop, bisect_right(framed, done_framed + limit, lo=start))
        if stop >= n:  # everything left fits: not full (unless exactly)
            break
        stop = max(start + 1, stop)
        out.append(range(start, stop))
        start = stop
    return out, start


def cut_lines(messages: list[str], limit: int) -> tuple[list[str], list[bool] | None]:
    """Lines cut to ``limit`` bytes of UTF-8 (0: no limit), and which were (None: none)."""
    if not limit or not messages or max(map(len, messages)) * 4 <= limit:
        return messages, None  # no line can exceed the limit: skip encoding
    lines = list(messages)
    cut = [False] * len(lines)
    for i, text in enumerate(messages):
        if len(text) * 4 <= limit:
            continue
        data = text.encode("utf-8", "replace")
        if len(data) > limit:
            lines[i] = data[:limit].decode("utf-8", "ignore")
            cut[i] = True
    return lines, cut if any(cut) else None


def cut_utf8(lines: list[bytes], limit: int) -> tuple[list[bytes], list[bool] | None]:
    """Lines of valid UTF-8 cut to ``limit`` bytes (0: no limit), a character never split,
    and which were (None: none)."""
    if not limit or not lines or max(map(len, lines)) <= limit:
        return lines, None
    out = list(lines)
    cut = [False] * len(lines)
    for i, data in enumerate(lines):
        if len(data) > limit:
            out[i] = data[:limit].decode("utf-8", "ignore").encode()
            cut[i] = True
    return out, cut


# -- payloads as positions into Streams ------------------------------------------------------


def sub_positions(own: Sequence[int], positions: Sequence[int]) -> Sequence[int]:
    """The entries at ``positions`` (ascending) of a payload holding ``own``; a range
    stays a range."""
    if isinstance(own, range) and isinstance(positions, range) and positions.step == 1:
        return own[positions.start : positions.stop]
    return [own[i] for i in positions]


S = TypeVar("S", bound=Streams[Any])


def merge_positions(parts: Sequence[tuple[S, Sequence[int]]]) -> list[tuple[S, list[int]]]:
    """Payload parts as few as possible: one per :class:`Streams`, each entry once, in
    order."""
    by_root: dict[int, tuple[S, set[int]]] = {}
    for streams, positions in parts:
        by_root.setdefault(id(streams), (streams, set()))[1].update(positions)
    return [(streams, sorted(ids)) for streams, ids in by_root.values()]


def sample_timestamps(
    streams: Streams[Any], positions: Sequence[int], samples: int = 20
) -> list[int]:
    """Timestamps of a few entries spread over ``positions`` (for the delivery lag)."""
    return [streams.ts_ns[i] for i in positions[:: max(1, len(positions) // samples)]]


def dead_letter_docs(
    streams: Streams[Any], own: Sequence[int], positions: Sequence[int], keys: tuple[str, str, str]
) -> list[dict[str, Any]]:
    """One JSON object per entry at ``positions`` of a payload whose entries are ``own``
    (positions into ``streams``), as the sink names them: ``keys`` are the names of the
    stream's labels, the line and the per-entry pairs (the last only when there are any)."""
    stream_key, line_key, meta_key = keys
    docs = []
    for p in positions:
        i = own[p]
        line = streams.lines[i]
        doc: dict[str, Any] = {
            stream_key: streams.labels[streams.stream_of[i]],
            "ts": str(streams.ts_ns[i]),
            line_key: line.decode() if isinstance(line, bytes) else line,
        }
        if streams.meta[i]:
            doc[meta_key] = dict(streams.meta[i])
        docs.append(doc)
    return docs
