"""A network sink's pushes, full and overlapped: :class:`PushPipeline`.

The dispatcher hands a network sink one delivery (the batches of up to
``pipeline.batch_size`` lines) at a time. Sent as they come, each delivery would be its
own push, smaller than ``batch_bytes``, and the sink would sit idle while Loki answers.
The pipeline instead:

* carries the entries of one delivery that do not fill a push over to the next, so pushes
  are cut only at ``batch_bytes`` of lines and per-entry pairs, as Promtail cuts its
  batches (:func:`~.columns.full_ranges`); what is left is sent when it
  has waited ``batch_wait``, or at once on :meth:`PushPipeline.flush`;
* builds (encodes and compresses) the next pushes in the caller's thread while one
  sender thread has the current one in flight: at most :data:`AHEAD` pushes wait
  built, then :meth:`PushPipeline.submit` waits (backpressure);
* sends the pushes one at a time, in order, each through
  :meth:`~.delivery.Delivery.deliver` (retries, spool, refusals and dead
  letters as for any push), so Loki receives every stream's entries in order and never
  two requests of the sink at once: nothing relies on Loki accepting out-of-order writes;
* acknowledges deliveries by ticket, in order: delivery k is accepted once every push
  holding one of its entries is settled (stored, spooled or dead-lettered), and so is
  every delivery before it.

When a push cannot be settled (:class:`~log_capturer.sinks.base.SinkError`: the spool is
full, a disk error, the server unavailable with no spool, the sink closing), the pipeline
drops every push and entry it holds and reports the failure; the unaccepted tickets are
lost and their deliveries must be written again (:meth:`PushPipeline.reset`, then again
as new ones). Threads: the caller's (the dispatcher's) submits, flushes and polls; the
sender thread, started with the first submit, is stopped and joined by :meth:`close`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import structlog

from ...pipeline.batch import Batch
from ..base import SinkError
from .columns import Streams, full_ranges
from .delivery import Delivery
from .outcomes import Payload

_log = structlog.get_logger(__name__)

AHEAD = 2
"""Pushes built and waiting while one is in flight."""

P = TypeVar("P", bound=Payload)
P_co = TypeVar("P_co", bound=Payload, covariant=True)


class PushBuilder(Protocol[P_co]):
    """What a sink's encoder supplies to the pipeline."""

    def entries(self, batches: Sequence[Batch], out: Streams[Any] | None = None) -> Streams[Any]:
        """The batches' entries appended to ``out`` (a new Streams when None)."""
        ...

    def payload(self, streams: Streams[Any], positions: Sequence[int]) -> P_co:
        """The request of the entries at ``positions`` of ``streams``."""
        ...


