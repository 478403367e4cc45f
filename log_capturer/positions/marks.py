"""A position in one stream of one container: ``(ts_ns, seq)``.

``ts_ns`` is the Docker timestamp of a line (integer nanoseconds) and ``seq`` its
1-based index among the lines of the same stream with that same timestamp. A
:class:`Mark` is the position of the last line delivered (or read): ``since`` is
inclusive, so a window reopened at ``mark.ts_ns`` gets the ``mark.seq`` lines at that
timestamp again and drops them. stdout and stderr are not ordered against each other
by the engine, so each stream has its own mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True, order=True, slots=True)
class Mark:
    """Lines up to and including position ``(ts_ns, seq)`` of a stream are covered."""

    ts_ns: int = 0
    seq: int = 0
    """The line's index among its stream's lines stamped ``ts_ns`` (1-based; 0: none)."""

    def covers(self, ts_ns: int, seq: int) -> bool:
        return (ts_ns, seq) <= (self.ts_ns, self.seq)


ZERO = Mark(0, 0)

StreamMarks = dict[str, Mark]
"""stream -> mark"""


def seqs_of(streams: Sequence[str], stamps: Sequence[bytes]) -> list[int]:
    """Each line's seq, in read order: its index among the lines before it (and itself) of
    the same stream with the same timestamp (``stamps``: canonical Docker timestamps)."""
    seen: dict[tuple[str, bytes], int] = {}
    out = []
    for key in zip(streams, stamps, strict=True):
        seen[key] = seen.get(key, 0) + 1
        out.append(seen[key])
    return out
