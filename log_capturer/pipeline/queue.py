"""The bounded queue between monitors and the dispatcher: backpressure instead of drops, and
a loud container never ahead of a quiet one."""

from __future__ import annotations

import threading
import time
from collections import deque

from ..metrics.registry import (
    QUEUE_BLOCKED_SECONDS,
    QUEUE_BYTES,
    QUEUE_CAPACITY_BYTES,
    QUEUE_CAPACITY_RECORDS,
    QUEUE_RECORDS,
    RECORDS_DROPPED,
)
from .batch import Batch

RESERVE = 8
"""1/RESERVE of the bounds is kept for containers with nothing queued (see BatchQueue)."""


class BatchQueue:
    """Batches bounded by both a line count and a byte total, in one FIFO lane per
    container, taken round robin.

    :meth:`put` blocks while the batch does not fit (the engine keeps the logs
    meanwhile, and ``since`` resumes from them later) unless the policy is
    ``drop_newest``. A batch always fits an empty queue, however large, so nothing can
    wedge. The consumer is woken once what it waits for is there (or its wait ends),
    not at every put: each wake-up is a thread switch and a GIL hand-over.

    A loud container does not hold up quiet ones. :meth:`get` takes each waiting
    container's oldest batch in turn (containers served last go to the back), so a
    quiet line goes with the next delivery however many lines a backlog has queued
    before it; within a container the order is kept (positions move per container
    and stream, so deliveries may interleave containers freely). And a container that
    already has a batch queued may fill only ``1 - 1/RESERVE`` of the bounds: the rest
    is for containers with nothing queued, so their lines enter at once while a backlog
    keeps the queue full.
    """

    def __init__(self, max_records: int, max_bytes: int, drop_newest: bool = False) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.drop_newest = drop_newest
        # container id -> its batches, each with when it was queued (monotonic); the
        # dict's order is the round robin's (a lane served goes to the back).
        self._lanes: dict[str, deque[tuple[float, Batch]]] = {}
        self._records = 0
        self._bytes = 0
        self._cond = threading.Condition()
        self._fill_target = 0  # lines get() waits for (0: not waiting)
        QUEUE_CAPACITY_RECORDS.set(max_records)
        QUEUE_CAPACITY_BYTES.set(max_bytes)

    def __len__(self) -> int:
        """Lines queued."""
        with self._cond:
            return self._records

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def _fits(self, batch: Batch) -> bool:
        if not self._lanes:
            return True
        max_records, max_bytes = self.max_records, self.max_bytes
        if batch.container.id in self._lanes:  # the reserve is for the others
            max_records -= max_records // RESERVE
            max_bytes -= max_bytes // RESERVE
        return self._records + len(batch) <= max_records and self._bytes + batch.size <= max_bytes

    def put(self, batch: Batch, stop: threading.Event) -> bool:
        """Enqueue, waiting while full. False if ``stop`` was set first, or the batch was
        dropped by the ``drop_newest`` policy (counted)."""
        with self._cond:
            if not self._fits(batch):
                if self.drop_newest:
                    RECORDS_DROPPED.labels("queue_full").inc(len(batch))
                    return False
                started = time.monotonic()
                try:
                    while not self._fits(batch):
                        if stop.is_set():
                            return False
                        self._cond.wait(0.25)
                finally:
                    QUEUE_BLOCKED_SECONDS.inc(time.monotonic() - started)
            lane = self._lanes.get(batch.container.id)
            if lane is None:
                lane = self._lanes[batch.container.id] = deque()
            lane.append((time.monotonic(), batch))
            self._records += len(batch)
            self._bytes += batch.size
            self._publish()
            if self._fill_target and self._records >= self._fill_target:
                self._cond.notify_all()
            return True

    def resize(self, max_records: int, max_bytes: int, drop_newest: bool) -> None:
        """New bounds and policy (a reload); producers waiting for room look again."""
        with self._cond:
            self.max_records = max_records
            self.max_bytes = max_bytes
            self.drop_newest = drop_newest
            QUEUE_CAPACITY_RECORDS.set(max_records)
            QUEUE_CAPACITY_BYTES.set(max_bytes)
            self._cond.notify_all()

    def _publish(self) -> None:
        QUEUE_RECORDS.set(self._records)
        QUEUE_BYTES.set(self._bytes)

    def get(self, max_records: int, max_wait: float, timeout: float) -> list[Batch]:
        """Batches holding up to ``max_records`` lines (at least one batch, however
        large), each waiting container's oldest first (see the class): waits up to
        ``timeout`` for the first, then until the oldest queued batch has waited
        ``max_wait`` for the others to fill it (a batch queued while the consumer was
        busy has waited already)."""
        with self._cond:
            try:
                if not self._lanes and timeout > 0:
                    self._fill_target = 1
                    self._cond.wait_for(lambda: bool(self._lanes), timeout)
                if not self._lanes:
                    return []
                if self._records < max_records and max_wait > 0:
                    self._fill_target = max_records
                    oldest = min(lane[0][0] for lane in self._lanes.values())
                    fill_deadline = oldest + max_wait
                    while self._records < max_records:
                        remaining = fill_deadline - time.monotonic()
                        if remaining <= 0 or not self._cond.wait(remaining):
                            break
            finally:
                self._fill_target = 0
            out = self._take(max_records)
            self._records -= sum(map(len, out))
            self._bytes -= sum(b.size for b in out)
            self._publish()
            self._cond.notify_all()  # room for blocked producers
            return out

    def _take(self, max_records: int) -> list[Batch]:
        """Round robin over the lanes: each one's oldest batch in turn while they fit."""
        lanes = self._lanes
        order = list(lanes)
        out: list[Batch] = []
        taken = 0
        served: dict[str, None] = {}  # lanes served and still waiting, in order
        while True:
            took = False
            for cid in order:
                lane = lanes.get(cid)
                if not lane:
                    continue
                size = len(lane[0][1])
                if out and taken + size > max_records:
                    continue
                out.append(lane.popleft()[1])
                taken += size
                took = True
                if not lane:
                    del lanes[cid]
                    served.pop(cid, None)
                else:
                    served[cid] = None
            if not took or taken >= max_records or not lanes:
                break
        for cid in served:  # to the back: a lane not served this time goes first next
            lane = lanes.pop(cid, None)
            if lane:
                lanes[cid] = lane
        return out
