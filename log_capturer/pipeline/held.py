"""Deliveries held for pipelined sinks: taken (a ticket each) but not yet accepted by
all of them, acknowledged strictly in order (see :class:`~.dispatcher.Dispatcher`)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..metrics.registry import SINK_BATCHES, SINK_RECORDS, SINK_SEND_SECONDS
from ..sinks.base import Sink
from .batch import Batch

DROPPED = -1
"""The ticket of a delivery a sink could not take, or dropped: it is written again."""


@dataclass
class Held:
    """A delivery pipelined sinks took but have not all accepted yet: ``tickets`` per sink
    still to accept it (:data:`DROPPED`: it could not take it; written at the next
    settle)."""

    batches: list[Batch]
    lines: int
    tickets: dict[str, int]
    submitted: float = field(default_factory=time.monotonic)

    def accepted_by(self, sink: str) -> None:
        """``sink`` accepted it: counted as a write it accepted."""
        del self.tickets[sink]
        SINK_BATCHES.labels(sink, "accepted").inc()
        SINK_RECORDS.labels(sink, "accepted").inc(self.lines)
        SINK_SEND_SECONDS.labels(sink).observe(time.monotonic() - self.submitted)


class HeldDeliveries:
    """The held deliveries, oldest first, and the other sinks' states from before the
    oldest was taken (:attr:`states_before`): saved with the positions instead of their
    current ones while anything is held, so a restart's recovery (``FileSink.recover``
    reads what the file holds past the saved offset) does not take their unacknowledged
    records for delivered ones."""

    def __init__(self) -> None:
        self._held: deque[Held] = deque()
        self.states_before: dict[str, object] = {}

    def __bool__(self) -> bool:
        return bool(self._held)

    def __iter__(self) -> Iterator[Held]:
        return iter(self._held)

    def note_states(self, sinks: list[Sink], pipelined: list[Sink]) -> None:
        """A delivery is about to be held: if nothing is held yet, note the states of the
        sinks that are not pipelined (every delivery so far is acknowledged)."""
        if not self._held:
            self.states_before = {s.name: s.state() for s in sinks if s not in pipelined}

    def hold(self, held: Held) -> None:
        self._held.append(held)

    @property
    def oldest(self) -> Held:
        return self._held[0]

    def release_oldest(self) -> Held:
        return self._held.popleft()

    def dropped(self, sink: str, ticket: int) -> None:
        """``sink`` dropped every delivery it had not accepted (``ticket`` and later): each
        is written again."""
        for held in self._held:
            if held.tickets.get(sink, DROPPED) >= ticket:
                held.tickets[sink] = DROPPED

    def accepted(self, sinks: dict[str, Sink]) -> tuple[list[Held], bool]:
        """The oldest deliveries every sink accepted (released, in order), and whether the
        next one must be settled now: a sink failed, could not take it, or is gone."""
        done: list[Held] = []
        while self._held:
            held = self._held[0]
            for name, ticket in list(held.tickets.items()):
                sink = sinks.get(name)
                if sink is None or ticket < 0 or sink.failed:
                    return done, True
                if sink.accepted() >= ticket:
                    held.accepted_by(name)
            if held.tickets:
                return done, False
            done.append(self._held.popleft())
        return done, False
