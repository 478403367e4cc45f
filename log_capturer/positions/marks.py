"""A position in one stream of one container: ``(ts_ns, seq)``.

``ts_ns`` is the Docker timestamp of a line (integer nanoseconds) and ``seq`` its
1-based index among the lines of the same stream with that same timestamp. A
:class:`Mark` is the position of the last line delivered (or read): ``since`` is
inclusive, so a window reopened at ``mark.ts_ns`` gets the ``mark.count`` lines at that
timestamp again and drops them. stdout and stderr are not ordered against each other
by the engine, so each stream has its own mark.
"""

from __future__ import annotations

from dataclasses import dataclass

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True, order=True, slots=True)
class Mark:
    """Lines up to and including position ``(ts_ns, count)`` of a stream are covered."""

    ts_ns: int = 0
    count: int = 0

    def covers(self, ts_ns: int, seq: int) -> bool:
        return (ts_ns, seq) <= (self.ts_ns, self.count)


ZERO = Mark(0, 0)

StreamMarks = dict[str, Mark]
"""stream -> mark"""
