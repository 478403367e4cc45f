"""Cheap, exact reopening: ``since`` plus a bounded ``tail``, and the proof nothing was
skipped. The story (the engine's tail rules, the count, held lines, checked times and the
proofs that move them): docs/capture.md, "Tails" and "Checked times". Here: the tail
check (:class:`TailCheck`), the checked times (:class:`Checked`), what a reopen sends
again (:class:`Received`) and the tail's size (:func:`tail_lines`).
"""

from __future__ import annotations

from collections import deque
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
    """Per stream, a time before which every line of the stream has been read.

    It starts at the stream's mark (or the checked time saved with the positions, when
    later) and moves ahead of it by proofs (docs/capture.md), never back: after a gap-free read
    every line not yet seen comes after a reference point (the last line received; the
    request, when the engine ended the body; half-way through a long silence that ended
    a follow stream), so it is stamped at most ``reorder_tolerance`` before it. This is
    what lets a quiet stderr keep up with a busy stdout, and a quiet log reopen without
    the engine sending its last burst again.
    """

    def __init__(
        self,
        marks: Mapping[str, Mark],
        tolerance_ns: int,
        saved: Mapping[str, int] | None = None,
    ) -> None:
        self.tolerance_ns = tolerance_ns
        saved = saved or {}
        self.ts: dict[str, int] = {s: max(m.ts_ns, saved.get(s, 0)) for s, m in marks.items()}

    def observe_mark(self, stream: str, mark: Mark) -> None:
        if mark.ts_ns > self.ts.get(stream, 0):
            self.ts[stream] = mark.ts_ns

    def after_gap_free_read(
        self, streams: Iterable[str], reference_ns: int, pending_ts: Mapping[str, int]
    ) -> bool:
        """A read covered everything up to ``reference_ns``; a line still incomplete at
        its end (``pending_ts``) was not delivered and caps its stream. True if a time moved."""
        floor = reference_ns - self.tolerance_ns
        moved = False
        for stream in streams:
            candidate = floor
            if stream in pending_ts:
                candidate = min(candidate, pending_ts[stream])
            if candidate > self.ts.get(stream, 0):
                self.ts[stream] = candidate
                moved = True
        return moved

    def since(self, streams: Iterable[str]) -> int:
        """Where a read of ``streams`` starts: the oldest of their times."""
        return min(self.ts[s] for s in streams)


class Received:
    """How many lines came lately at or after a time: what a reopen from ``since``
    would send again (known lines, dropped by dedup), to size its tail and to decide a
    proof read. Kept per socket read (its newest timestamp and its line count) for
    ``keep_ns`` behind the newest; a read counts whole when its newest line is at or
    after the time (an over-count: a larger tail, never a gap; counting is not a proof).
    """

    __slots__ = ("_reads", "keep_ns", "max_reads", "newest_ns")

    def __init__(self, keep_ns: int, max_reads: int = 4096) -> None:
        self.keep_ns = keep_ns
        self.max_reads = max_reads
        self.newest_ns = 0
        self._reads: deque[tuple[int, int]] = deque()

    def add(self, newest_ns: int, lines: int) -> None:
        self._reads.append((newest_ns, lines))
        if newest_ns > self.newest_ns:
            self.newest_ns = newest_ns
        reads = self._reads
        horizon = self.newest_ns - self.keep_ns
        while reads and (reads[0][0] < horizon or len(reads) > self.max_reads):
            reads.popleft()

    def since(self, since_ns: int) -> int:
        return sum(lines for ts, lines in self._reads if ts >= since_ns)


def needs_proof(quiet: bool, resend: int, base: int) -> bool:
    """After a follow read: make a proof read (docs/capture.md) when the stream went
    quiet and a reopen would send at least half a base tail of known lines again (a
    burst just behind the checked time). A few known lines cost less than a request."""
    return base > 0 and quiet and 2 * resend >= base


QUIET_TAIL_LINES = 32
"""The tail of a silent stream's reopen (at most ``resume_tail_lines``): the engine reads
and decodes every tail line before it filters by ``since``, so a silent reopen with this
tail costs what an empty log's does (benchmarks/README.md, "Figures behind choices in
the code")."""


def tail_lines(
    base: int,
    maximum: int,
    rate_per_s: float,
    gap_s: float,
    tolerance_s: float,
    resend: int = 0,
) -> int:
    """How many lines to ask for: the base, plus twice the larger of what the container
    writes in the time since the last read and the tolerance (so a busy container's
    tail still reaches back past ``since``) and the known lines the reopen sends again
    (``resend``: a burst just behind ``since``), at most ``maximum``. A silent stream
    (no new line in its last read, none known to send again: a quiet log, or the first
    reopen after a restart from a saved checked time) only has to cover what it writes
    meanwhile: its base is at most :data:`QUIET_TAIL_LINES`, and a tail that comes back
    full is escalated."""
    expected = max(rate_per_s * (gap_s + 2 * tolerance_s), resend)
    if expected <= 0:
        base = min(base, QUIET_TAIL_LINES)
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

