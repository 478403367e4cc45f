"""Waiting on conditions, never on the clock alone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; raise
    ``AssertionError`` naming ``what`` (and the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last  # type: ignore[no-any-return]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_count(
    count: Callable[[], int],
    total: int,
    timeout: float,
    stall: float,
    alive: Callable[[], bool] = lambda: True,
    poll: float = 0.05,
) -> bool:
    """Wait until ``count()`` reaches ``total``; give up after ``timeout`` seconds, when it
    did not grow for ``stall`` seconds, or when ``alive()`` turns false (the daemon
    exited). True if it got there. For long runs that report rather than assert."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while (now_count := count()) < total:
        now = time.monotonic()
        if now_count != last:
            last, last_change = now_count, now
        if now > deadline or now - last_change > stall or not alive():
            return False
        time.sleep(poll)
    return True
