"""The one backoff policy of every retry loop: capped exponential with equal jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_base


def backoff_seconds(attempt: int, initial: float, maximum: float) -> float:
    """Wait before retry ``attempt`` (1-based): ``initial``, 2x, 4x ... capped at ``maximum``,
    with equal jitter (between half and all of it), so clients failing together spread out
    but never retry in a tight loop."""
    nominal = min(maximum, initial * 2.0 ** min(attempt - 1, 32))
    return nominal / 2 + random.uniform(0, nominal / 2)


class capped_backoff(wait_base):
    """:func:`backoff_seconds` as a tenacity wait strategy."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum

    def __call__(self, retry_state: RetryCallState) -> float:
        return backoff_seconds(retry_state.attempt_number, self.initial, self.maximum)


def retrying(on_retry: Callable[[BaseException | None, RetryCallState], None], **kwargs: Any
             ) -> Retrying:
    """tenacity's :class:`~tenacity.Retrying` as every retry loop here uses it: the last
    error re-raised as it is, and ``on_retry(error, state)`` before each wait (to count and
    log it). ``kwargs``: ``retry``, ``stop``, ``wait``, ``sleep`` as tenacity takes them."""

    def before_sleep(state: RetryCallState) -> None:
        on_retry(state.outcome.exception() if state.outcome else None, state)

    return Retrying(before_sleep=before_sleep, reraise=True, **kwargs)
