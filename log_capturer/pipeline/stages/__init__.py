"""Transformations between the queue and the sinks (multiline, JSON parsing, redaction).

They run in the dispatcher thread, before any sink sees a record, so a redaction
applies to every sink and a multiline group can be released on a timer.
"""

from __future__ import annotations

from typing import Protocol

from ...discovery.container import ContainerInfo
from ..record import LogRecord


class StageChain(Protocol):
    def applies_to(self, container: ContainerInfo) -> bool:
        """True if this container's lines must go through :meth:`process` (as records);
        the others pass on as the batches they are."""

    def process(self, records: list[LogRecord], now: float) -> list[LogRecord]:
        """Transform a batch; a stage may hold records back (an open multiline group)."""

    def poll(self, now: float) -> list[LogRecord]:
        """Records released because a timeout passed (``now`` is ``time.monotonic()``)."""

    def next_deadline(self) -> float | None:
        """When :meth:`poll` should next be called, or ``None`` if nothing is held."""

    def flush(self, container_id: str | None = None) -> list[LogRecord]:
        """Release what is held (for one container, or all at shutdown)."""


class NoStages:
    """The default: records pass through unchanged."""

    def applies_to(self, container: ContainerInfo) -> bool:
        return False

    def process(self, records: list[LogRecord], now: float) -> list[LogRecord]:
        return records

    def poll(self, now: float) -> list[LogRecord]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def flush(self, container_id: str | None = None) -> list[LogRecord]:
        return []
