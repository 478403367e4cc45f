"""How one refused payload is settled: which parts to send, and what becomes a dead letter.

A pure plan (no I/O): :class:`~log_capturer.sinks.network.delivery.Delivery` sends each
part :meth:`Bisection.next_part` gives and reports the answer (:meth:`Bisection.answered`).
Entries the server named go to the dead-letter file without another request, and what
it stored is not sent again; entries it refused without naming them are bisected: a half
the server accepts proves the other half holds the refused entry, which is then split
without being sent; halves whose fate is unknown are sent together at the end. What is
still unsettled when the requests are spent is dead-lettered marked ``"unresolved":
true`` (the server may have stored some of it). At most :func:`max_requests` requests in
all, the refused one included.

A refusal for the request's size (``Refused.split``) blames no entry: those entries are
sent again in halves, each half on its own and halved again while it is too large, so
no entry is inferred bad from its neighbour's success. These requests are not counted
against :func:`max_requests` (halving ends: at most two per entry); an entry too large
on its own is a dead letter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic

from .outcomes import Accepted, P, Refused

REFUSAL_BASE_REQUESTS = 3
"""The constant of :func:`max_requests`."""


def max_requests(entries: int) -> int:
    """Most requests spent on one refused payload of ``entries`` entries, the first one
    included: ``3 + ceil(log2(entries))``. Retries of transient failures are not counted."""
    return REFUSAL_BASE_REQUESTS + math.ceil(math.log2(max(entries, 1)))


@dataclass(slots=True)
class DeadEntries(Generic[P]):
    """Entries of ``payload`` at ``positions`` refused for ``reason`` (``unresolved``: the
    server may have stored some of them)."""

    payload: P
    positions: Sequence[int]
    reason: str
    unresolved: bool


@dataclass(slots=True)
class _Half(Generic[P]):
    """A part being sent: the left half of ``whole``, a part holding a refused entry
    (``right`` is the other half), or parts of unknown fate merged (``right`` None)."""

    part: P
    right: P | None
    reason: str
    whole: P


def _halves(part: P) -> tuple[P, P]:
    half = len(part) // 2
    return part.subset(range(half)), part.subset(range(half, len(part)))


class Bisection(Generic[P]):
    """The settling of ``payload``, which the server answered with ``first``."""

    def __init__(self, payload: P, first: Refused[P]) -> None:
        self.payload = payload
        self.first = first
        self.limit = max_requests(len(payload))
        self.used = 1
        self.stored = 0
        """Entries the server stored (in no list of a refusal)."""
        self.dead: list[DeadEntries[P]] = []
        self._bad: list[tuple[P, str]] = []  # each holds at least one refused entry, unnamed
        self._unknown: list[P] = []  # fate unknown: sent together when no bad part is left
        # Refused for their request's size (True: to be halved) or halves to send as they are;
        # the last is next.
        self._split: list[tuple[P, str, bool]] = []
        self._sending: _Half[P] | None = None
        self._absorb(payload, first)

    def next_part(self) -> P | None:
        """The next part to send, or None when every entry is settled or the requests are
        spent (then :meth:`finish`)."""
        assert self._sending is None, "the previous part was not answered"
        while self._split:
            part, reason, refused = self._split.pop()
            if not refused:
                self._sending = _Half(part, None, "", part)
                return part
            if len(part) == 1:
                self.dead.append(DeadEntries(part, [0], reason, False))
                continue
            left, right = _halves(part)
            self._split += [(right, reason, False), (left, reason, False)]
        while (self._bad or self._unknown) and self.used < self.limit:
            if self._bad:
                part, reason = self._bad.pop()
                if len(part) == 1:
                    self.dead.append(DeadEntries(part, [0], reason, False))
                    continue
                left, right = _halves(part)
                self._sending = _Half(left, right, reason, part)
            else:
                merged = self._unknown[0].merge(self._unknown[1:])
                self._unknown = merged[1:]
                self._sending = _Half(merged[0], None, "", merged[0])
            return self._sending.part
        return None

    def answered(self, outcome: Accepted | Refused[P]) -> None:
        """The server's (final) answer to the part :meth:`next_part` gave."""
        sending, self._sending = self._sending, None
        assert sending is not None
        self.used += 1
        if isinstance(outcome, Refused):
            self._absorb(sending.part, outcome)
            if sending.right is not None:
                self._unknown.append(sending.right)
        elif sending.right is not None:
            self._bad.append((sending.right, sending.reason))  # the refused entry is there

    def unsent(self) -> list[P]:
        """What is not settled, when sending failed for now: the part being sent (whole)
        first, then the others."""
        remaining = [part for part, _, _ in self._split[::-1]]
        remaining += [part for part, _ in self._bad] + self._unknown
        if self._sending is not None:
            remaining.insert(0, self._sending.whole)
        return remaining

    def finish(self) -> None:
        """The requests are spent or nothing is left: what is unsettled becomes dead letters."""
        for part, reason in self._bad:
            if len(part) == 1:
                self.dead.append(DeadEntries(part, [0], reason, False))
            else:
                self.dead.append(DeadEntries(part, range(len(part)), reason, True))
        unknown = f"fate unknown after {self.first.message}"
        for part in self._unknown:
            self.dead.append(DeadEntries(part, range(len(part)), unknown, True))
        self._bad, self._unknown = [], []

    def _absorb(self, sent: P, refused: Refused[P]) -> None:
        for positions, reason in refused.named:
            if positions:
                self.dead.append(DeadEntries(sent, positions, reason, False))
        if refused.unresolved:
            self._bad.append((sent.subset(refused.unresolved), refused.message))
        if refused.resend is not None:
            self._unknown.append(refused.resend)
        if refused.doubtful:
            self.dead.append(DeadEntries(sent, refused.doubtful, refused.message, True))
        if refused.split:
            self._split.append((sent.subset(refused.split), refused.message, True))
        self.stored += refused.stored(len(sent))
