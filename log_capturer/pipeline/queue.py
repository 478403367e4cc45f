"""The bounded queue between monitors and the dispatcher: backpressure instead of drops."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from ..metrics.registry import (
    QUEUE_BLOCKED_SECONDS,
    QUEUE_BYTES,
    QUEUE_CAPACITY_BYTES,
    QUEUE_CAPACITY_RECORDS,
    QUEUE_RECORDS,
    RECORDS_DROPPED,
)


class RecordQueue:
    """FIFO bounded by both a record count and a byte total.

    ``put`` blocks while full (the engine keeps the logs meanwhile, and ``since``
    resumes from them later) unless the drop policy is ``drop_newest``. One item is
    always admitted into an empty queue, however large, so nothing can wedge.
    Control items (a handful per container lifetime) are admitted past the bound.
    """

    def __init__(self, max_records: int, max_bytes: int, drop_newest: bool = False) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.drop_newest = drop_newest
        self._items: deque[tuple[Any, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        QUEUE_CAPACITY_RECORDS.set(max_records)
        QUEUE_CAPACITY_BYTES.set(max_bytes)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def bytes(self) -> int:
        with self._cond:
            return self._bytes

    def _full(self, size: int) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_records or self._bytes + size > self.max_bytes

    def put(self, item: Any, size: int, stop: threading.Event) -> bool:
        """Enqueue, waiting while full. False if ``stop`` was set first, or the item was dropped."""
        with self._cond:
            if self._full(size):
                if self.drop_newest:
                    RECORDS_DROPPED.labels("queue_full").inc()
                    return False
                started = time.monotonic()
                try:
                    while self._full(size):
                        if stop.is_set():
                            return False
                        self._cond.wait(0.25)
                finally:
                    QUEUE_BLOCKED_SECONDS.inc(time.monotonic() - started)
            self._append(item, size)
            return True

    def put_control(self, item: Any) -> None:
        with self._cond:
            self._append(item, 0)

    def _append(self, item: Any, size: int) -> None:
        self._items.append((item, size))
        self._bytes += size
        QUEUE_RECORDS.set(len(self._items))
        QUEUE_BYTES.set(self._bytes)
        self._cond.notify_all()

    def get_batch(self, max_items: int, max_wait: float, timeout: float) -> list[Any]:
        """Up to ``max_items``: waits up to ``timeout`` for the first, then ``max_wait`` to fill."""
        with self._cond:
            if not self._items and timeout > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            if not self._items:
                return []
            if len(self._items) < max_items and max_wait > 0:
                fill_deadline = time.monotonic() + max_wait
                while len(self._items) < max_items:
                    remaining = fill_deadline - time.monotonic()
                    if remaining <= 0 or not self._cond.wait(remaining):
                        break
            batch: list[Any] = []
            while self._items and len(batch) < max_items:
                item, size = self._items.popleft()
                self._bytes -= size
                batch.append(item)
            QUEUE_RECORDS.set(len(self._items))
            QUEUE_BYTES.set(self._bytes)
            self._cond.notify_all()
            return batch
