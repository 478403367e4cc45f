"""Cheap, exact reopening: ``since`` plus a bounded ``tail``, and the proof nothing was skipped.

Why: with the json-file driver the engine applies ``since`` by reading the log file
from its start, so every window reopen of a container with a 300 MB log costs the
engine seconds of CPU. Adding ``tail=N`` makes it read only the last N lines. The
engine takes the tail first and then filters by ``since`` (checked on Docker 20.10:
``since`` = the 2500th of 3000 lines, ``tail=2000`` returns 1001 lines), and the tail
counts the lines of both streams even when only one is requested. So a request for
both streams that returns fewer than N lines from the tail has reached back past
``since``: nothing between the mark and the tail was skipped. When the tail comes
back full, a gap is possible: the read is redone with a tail 10x larger, and past the
largest with an unbounded ``since`` (on a quiet log, as a proof read: see below).

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

Checked times and the proofs that move them
-------------------------------------------

Per stream, a *checked time* C says: every line of the stream stamped before C has
been read (:class:`Checked`). A reopen starts at the oldest C of its streams (moved
back by ``reorder_tolerance`` for a tail read), so the further C is ahead of a
stream's last line, the fewer known lines the engine sends again. C moves only after
a gap-free read (a plain one, or a tail the check passed), by these proofs, each of
which shows that every line not yet seen comes after some reference point R in the
log file, and so is stamped at or after R minus ``reorder_tolerance``:

1. **A line received**: lines come in file order, so every unseen line is after it.
2. **The engine's end of a body** (EOF), before any ``until``: the engine read the
   log files as they were when it served the request, to their end. A line stamped
   before the request minus the tolerance was written by then (the engine stamps a
   line at most the tolerance before writing it), so it was sent. R = the request
   time, taken before the request waits for a connection.
3. **A long silence** (10 s) at the end of a follow stream: R = half-way through it
   (an assumption about how late a followed line arrives; see container_monitor).

Rule 2 needs the engine to end the body, which a follow stream does only at ``until``
after a newer line: a quiet stream never gets it. So a quiet stream whose checked
time is still inside a burst (a reopen would send many known lines again) gets a
**proof read**: a non-follow request from the same ``since``, with a tail sized to
what it will send again, escalated while it comes back full, a plain ``since`` last.
Its EOF settles its tail count and, by rule 2, moves C to its request minus the
tolerance, past the burst; the follow reads after it send nothing known. It cannot
skip a line: it is checked like any tail read (held lines, count below the tail),
its lines go through the same per-stream dedup, and a line still incomplete at its
end (a split line being written) is not taken as whole: it caps its stream's C
(``pending_ts``). When a proof read is made (:func:`needs_proof`): after a follow
read that ended quiet (no byte for the window's grace) with at least half a base
tail of known lines to send again; when a follow tail read ended before its check
(its held lines are settled by the proof read instead of a plain read); and when a
tail came back full while the log was quiet (its newest line older than the request
by the grace): larger follow tails could not be proven by a new line.

Delivered, not only read: the ledger saves a stream's checked time with the
positions only once every line read before the proof was acknowledged by every sink
(positions/ledger.py), so after a crash a restart never starts past an undelivered
line, and a stream with no recent line reopens cheaply after a restart.
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
    later) and moves ahead of it by the proofs above, never back: after a gap-free read
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
    """After a follow read: make a proof read (module docstring) when the stream went
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

