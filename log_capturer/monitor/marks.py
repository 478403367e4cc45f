"""Where each stream of a container has been read to, and the dedup of an inclusive ``since``.

A position is ``(ts_ns, seq)``: the Docker timestamp of a line and its 1-based index
among the lines of the same stream with that same timestamp. A :class:`Mark` is the
position of the last line delivered. ``since`` is inclusive, so a window reopened at
``mark.ts_ns`` gets the ``mark.count`` lines at that timestamp again: they are dropped
here, per stream. stdout and stderr are not ordered against each other by the engine,
so each has its own mark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True, order=True, slots=True)
class Mark:
    """Lines up to and including position ``(ts_ns, count)`` of a stream are delivered."""

    ts_ns: int = 0
    count: int = 0

    def covers(self, ts_ns: int, seq: int) -> bool:
        return (ts_ns, seq) <= (self.ts_ns, self.count)


ZERO = Mark(0, 0)


class StreamDedup:
    """Reads one stream of one window: drops what ``mark`` covers, numbers the new lines.

    The engine sends a stream in file order, which is timestamp order; so once a new
    line is seen, every later line of the window is new too (this keeps lines even if
    the host clock stepped backwards; ``clock_backwards`` counts such steps).
    """

    __slots__ = ("_caught_up", "_cur_seen", "_cur_ts", "clock_backwards", "dropped", "mark")

    def __init__(self, mark: Mark) -> None:
        self.mark = mark
        self._cur_ts = -1
        self._cur_seen = 0
        self._caught_up = False
        self.dropped = 0
        self.clock_backwards = 0

    def admit(self, ts_ns: int) -> int | None:
        """The line's ``seq`` if it is new, ``None`` if it was delivered before."""
        if ts_ns != self._cur_ts:
            if ts_ns < self._cur_ts:
                self.clock_backwards += 1
            self._cur_ts = ts_ns
            self._cur_seen = 0
        self._cur_seen += 1
        seq = self._cur_seen
        if not self._caught_up:
            if self.mark.covers(ts_ns, seq):
                self.dropped += 1
                return None
            self._caught_up = True
        if not self.mark.covers(ts_ns, seq):
            self.mark = Mark(ts_ns, seq)
        return seq

    def admit_all(self, timestamps: list[int]) -> list[int | None]:
        """:meth:`admit` for each of a run of this stream's lines, in order (the same
        results and state), without a call and a :class:`Mark` per line."""
        out: list[int | None] = []
        append = out.append
        cur_ts = self._cur_ts
        seen = self._cur_seen
        caught_up = self._caught_up
        mark_ts = self.mark.ts_ns
        mark_count = self.mark.count
        for ts_ns in timestamps:
            if ts_ns != cur_ts:
                if ts_ns < cur_ts:
                    self.clock_backwards += 1
                cur_ts = ts_ns
                seen = 0
            seen += 1
            if ts_ns > mark_ts or (ts_ns == mark_ts and seen > mark_count):
                mark_ts = ts_ns  # not covered by the mark: new, and the mark moves
                mark_count = seen
                caught_up = True
            elif not caught_up:
                self.dropped += 1
                append(None)
                continue
            append(seen)
        self._cur_ts = cur_ts
        self._cur_seen = seen
        self._caught_up = caught_up
        if mark_ts != self.mark.ts_ns or mark_count != self.mark.count:
            self.mark = Mark(mark_ts, mark_count)
        return out


@dataclass(frozen=True)
class ReadPlan:
    """One request of a window: which streams, from where, following or not."""

    streams: tuple[str, ...]
    since_ns: int
    follow: bool


def plan_window(checked: Mapping[str, int], lag_threshold_ns: int, follow: bool) -> list[ReadPlan]:
    """The requests of one window, from each stream's checked time (see resume.Checked;
    at least its mark's timestamp).

    Streams within ``lag_threshold_ns`` of the newest are read together, from the
    oldest of their times (re-sent lines are dropped by dedup). A stream further
    behind (a quiet stderr after a restart) is read on its own, without following,
    from its own time: a shared ``since`` would re-send the other stream's whole
    history every window, and moving its time forward without having read it could
    skip a line the engine wrote late.
    """
    if not checked:
        return []
    newest = max(checked.values())
    behind = tuple(s for s, ts in checked.items() if newest - ts > lag_threshold_ns)
    together = tuple(s for s in checked if s not in behind)
    plans = [ReadPlan((s,), checked[s], follow=False) for s in behind]
    plans.append(ReadPlan(together, min(checked[s] for s in together), follow=follow))
    return plans
