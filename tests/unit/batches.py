"""Building batches in unit tests."""

from __future__ import annotations

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import Lines
from log_capturer.pipeline.batch import LineBatch
from log_capturer.positions.marks import Mark
from log_capturer.timestamps import format_rfc3339_ns


def line_batch(
    container: ContainerInfo,
    lines: list[tuple[str, int, bytes | str]],
    seqs: list[int] | None = None,
    truncated: list[bool] | None = None,
) -> LineBatch:
    """A batch of ``(stream, ts_ns, message)`` lines; each line's seq is the given one, or
    1 + the lines of its stream at the same timestamp before it here."""
    if seqs is None:
        counts: dict[tuple[str, int], int] = {}
        seqs = []
        for stream, ts_ns, _ in lines:
            counts[(stream, ts_ns)] = counts.get((stream, ts_ns), 0) + 1
            seqs.append(counts[(stream, ts_ns)])
    ends: dict[str, Mark] = {}
    for (stream, ts_ns, _), seq in zip(lines, seqs, strict=True):
        ends[stream] = max(ends.get(stream, Mark()), Mark(ts_ns, seq))
    columns = Lines(
        [stream for stream, _, _ in lines],
        [format_rfc3339_ns(ts_ns).encode() for _, ts_ns, _ in lines],
        [m.encode() if isinstance(m, str) else m for _, _, m in lines],
        truncated,
    )
    return LineBatch(container, columns, ends, seqs)
