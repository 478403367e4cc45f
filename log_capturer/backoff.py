"""The one backoff policy of every retry loop: capped exponential with proportional jitter."""

from __future__ import annotations

from tenacity import wait_exponential, wait_random
from tenacity.wait import wait_base


def capped_backoff(initial: float, maximum: float) -> wait_base:
    """``initial``, 2x, 4x ... up to ``maximum``, plus up to ``initial`` of random jitter
    (so many monitors failing together do not retry in lockstep)."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)
