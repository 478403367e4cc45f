"""From a socket read's lines to queued records: dedup, records, marks, in one pass.

Split out of the monitor's window loop so the per-line work is one tight loop per
batch (hundreds of lines) and the queue is entered once per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import compress, repeat
from operator import attrgetter, countOf, eq, itemgetter

from ..discovery.container import ContainerInfo
from ..docker.lines import LogLine
from ..pipeline.record import LogRecord
from .marks import Mark, StreamDedup

_stream_of = attrgetter("stream")
_stream_of_line = itemgetter(0)
_ts_of_line = itemgetter(1)
_truncated_of = attrgetter("truncated")


class AdmittedBatch:
    """The new lines of one batch as records, with their sizes (bytes) for the queue."""

    __slots__ = ("records", "sizes")

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.sizes: list[int] = []

    def commit(
        self,
        handled: int,
        dedups: dict[str, StreamDedup],
        marks: dict[str, Mark],
        lines: dict[str, int],
        sizes: dict[str, int],
    ) -> int:
        """The first ``handled`` records entered the queue (or the drop policy took them):
        advance ``marks`` past them and count them; returns how many were truncated."""
        records = self.records
        if handled == len(records):
            # A dedup's mark moves only with the lines it admits, all of them handled.
            for stream, dedup in dedups.items():
                if marks.get(stream) != dedup.mark:
                    marks[stream] = dedup.mark
            taken = records
        else:  # cut by a stop: only what was handled moves the marks
            taken = records[:handled]
            for record in taken:
                mark = marks[record.stream]
                if not mark.covers(record.ts_ns, record.seq):
                    marks[record.stream] = Mark(record.ts_ns, record.seq)
        # Counted per stream with C-level passes over the batch, not a loop per record.
        streams = list(map(_stream_of, taken))
        for stream in dedups:
            count = countOf(streams, stream)
            if count:
                lines[stream] = lines.get(stream, 0) + count
                sizes[stream] = sizes.get(stream, 0) + sum(
                    compress(self.sizes, map(eq, streams, repeat(stream)))
                )
        return sum(map(_truncated_of, taken))


def admit_batch(
    batch: list[LogLine], dedups: dict[str, StreamDedup], container: ContainerInfo
) -> AdmittedBatch:
    """Records for the lines of ``batch`` that ``dedups`` admit (streams not asked for
    are skipped), in order.

    Each stream's dedup sees only its own lines, in order, so it can take them all at
    once (:meth:`StreamDedup.admit_all`); the sequence numbers are then merged back
    into the batch's order.
    """
    out = AdmittedBatch()
    streams = list(map(_stream_of_line, batch))
    present = set(streams)
    if len(present) == 1:
        (only,) = present
        dedup = dedups.get(only)
        if dedup is None:
            return out  # a stream this request did not ask for
        seqs: Iterable[int | None] = dedup.admit_all(list(map(_ts_of_line, batch)))
    else:
        per_stream: dict[str, Iterator[int | None]] = {}
        for stream in present:
            dedup = dedups.get(stream)
            if dedup is None:
                per_stream[stream] = repeat(None)
                continue
            mine = list(map(eq, streams, repeat(stream)))
            timestamps = list(compress(map(_ts_of_line, batch), mine))
            per_stream[stream] = iter(dedup.admit_all(timestamps))
        seqs = [next(per_stream[stream]) for stream in streams]
    records = out.records
    sizes = out.sizes
    append_record = records.append
    append_size = sizes.append
    for (stream, ts_ns, ts_text, message, truncated), seq in zip(batch, seqs, strict=False):
        if seq is None:
            continue
        append_record(
            LogRecord(
                container,
                stream,
                ts_ns,
                seq,
                ts_text.decode("ascii", "replace"),
                message.decode("utf-8", "replace"),
                truncated,
            )
        )
        append_size(len(message))
    return out
