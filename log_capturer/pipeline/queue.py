"""The bounded queue between monitors and the dispatcher: backpressure instead of drops."""

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


class BatchQueue:
    """FIFO of batches bounded by both a line count and a byte total.

    :meth:`put` blocks while the batch does not fit (the engine keeps the logs
    meanwhile, and ``since`` resumes from them later) unless the policy is
    ``drop_newest``. A batch always fits an empty queue, however large, so nothing can
    wedge. The consumer is woken once what it waits for is there (or its wait ends),
    not at every put: each wake-up is a thread switch and a GIL hand-over.
    """

    def __init__(self, max_records: int, max_bytes: int, drop_newest: bool = False) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.drop_newest = drop_newest
        self._items: deque[Batch] = deque()
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
        if not self._items:
            return True
        return (
            self._records + len(batch) <= self.max_records
            and self._bytes + batch.size <= self.max_bytes
        )

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
            self._items.append(batch)
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
        large): waits up to ``timeout`` for the first, then ``max_wait`` to fill."""
        with self._cond:
            try:
                if not self._items and timeout > 0:
                    self._fill_target = 1
                    self._cond.wait_for(lambda: bool(self._items), timeout)
                if not self._items:
                    return []
                if self._records < max_records and max_wait > 0:
                    self._fill_target = max_records
                    fill_deadline = time.monotonic() + max_wait
                    while self._records < max_records:
                        remaining = fill_deadline - time.monotonic()
                        if remaining <= 0 or not self._cond.wait(remaining):
                            break
            finally:
                self._fill_target = 0
            items = self._items
            out = [items.popleft()]
            taken = len(out[0])
            while items and taken + len(items[0]) <= max_records:
                batch = items.popleft()
                out.append(batch)
                taken += len(batch)
            self._records -= taken
            self._bytes -= sum(b.size for b in out)
            self._publish()
            self._cond.notify_all()  # room for blocked producers
            return out
