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
        self._fill_target = 0  # how many items get_batch is waiting for (0: not waiting)
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

    def put_many(self, items: list[Any], sizes: list[int], stop: threading.Event) -> int:
        """Enqueue a batch in order, as :meth:`put` would one by one, with one lock
        round per run of items that fit (a socket read yields hundreds of lines).

        Returns how many leading items were handled (queued, or dropped by the
        ``drop_newest`` policy); fewer than ``len(items)`` only if ``stop`` was set
        while waiting for room.
        """
        total = len(items)
        done = 0
        with self._cond:
            while done < total:
                fit = self._fitting(sizes, done, total)
                if fit:
                    end = done + fit
                    self._items.extend(zip(items[done:end], sizes[done:end], strict=True))
                    self._bytes += sum(sizes[done:end])
                    done = end
                    self._published()
                    continue
                if self.drop_newest:  # the next item does not fit: drop it, like put()
                    RECORDS_DROPPED.labels("queue_full").inc()
                    done += 1
                    continue
                started = time.monotonic()
                try:
                    while not self._fitting(sizes, done, done + 1):
                        if stop.is_set():
                            return done
                        self._cond.wait(0.25)
                finally:
                    QUEUE_BLOCKED_SECONDS.inc(time.monotonic() - started)
        return done

    def _fitting(self, sizes: list[int], start: int, end: int) -> int:
        """How many of ``sizes[start:end]`` fit now, in order (the first always fits an
        empty queue)."""
        count = len(self._items)
        room = self.max_records - count
        if count == 0:
            room = max(room, 1)
        if room <= 0:
            return 0
        end = min(end, start + room)
        budget = self.max_bytes - self._bytes
        fit = 0
        for size in sizes[start:end]:
            budget -= size
            if budget < 0 and (count or fit):
                break
            fit += 1
        return fit

    def _published(self) -> None:
        QUEUE_RECORDS.set(len(self._items))
        QUEUE_BYTES.set(self._bytes)
        # Wake the consumer only once what it waits for is there, not at every batch
        # put (each wake-up is a thread switch and a GIL hand-over).
        if self._fill_target and len(self._items) >= self._fill_target:
            self._cond.notify_all()

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
            try:
                if not self._items and timeout > 0:
                    self._fill_target = 1
                    self._cond.wait_for(lambda: bool(self._items), timeout)
                if not self._items:
                    return []
                if len(self._items) < max_items and max_wait > 0:
                    self._fill_target = max_items
                    fill_deadline = time.monotonic() + max_wait
                    while len(self._items) < max_items:
                        remaining = fill_deadline - time.monotonic()
                        if remaining <= 0 or not self._cond.wait(remaining):
                            break
            finally:
                self._fill_target = 0
            items = self._items
            if len(items) <= max_items:
                pairs = list(items)
                items.clear()
            else:
                pairs = [items.popleft() for _ in range(max_items)]
            batch = [item for item, _ in pairs]
            self._bytes -= sum(size for _, size in pairs)
            QUEUE_RECORDS.set(len(self._items))
            QUEUE_BYTES.set(self._bytes)
            self._cond.notify_all()
            return batch
