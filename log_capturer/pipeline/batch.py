"""What travels from a monitor to the sinks: new lines of one container, as columns.

A :class:`LineBatch` is one socket read's new lines: no object per line, only lists
(stream names, Docker timestamps, raw messages) shared with the decoder. A monitor
queues it whole, the dispatcher hands batches to every sink, each sink encodes a batch
at once, and acknowledging it moves each stream's position to its ``ends``.

A :class:`RecordBatch` holds :class:`~.record.LogRecord` objects: what comes out of the
stages (multiline, parse_json, redact), which work line by line. Sinks see both kinds
through the same accessors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from itertools import compress
from operator import attrgetter
from typing import TypeVar

from ..discovery.container import ContainerInfo
from ..docker.lines import Lines, ts_ns_of
from ..positions.marks import Mark, seqs_of
from ..timestamps import parse_docker_ts
from .jsonl import lines_jsonl, record_json
from .record import LogRecord

LAG_SAMPLES = 20
"""Lines of a delivery (or a push) whose delivery lag is observed: a sample is enough for the
histogram, and keeps it off the hot path."""

T = TypeVar("T")


def lag_sample(values: Sequence[T]) -> Sequence[T]:
    """About :data:`LAG_SAMPLES` of ``values``, spread over them."""
    return values[:: max(1, len(values) // LAG_SAMPLES)]


class Batch(ABC):
    """Lines of one container, in the order read; the unit of queueing, delivery and
    acknowledgement."""

    __slots__ = ("container", "ends", "size")

    container: ContainerInfo
    ends: dict[str, Mark]
    """Per stream, the position of its last line here: acknowledging the batch covers
    every line of the stream up to it."""
    size: int
    """Message bytes (what the queue's byte bound counts)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def streams(self) -> list[str]: ...

    @abstractmethod
    def ts_ns(self) -> list[int]: ...

    @abstractmethod
    def texts(self) -> list[str]:
        """Each message as text (invalid UTF-8 replaced)."""

    @abstractmethod
    def truncated_flags(self) -> list[bool]: ...

    @abstractmethod
    def positions(self) -> list[tuple[int, int]]:
        """Per line, the position ``(ts_ns, seq)`` of the last source line it holds."""

    @abstractmethod
    def jsonl(self) -> bytes:
        """The record format (jsonl.py), one line each, every line ended by a newline."""

    @abstractmethod
    def records(self) -> list[LogRecord]:
        """As objects, for the stages."""

    @abstractmethod
    def select(self, keep: list[bool]) -> Batch | None:
        """The lines where ``keep`` is true (None if none), with this batch's ``ends``."""

    def ts_texts(self) -> list[str]:
        """Docker's timestamp text of each line."""
        return [r.ts for r in self.records()]

    def stamps(self) -> list[bytes] | None:
        """Docker's canonical timestamp of each line (see ``Lines``), or None when the
        batch holds nanoseconds only (:meth:`ts_ns`)."""
        return None

    def utf8(self) -> list[bytes]:
        """Each message as valid UTF-8 (invalid sequences replaced, as :meth:`texts`)."""
        return [text.encode("utf-8", "replace") for text in self.texts()]

    def sample_ts_ns(self, start: int, step: int) -> list[int]:
        """Timestamps of lines ``start``, ``start + step``... (for the delivery lag)."""
        return self.ts_ns()[start::step]


class LineBatch(Batch):
    """New lines of one socket read, as the decoder's columns.

    ``seqs`` (each line's index among its stream's lines with the same timestamp) is
    None when it follows from the timestamps alone: every stream's first line here
    starts a new timestamp, so a line's seq is one more than the run of equal
    timestamps before it in its stream. Admission gives explicit seqs otherwise.
    """

    __slots__ = ("_ts_ns", "lines", "seqs")

    def __init__(
        self,
        container: ContainerInfo,
        lines: Lines,
        ends: dict[str, Mark],
        seqs: list[int] | None = None,
        size: int | None = None,
    ) -> None:
        self.container = container
        self.lines = lines
        self.ends = ends
        self.seqs = seqs
        self.size = sum(map(len, lines.messages)) if size is None else size
        self._ts_ns: list[int] | None = None

    def __len__(self) -> int:
        return len(self.lines.messages)

    @property
    def streams(self) -> list[str]:
        return self.lines.streams

    def ts_ns(self) -> list[int]:
        if self._ts_ns is None:
            self._ts_ns = ts_ns_of(self.lines.stamps)
        return self._ts_ns

    def ts_texts(self) -> list[str]:
        return [t.decode("ascii") for t in self.lines.stamps]

    def sample_ts_ns(self, start: int, step: int) -> list[int]:
        if self._ts_ns is not None:
            return super().sample_ts_ns(start, step)
        return list(map(parse_docker_ts, self.lines.stamps[start::step]))

    def texts(self) -> list[str]:
        return [m.decode("utf-8", "replace") for m in self.lines.messages]

    def stamps(self) -> list[bytes]:
        return self.lines.stamps

    def utf8(self) -> list[bytes]:
        messages = self.lines.messages
        # Joined by a newline (ASCII), a sequence cut at one message's end cannot pass for
        # whole with the next message's first bytes.
        joined = b"\n".join(messages)
        if not joined.isascii():
            try:
                joined.decode("utf-8")
            except UnicodeDecodeError:
                return [m.decode("utf-8", "replace").encode() for m in messages]
        return messages

    def truncated_flags(self) -> list[bool]:
        return self.lines.truncated_flags()

    def seq_list(self) -> list[int]:
        if self.seqs is not None:
            return self.seqs
        return seqs_of(self.lines.streams, self.lines.stamps)

    def positions(self) -> list[tuple[int, int]]:
        return list(zip(self.ts_ns(), self.seq_list(), strict=True))

    def jsonl(self) -> bytes:
        lines = self.lines
        return lines_jsonl(
            self.container, lines.streams, lines.stamps, lines.messages, lines.truncated
        )

    def records(self) -> list[LogRecord]:
        container = self.container
        return [
            LogRecord(container, stream, ts_ns, seq, ts, text, truncated)
            for stream, ts_ns, seq, ts, text, truncated in zip(
                self.lines.streams,
                self.ts_ns(),
                self.seq_list(),
                self.ts_texts(),
                self.texts(),
                self.truncated_flags(),
                strict=True,
            )
        ]

    def select(self, keep: list[bool]) -> LineBatch | None:
        if all(keep):
            return self
        if not any(keep):
            return None
        kept = self.lines.select(keep)
        return LineBatch(self.container, kept, self.ends, list(compress(self.seq_list(), keep)))


_end_position = attrgetter("end_position")
_stream_of = attrgetter("stream")


class RecordBatch(Batch):
    """Records of one container (what the stages give), in order."""

    __slots__ = ("_records",)

    def __init__(self, container: ContainerInfo, records: list[LogRecord]) -> None:
        self.container = container
        self._records = records
        self.size = sum(len(r.message) for r in records)
        ends: dict[str, Mark] = {}
        for record in records:
            end = Mark(*record.end_position)
            if record.stream not in ends or end > ends[record.stream]:
                ends[record.stream] = end
        self.ends = ends

    @classmethod
    def group(cls, records: Iterable[LogRecord]) -> list[Batch]:
        """Records (of any containers) as a batch per container, order kept within each."""
        by_container: dict[str, list[LogRecord]] = {}
        containers: dict[str, ContainerInfo] = {}
        for record in records:
            cid = record.container.id
            by_container.setdefault(cid, []).append(record)
            containers.setdefault(cid, record.container)
        return [cls(containers[cid], group) for cid, group in by_container.items()]

    def __len__(self) -> int:
        return len(self._records)

    @property
    def streams(self) -> list[str]:
        return list(map(_stream_of, self._records))

    def ts_ns(self) -> list[int]:
        return [r.ts_ns for r in self._records]

    def texts(self) -> list[str]:
        return [r.message for r in self._records]

    def truncated_flags(self) -> list[bool]:
        return [r.truncated for r in self._records]

    def positions(self) -> list[tuple[int, int]]:
        return list(map(_end_position, self._records))

    def jsonl(self) -> bytes:
        return b"".join(
            record_json(
                r.container,
                r.stream,
                r.ts,
                r.message,
                r.truncated,
                r.fields,
                r.lines,
                r.end_ts_ns,
                r.end_seq,
            )
            + b"\n"
            for r in self._records
        )

    def records(self) -> list[LogRecord]:
        return self._records

    def select(self, keep: list[bool]) -> RecordBatch | None:
        kept = list(compress(self._records, keep))
        if not kept:
            return None
        batch = RecordBatch(self.container, kept)
        batch.ends = self.ends
        return batch


def total_lines(batches: Iterable[Batch]) -> int:
    return sum(map(len, batches))

