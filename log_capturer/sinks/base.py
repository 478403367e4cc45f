"""What every sink promises the dispatcher."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from ..metrics.registry import DELIVERY_LAG
from ..pipeline.batch import LAG_SAMPLES, Batch
from ..positions.store import Marks


class SinkError(Exception):
    """A sink could not accept a batch; the dispatcher retries it (nothing is acknowledged)."""


class Sink(ABC):
    """A destination for records, with at-least-once delivery.

    :meth:`write` takes the batches of one delivery (several containers' reads) and
    returns only once all of them are accepted (written, sent and acknowledged, or
    durably spooled); otherwise it raises :class:`SinkError` and the dispatcher
    retries them. Positions advance only past batches every sink accepted.
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
    def write(self, batches: list[Batch]) -> None: ...

    # -- pipelined sinks --------------------------------------------------------------
    #
    # A pipelined sink also takes deliveries without waiting for them to be accepted:
    # the dispatcher submits a delivery, gets a ticket, and acknowledges the delivery
    # (in order) once the sink reports its ticket accepted. ``write`` keeps its contract.

    pipelined: bool = False

    def submit(self, batches: list[Batch], timeout: float | None) -> int | None:
        """Take a delivery to accept later: its ticket (tickets grow by one per delivery),
        or None if there was no room within ``timeout``. Raises :class:`SinkError` when
        the sink failed (each delivery not accepted must then be written again)."""
        raise NotImplementedError

    def wait_room(self, timeout: float | None) -> bool:
        """True once :meth:`submit` can take a delivery at once."""
        raise NotImplementedError

    def accepted(self) -> int:
        """The last ticket accepted; every earlier one is accepted too."""
        raise NotImplementedError

    def wait(self, ticket: int, timeout: float | None) -> bool:
        """True once ``ticket`` is accepted, False after ``timeout``; raises
        :class:`SinkError` when its delivery was dropped (write it again)."""
        raise NotImplementedError

    @property
    def failed(self) -> bool:
        """True after a failure dropped deliveries it had taken."""
        return False

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Send what is held back waiting for more (a partial push) now."""

    def next_deadline(self) -> float | None:
        """When (monotonic) the sink wants :meth:`poll` called, or None."""
        return None

    def poll(self, now: float) -> None:  # noqa: B027 - optional hook
        """Send what has waited long enough."""

    def wants_checkpoint(self) -> bool:
        """True to have positions saved before the next write (the file sink, before rotating)."""
        return False

    def checkpoint(self) -> Any:
        """Make accepted records durable; return state to save with the positions."""
        return None

    def state(self) -> Any:
        """What :meth:`checkpoint` would return now, without making anything durable: the
        dispatcher saves it instead while deliveries written here wait for a pipelined
        sink (the state must not run ahead of the positions saved with it)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files, sockets and threads."""


def observe_delivered(sink: str, batches: list[Batch]) -> None:
    """Record end-to-end lag (now minus Docker timestamp) when a sink really delivered:
    about :data:`LAG_SAMPLES` lines spread over the whole delivery (not per batch: a
    backlog's batches are single reads of about 270 lines, and 20 per batch cost a fifth
    of the file sink's dispatcher time), which keeps this off the hot path."""
    step = max(1, sum(map(len, batches)) // LAG_SAMPLES)
    samples: list[int] = []
    start = 0  # the next sampled line's index in the next batch
    for batch in batches:
        size = len(batch)
        if start < size:
            samples += batch.sample_ts_ns(start, step)
            start += -(-(size - start) // step) * step  # past the batch's last sample
        start -= size
    observe_lag(sink, samples)


def observe_lag(sink: str, timestamps: Iterable[int]) -> None:
    """Delivery lag of lines with these Docker timestamps (ns), delivered now."""
    now = time.time_ns()
    lag = DELIVERY_LAG.labels(sink)
    for ts_ns in timestamps:
        lag.observe(max(0.0, (now - ts_ns) / 1e9))
