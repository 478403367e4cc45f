"""An optional per-container read rate bound: the monitor paces its reads, the engine keeps
the rest.

Unlike the peers' rate limits (Promtail's ``limits_config``, Vector's ``throttle``),
nothing is dropped: a monitor over its bound waits between socket reads, so the engine's
log file holds what it has not read yet, and ``since`` resumes from exactly where the
reading stopped. A loud container then costs the daemon (and the sinks) at most its
bound, and takes longer to deliver.

The bound is a token bucket over the new lines (and bytes) each read queued, with a
burst of :data:`BURST_SECONDS` of the rate: a container quiet for a while may deliver a
second's worth at once, and on average never more than the rate.
"""

from __future__ import annotations

BURST_SECONDS = 1.0
"""How far ahead of its rate a container may read (the bucket's size, in seconds)."""


class ReadPace:
    """How long a monitor waits after each read to stay under ``lines_per_s`` and
    ``bytes_per_s`` (0: no bound on that). One per monitor thread, not thread-safe."""

    __slots__ = ("_due", "burst_s", "bytes_per_s", "lines_per_s")

    def __init__(
        self, lines_per_s: float, bytes_per_s: float, burst_s: float = BURST_SECONDS
    ) -> None:
        self.lines_per_s = lines_per_s
        self.bytes_per_s = bytes_per_s
        self.burst_s = burst_s
        # Per bound: when what was read so far is "paid for" at the rate (GCRA's
        # theoretical arrival time), on the caller's monotonic clock.
        self._due = [0.0, 0.0]

    @property
    def bounded(self) -> bool:
        return self.lines_per_s > 0 or self.bytes_per_s > 0

    def delay(self, lines: int, size: int, now: float) -> float:
        """Account for a read that queued ``lines`` new lines of ``size`` message bytes at
        ``now``; the seconds to wait before the next read (0: none)."""
        wait = 0.0
        for index, (used, rate) in enumerate(((lines, self.lines_per_s), (size, self.bytes_per_s))):
            if rate <= 0:
                continue
            due = max(self._due[index], now) + used / rate
            self._due[index] = due
            wait = max(wait, due - now - self.burst_s)
        return wait
