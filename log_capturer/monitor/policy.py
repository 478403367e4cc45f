"""The tail, proof and escalation decisions of one monitor, as a pure object.

Which ``tail`` a request asks for, how a tail read given up is redone, and when (and
why) the next follow window starts with a proof read: docs/capture.md, "Tails" and
"Checked times and the proofs that move them". No I/O here: the monitor reports what
its reads did (:meth:`TailPolicy.read_ended`, :meth:`TailPolicy.delivered`) and asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .resume import Received, needs_proof, tail_lines

TAIL_ESCALATION = 10
"""A tail read given up because its tail came back full is redone with a tail this many
times larger (up to the largest), then with a plain ``since``."""


class ProofReason(Enum):
    """Why a follow window starts with a proof read (``log_capturer_stream_proof_reads_total``)."""

    RESEND = "resend"
    """Quiet after a burst: a reopen would send at least half a base tail of known lines
    again."""
    UNPROVEN = "unproven"
    """A follow tail read ended before its count was settled, holding new lines."""
    QUIET_GAP = "quiet_gap"
    """A tail came back full while the log was quiet: a larger follow tail would wait in
    vain for a new line to settle it."""


class GapReason(Enum):
    """Why a tail read was given up and redone (``log_capturer_stream_tail_fallbacks_total``)."""

    FULL = "full"
    """The tail may have been full: lines between ``since`` and the tail may be missing."""
    HELD_BYTES = "held_bytes"
    """What it held back exceeded ``tail_hold_max_bytes``."""
    BUDGET = "budget"
    """What it held back did not fit ``buffer_budget``."""
    UNTIL = "until"
    """The engine ended the body after ``until`` had passed: its end settles nothing."""


@dataclass(frozen=True, slots=True)
class Gap:
    """A tail read given up: why, and (``quiet``) whether its log was quiet at the request
    (its newest line older than the request by the grace)."""

    reason: GapReason
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class DueProof:
    """A proof read the next follow window starts with, and the smallest tail it needs
    (what an unproven tail read held)."""

    reason: ProofReason
    min_tail: int = 0


class TailPolicy:
    """One monitor's decisions. ``base``/``maximum``: ``resume_tail_lines`` and
    ``resume_tail_max_lines``; ``tolerance_s``: ``reorder_tolerance``; ``grace_s``: a
    follow read with no byte for this long at its end went quiet; ``keep_ns``: how long
    the lines received are remembered (what a reopen sends again)."""

    def __init__(
        self,
        base: int,
        maximum: int,
        tolerance_s: float,
        grace_s: float,
        keep_ns: int,
        now: float,
    ) -> None:
        self.base = base
        self.maximum = maximum
        self.tolerance_s = tolerance_s
        self.tolerance_ns = int(tolerance_s * 1e9)
        self.grace_ns = int(grace_s * 1e9)
        self.received = Received(keep_ns)
        self.due: DueProof | None = None
        """The proof read the next follow window starts with, if any."""
        self.rate = 0.0
        """New lines per second in the last follow read that was not given up."""
        self.idle_ns = 0
        """How long that read waited in vain at its end."""
        self.last_read_end = now
        """When (monotonic) the last read ended."""

    # -- what the reads did ----------------------------------------------------------------

    def delivered(self, newest_ns: int, lines: int) -> None:
        """A read queued ``lines`` new lines, the newest stamped ``newest_ns``."""
        self.received.add(newest_ns, lines)

    def read_ended(
        self, follow: bool, gave_up: bool, new_lines: int, elapsed_s: float, idle_ns: int,
        now: float,
    ) -> None:
        """A read ended (also by an error). A follow read not given up sets the write rate
        the next tails cover (what the container writes, not what was sent again) and how
        long it waited in vain at its end."""
        if follow and not gave_up:
            self.rate = new_lines / max(elapsed_s, 1e-3)
            self.idle_ns = idle_ns
        self.last_read_end = now

    def gap(self, reason: GapReason, newest_age_ns: int = 0) -> Gap:
        """A tail read given up for ``reason``; ``newest_age_ns``: how long before the
        request its newest line was written."""
        return Gap(reason, reason is GapReason.FULL and newest_age_ns >= self.grace_ns)

    # -- what to ask for -------------------------------------------------------------------

    def tail_for(self, whole_container: bool, since_ns: int, now: float) -> int:
        """The ``tail`` of a request from ``since_ns``, 0 for a plain ``since`` read.

        Only a reopen of all the container's streams (the tail counts both) from a known
        point is worth it; a lagging stream read alone or a container read from its
        beginning go plain. It covers what the container writes meanwhile and the known
        lines it sends again (a burst just behind ``since``).
        """
        if self.base <= 0 or since_ns <= 0 or not whole_container:
            return 0
        return tail_lines(
            self.base,
            self.maximum,
            self.rate,
            now - self.last_read_end,
            self.tolerance_s,
            self.received.since(since_ns - self.tolerance_ns),
        )

    def escalate(self, tail: int, gap: Gap) -> int:
        """The tail of the redo of a tail read given up: larger if it came back full (it
        costs what it reads), up to the largest; else (or past the largest) 0, a plain
        read."""
        if gap.reason is GapReason.FULL and tail < self.maximum:
            return min(tail * TAIL_ESCALATION, self.maximum)
        return 0

    # -- proof reads -----------------------------------------------------------------------

    def proof_tail(self, tail: int) -> int | None:
        """The tail of the due proof read, given the tail the window would ask for (0: a
        plain read); None when none is due, or when a resend proof has no tail to prove
        with (not worth a full read: it is dropped)."""
        due = self.due
        if due is None:
            return None
        if tail:
            tail = min(max(tail, due.min_tail), self.maximum)
        if tail or due.reason is not ProofReason.RESEND:
            return tail
        self.due = None
        return None

    def after_follow(self, since_ns: int) -> None:
        """A follow read ended (not cut by a stop): a proof read is due when the stream went
        quiet with a burst just behind its checked time (``since_ns``)."""
        if self.due is not None:
            return
        resend = self.received.since(since_ns - self.tolerance_ns)
        if needs_proof(self.idle_ns >= self.grace_ns, resend, self.base):
            self.due = DueProof(ProofReason.RESEND)

    def unproven(self, tail: int) -> None:
        """A follow tail read ended before its check, holding new lines: a proof read
        settles them, with at least its tail."""
        self.due = DueProof(ProofReason.UNPROVEN, tail)

    def proof_ended(self, reason: ProofReason, settled: bool) -> None:
        """A proof read for ``reason`` ended: by the engine (``settled``: none is due any
        more), or cut (the next window proves again)."""
        if settled:
            self.due = None
        else:
            self.due = DueProof(reason, self.due.min_tail if self.due is not None else 0)
