"""What every sink promises the dispatcher."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

from ..metrics.registry import DELIVERY_LAG
from ..monitor.marks import Mark
from ..pipeline.record import LogRecord

Marks = dict[str, dict[str, Mark]]


class SinkError(Exception):
    """A sink could not accept a batch; the dispatcher retries it (nothing is acknowledged)."""


class Sink(ABC):
    """A destination for records, with at-least-once delivery.

    :meth:`write` returns only once the batch is accepted (written, sent and
    acknowledged, or durably spooled); otherwise it raises :class:`SinkError` and the
    dispatcher retries. Positions advance only past batches every sink accepted.
    """

    name: str = "sink"

    def recover(self, acked: Marks, state: Any) -> Marks:
        """At start: the marks this sink already holds, at least ``acked``.

        A sink that can see what it delivered (the file sink reads its own tail) may
        return more, and must then skip those records when they are read again.
        ``state`` is what its last :meth:`checkpoint` returned.
        """
        return acked

    @abstractmethod
    def write(self, batch: list[LogRecord]) -> None: ...

    def wants_checkpoint(self) -> bool:
        """True to have positions saved before the next write (the file sink, before rotating)."""
        return False

    def checkpoint(self) -> Any:
        """Make accepted records durable; return state to save with the positions."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, sockets and threads."""


def observe_delivered(sink: str, records: list[LogRecord]) -> None:
    """Record end-to-end lag (now minus Docker timestamp) when a sink really delivered.

    A sample of each batch is enough for the histogram and keeps this off the hot path.
    """
    if not records:
        return
    now = time.time_ns()
    lag = DELIVERY_LAG.labels(sink)
    for record in records[:: max(1, len(records) // 20)]:
        lag.observe(max(0.0, (now - record.ts_ns) / 1e9))
