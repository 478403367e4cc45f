"""From a socket read's lines to queued records: dedup, records, marks, in one pass.

Split out of the monitor's window loop so the per-line work is one tight loop per
batch (hundreds of lines) and the queue is entered once per batch.
"""

from __future__ import annotations

from ..discovery.container import ContainerInfo
from ..docker.lines import LogLine
from ..pipeline.record import LogRecord
from .marks import Mark, StreamDedup


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
        truncated = 0
        for record, size in zip(taken, self.sizes, strict=False):
            lines[record.stream] = lines.get(record.stream, 0) + 1
            sizes[record.stream] = sizes.get(record.stream, 0) + size
            truncated += record.truncated
        return truncated


def admit_batch(
    batch: list[LogLine], dedups: dict[str, StreamDedup], container: ContainerInfo
) -> AdmittedBatch:
    """Records for the lines of ``batch`` that ``dedups`` admit (streams not asked for
    are skipped), in order."""
    out = AdmittedBatch()
    records = out.records
    sizes = out.sizes
    append_record = records.append
    append_size = sizes.append
    for stream, ts_ns, ts_text, message, truncated in batch:
        dedup = dedups.get(stream)
        if dedup is None:
            continue  # a stream this request did not ask for
        seq = dedup.admit(ts_ns)
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
