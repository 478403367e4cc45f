"""The sink both network sinks are: a :class:`~.pushes.PushPipeline` in front of a
:class:`~.delivery.Delivery`."""

from __future__ import annotations

from typing import Generic

from ...pipeline.batch import Batch
from ..base import Sink
from .config import NetworkSinkConfig
from .delivery import Delivery
from .outcomes import P
from .pushes import PushBuilder, PushPipeline
from .spool import DiskSpool


class NetworkSink(Sink, Generic[P]):
    """What the network sinks share: a :class:`~.pushes.PushPipeline`
    that cuts the batches into full pushes, builds the next while one is in flight and
    hands them, in order, to a :class:`Delivery`, which settles each (stored by the
    server, durably spooled, or dead-lettered). The dispatcher submits deliveries to it
    (``pipelined``); :meth:`write` waits for its own. A subclass builds ``_encoder`` and
    ``_delivery`` from its config, then calls :meth:`_start_pipeline`."""

    pipelined = True
    _encoder: PushBuilder[P]
    _delivery: Delivery[P]
    _pushes: PushPipeline[P]

    def _start_pipeline(self, config: NetworkSinkConfig, batch_bytes: int) -> None:
        self._pushes = PushPipeline(
            self.name,
            self._encoder,
            self._delivery,
            batch_bytes=batch_bytes,
            batch_wait=config.batch_wait,
            close_timeout=config.close_timeout,
        )

    @property
    def up(self) -> bool:
        """False after a send failed (unavailable, 401/403/404); True after one succeeded."""
        return self._delivery.up

    @property
    def spool(self) -> DiskSpool | None:
        return self._delivery.spool

    def write(self, batches: list[Batch]) -> None:
        """Returns once every entry of ``batches`` (and of every delivery taken before) is
        stored, spooled or dead-lettered; raises :class:`SinkError` otherwise."""
        pushes = self._pushes
        if pushes.failed:
            pushes.reset()
        ticket = pushes.submit(batches, None)
        assert ticket is not None
        pushes.flush()
        pushes.wait(ticket, None)

    def submit(self, batches: list[Batch], timeout: float | None) -> int | None:
        return self._pushes.submit(batches, timeout)

    def wait_room(self, timeout: float | None) -> bool:
        return self._pushes.wait_room(timeout)

    def accepted(self) -> int:
        return self._pushes.accepted()

    def wait(self, ticket: int, timeout: float | None) -> bool:
        return self._pushes.wait(ticket, timeout)

    @property
    def failed(self) -> bool:
        return self._pushes.failed

    def flush(self) -> None:
        self._pushes.flush()

    def next_deadline(self) -> float | None:
        return self._pushes.next_deadline()

    def poll(self, now: float) -> None:
        self._pushes.poll(now)

    def close(self) -> None:
        """Stop the sender and the replayer (each at most ``close_timeout``); the spool
        stays on disk."""
        self._pushes.close()
        self._delivery.close()