class PushPipeline(Generic[P]):
    """Full pushes, built ahead, sent in order by one thread; deliveries acknowledged by
    ticket (read the module's docstring)."""

    def __init__(
        self,
        name: str,
        builder: PushBuilder[P],
        delivery: Delivery[P],
        *,
        batch_bytes: int,
        batch_wait: float,
        close_timeout: float,
    ) -> None:
        self.name = name
        self._builder = builder
        self._delivery = delivery
        self._batch_bytes = batch_bytes
        self._batch_wait = batch_wait
        self._close_timeout = close_timeout
        self._cond = threading.Condition()
        # Shared with the sender (under _cond): pushes built, the first one in flight, each
        # with the count of entries taken up to its last; tickets not yet accepted, with the
        # same count up to their delivery's last entry.
        self._queue: deque[tuple[P, int]] = deque()
        self._tickets: deque[tuple[int, int]] = deque()
        self._done = 0  # entries settled, counted since the start (or the last reset)
        self._accepted = 0  # the last ticket accepted (tickets count from 1)
        self._lost = range(0)  # the tickets the last reset dropped
        self._failure: SinkError | None = None
        self._stopping = False
        self._sender: threading.Thread | None = None
        # The caller's thread only.
        self._issued = 0  # the last ticket issued
        self._rest: Streams[Any] | None = None  # entries not in a push yet (less than a push)
        self._rest_since = 0.0  # monotonic time the oldest of them was taken
        self._taken = 0  # entries taken, counted as _done
        self._sealed = 0  # entries in pushes, counted as _done

    # -- the caller's side ------------------------------------------------------------

    def submit(self, batches: Sequence[Batch], timeout: float | None) -> int | None:
        """Take a delivery: its ticket, or None when no room came within ``timeout``
        (None: wait for it). Raises :class:`SinkError` after a failure (see
        :meth:`reset`) or once closing."""
        if not self.wait_room(timeout):
            return None
        with self._cond:
            self._raise_if_failed()
        rest = self._rest
        held = len(rest) if rest is not None else 0
        streams = self._builder.entries(batches, rest)
        self._taken += len(streams) - held
        full, rest_start = full_ranges(streams, self._batch_bytes)
        pushes = self._seal(streams, full)
        if rest_start < len(streams):
            if full or rest is None:
                self._rest_since = time.monotonic()
            self._rest = streams.tail(rest_start) if full else streams
        else:
            self._rest = None
        self._issued += 1
        with self._cond:
            self._queue.extend(pushes)
            self._tickets.append((self._issued, self._taken))
            self._advance()
            self._cond.notify_all()
        self._ensure_sender()
        return self._issued

    def wait_room(self, timeout: float | None) -> bool:
        """True once a push can be built without exceeding :data:`AHEAD` (or the pipeline
        failed or is closing: :meth:`submit` then says so); False after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._queue) > AHEAD and self._failure is None and not self._stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def flush(self) -> None:
        """Send what is left now, however small."""
        rest = self._rest
        if rest is None:
            return
        with self._cond:
            if self._failure is not None or self._stopping:
                return
        self._rest = None
        pushes = self._seal(rest, [range(len(rest))])
        with self._cond:
            self._queue.extend(pushes)
            self._cond.notify_all()

    def next_deadline(self) -> float | None:
        """When what is left is due to be sent (monotonic), or None."""
        return None if self._rest is None else self._rest_since + self._batch_wait

    def poll(self, now: float) -> None:
        """Send what is left once it waited ``batch_wait``."""
        due = self.next_deadline()
        if due is not None and now >= due:
            self.flush()

    def accepted(self) -> int:
        """The last ticket accepted, every earlier one with it."""
        with self._cond:
            return self._accepted

    @property
    def failed(self) -> bool:
        with self._cond:
            return self._failure is not None

    def wait(self, ticket: int, timeout: float | None) -> bool:
        """True once ``ticket`` is accepted; False after ``timeout``. Raises
        :class:`SinkError` when its delivery was dropped by a failure (write it again).
        A ticket from before the last :meth:`reset` but one must not be waited for (the
        caller writes every dropped delivery again once it learns of the failure)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if ticket in self._lost:
                raise SinkError(f"{self.name}: delivery dropped after a failure")
            while ticket > self._accepted:
                self._raise_if_failed()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def reset(self) -> None:
        """After a failure: forget it and everything held; the tickets not accepted are
        lost (:meth:`wait` raises for them)."""
        with self._cond:
            self._failure = None
            self._queue.clear()
            self._tickets.clear()
            self._lost = range(self._accepted + 1, self._issued + 1)
            self._taken = self._sealed = self._done
        self._rest = None

    def _seal(self, streams: Streams[Any], parts: Sequence[range]) -> list[tuple[P, int]]:
        """Pushes of ``parts`` of ``streams``, built here (encoded, compressed)."""
        out = []
        for part in parts:
            push = self._builder.payload(streams, part)
            push.body()  # built in this thread while the sender has another in flight
            out.append((push, self._sealed + part.stop))
        if parts:
            self._sealed += parts[-1].stop
        return out

    # -- the sender -------------------------------------------------------------------

    def _ensure_sender(self) -> None:
        if self._sender is None:
            self._sender = threading.Thread(
                target=self._send, name=f"{self.name}-sender", daemon=True
            )
            self._sender.start()

    def _send(self) -> None:
        while True:
            with self._cond:
                while (not self._queue or self._failure is not None) and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                push, end = self._queue[0]
            try:
                self._delivery.deliver([push])
            except SinkError as exc:
                with self._cond:
                    if not self._stopping:
                        _log.warning(
                            "sink_pipeline_failed", sink=self.name, error=str(exc),
                            pushes_dropped=len(self._queue),
                            hint="the deliveries it held are written again",
                        )
                    self._failure = exc
                    self._queue.clear()
                    self._cond.notify_all()
                continue
            except Exception as exc:  # a bug: report it as a failure, never lose the thread
                _log.exception("sink_sender_failed", sink=self.name)
                with self._cond:
                    self._failure = SinkError(f"{self.name}: {exc!r}")
                    self._queue.clear()
                    self._cond.notify_all()
                continue
            with self._cond:
                if self._queue and self._queue[0][0] is push:
                    self._queue.popleft()
                    self._done = end
                    self._advance()
                self._cond.notify_all()

    def _advance(self) -> None:
        """Accept the tickets whose entries are all settled (under ``_cond``)."""
        tickets = self._tickets
        while tickets and tickets[0][1] <= self._done:
            self._accepted = tickets.popleft()[0]

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure  # as Delivery raised it (its type says what failed)
        if self._stopping:
            raise SinkError(f"{self.name} sink is closed")

    # -- shutdown ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the sender (a push in flight is given ``close_timeout``); what is held is
        not acknowledged, so it is read again at the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._delivery.interrupt()
        sender = self._sender
        if sender is not None:
            sender.join(self._close_timeout)
            if sender.is_alive():
                _log.error("sink_sender_did_not_stop", sink=self.name,
                           timeout=self._close_timeout)
