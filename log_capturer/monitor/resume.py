"""Cheap, exact reopening: ``since`` plus a bounded ``tail``, and the proof nothing was skipped.

Why: with the json-file driver the engine applies ``since`` by reading the log file
from its start, so every window reopen of a container with a 300 MB log costs the
engine seconds of CPU. Adding ``tail=N`` makes it read only the last N lines. The
engine takes the tail first and then filters by ``since`` (checked on Docker 20.10:
``since`` = the 2500th of 3000 lines, ``tail=2000`` returns 1001 lines), and the tail
counts the lines of both streams even when only one is requested. So a request for
both streams that returns fewer than N lines from the tail has reached back past
``since``: nothing between the mark and the tail was skipped. When the tail comes
back full, a gap is possible, and the window falls back to an unbounded ``since``.

Two facts make the count exact enough:

* A follow response is the tail, then lines written later. Every tail line was written
  before the engine took the tail, so before the first byte of the body reached us
  (``first_data_ns``). Counting every message received until the first line stamped
  later than that over-counts the tail, never under-counts it.
* The engine timestamps a line a little before writing it, and stdout and stderr are
  written by two goroutines: file order and timestamp order may differ across the two
  streams by a small amount (measured here: 1.3 ms under load). ``reorder_tolerance``
  bounds it, and how late a followed line reaches us after its timestamp. ``since`` is
  moved back by it, so a tail that reaches past ``since`` covers every line not yet
  seen.

Lines of a tail read are held back (bounded) until the check passes, because a mark
moved past a gap could never come back to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum

from ..positions.marks import Mark


class TailState(Enum):
    """What a tail read has shown so far."""

    PENDING = "pending"  # not settled yet: hold its lines
    PROVEN = "proven"  # nothing skipped: deliver
    GAP = "gap"  # the tail may have skipped lines: read again


PENDING = TailState.PENDING
PROVEN = TailState.PROVEN
GAP = TailState.GAP


class Checked:
    """Per stream, a time before which every line of the stream has been delivered.

    It starts at the stream's mark and moves ahead of it after a read that was
    gap-free: every line not yet seen comes after a reference point (the last line
    received; the request, when the engine ended the body; half-way through a long
    silence that ended a follow stream), so it is stamped at most
    ``reorder_tolerance`` before it. This is
    what lets a quiet stderr keep up with a busy stdout without the engine re-reading
    the stderr's whole history every window. In memory only: after a restart the
    marks are the floor again.
    """

    def __init__(self, marks: Mapping[str, Mark], tolerance_ns: int) -> None:
        self.tolerance_ns = tolerance_ns
        self.ts: dict[str, int] = {s: m.ts_ns for s, m in marks.items()}

    def observe_mark(self, stream: str, mark: Mark) -> None:
        if mark.ts_ns > self.ts.get(stream, 0):
            self.ts[stream] = mark.ts_ns

    def after_gap_free_read(
        self, streams: Iterable[str], reference_ns: int, pending_ts: Mapping[str, int]
    ) -> None:
        """A read covered everything up to ``reference_ns``; a line still incomplete at
        its end (``pending_ts``) was not delivered and caps its stream."""
        floor = reference_ns - self.tolerance_ns
        for stream in streams:
            candidate = floor
            if stream in pending_ts:
                candidate = min(candidate, pending_ts[stream])
            if candidate > self.ts.get(stream, 0):
                self.ts[stream] = candidate


def tail_lines(
    base: int, maximum: int, rate_per_s: float, gap_s: float, tolerance_s: float
) -> int:
    """How many lines to ask for: the base, plus twice what the container writes in the
    time since the last read and the tolerance (so a busy container's tail still
    reaches back past ``since``), at most ``maximum``."""
    expected = rate_per_s * (gap_s + 2 * tolerance_s)
    return int(min(maximum, base + 2 * expected))


class TailCheck:
    """Decides, while a ``tail=N`` response is read, whether it skipped nothing.

    Feed it every line as it arrives with the number of engine messages received so
    far (split lines are several messages; an over-count is safe). ``PROVEN``: the
    tail ended before reaching N messages, the held lines can go. ``GAP``: the tail
    may have been full; fall back to an unbounded read.
    """

    __slots__ = ("limit", "state")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.state: TailState = PENDING

    def on_line(self, ts_ns: int, messages_so_far: int, first_data_ns: int) -> TailState:
        if self.state != PENDING:
            return self.state
        if ts_ns > first_data_ns:
            # Written after the engine took the tail: the tail is behind us, and every
            # message before this line's (at least one) belonged to it at most.
            self.state = PROVEN if messages_so_far <= self.limit else GAP
        elif messages_so_far >= self.limit:
            self.state = GAP
        return self.state

    def at_end(self, engine_ended: bool, messages: int) -> TailState:
        """The response is over. Ended by the engine: the count is final. Cut by the
        deadline before any proof: the tail may not all have arrived (``PENDING``)."""
        if self.state == PENDING and engine_ended:
            self.state = PROVEN if messages < self.limit else GAP
        return self.state


def ended_before_until(eof: bool, until_ns: int, now_ns: int) -> bool:
    """Whether the engine's end of a body settles a tail count.

    A follow read's ``until`` is set before the request waits for a connection; if it
    passed before the engine took the tail, the engine stops at the first tail line
    stamped after it and ends the body, short of the tail: such an end proves nothing.
    An end seen before ``until`` means ``until`` filtered no tail line.
    """
    return eof and (until_ns <= 0 or now_ns < until_ns)

