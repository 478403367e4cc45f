"""The one backoff policy of every retry loop: capped exponential with equal jitter."""

from __future__ import annotations

import random

from tenacity import RetryCallState
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
