"""A delivery written to one sink until it accepts it: retried with capped backoff, until
shutdown gives up, a limit passes (a sink leaving at a reload) or a reload removes or
replaces the sink; and what is logged and counted when a delivery is given up on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_any,
    stop_never,
    stop_when_event_set,
)
from tenacity.stop import stop_base

from ..backoff import capped_backoff, retrying
from ..metrics.registry import SINK_BATCHES, SINK_RECORDS, SINK_SEND_SECONDS
from ..sinks.base import Sink, SinkError
from .batch import Batch

_log = structlog.get_logger(__name__)


class _StopWhen(stop_base):
    """Stop retrying once ``condition()`` holds."""

    def __init__(self, condition: Callable[[], bool]) -> None:
        self.condition = condition

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.condition()


class SinkWriter:
    """The dispatcher's writes (its thread only). ``abandon``: shutdown gives up; ``wake``:
    ends a retry's wait (shutdown, or a reload asked for); ``leaves(name)``: a reload asked
    for removes or replaces sink ``name``; ``replacing()``: the sinks a reload in progress
    replaces."""

    def __init__(
        self,
        abandon: threading.Event,
        wake: threading.Event,
        leaves: Callable[[str], bool],
        replacing: Callable[[], frozenset[str]],
    ) -> None:
        self._abandon = abandon
        self._wake = wake
        self._leaves = leaves
        self._replacing = replacing
        self.retrying = ""
        """The sink a retry waits for."""

    def write(
        self, sink: Sink, batches: list[Batch], lines: int, limit: float | None = None
    ) -> bool:
        """Write until ``sink`` accepts; False if shutdown gave up on it, or (``limit``,
        at a reload) it did not accept within ``limit`` seconds."""
        failures = 0
        failed_at = 0.0  # monotonic time of this delivery's first failure

        def on_retry(exc: BaseException | None, state: RetryCallState) -> None:
            nonlocal failures, failed_at
            # One warning per episode (a full disk fails every retry for minutes); the
            # retries are counted (sink_batches_total{status="error"}) and logged at debug.
            log = _log.debug if failures else _log.warning
            if not failures:
                failed_at = time.monotonic()
            failures += 1
            log("sink_write_failed", sink=sink.name, attempt=state.attempt_number, error=str(exc))

        self.retrying = sink.name
        attempts = retrying(
            on_retry,
            retry=retry_if_exception_type(SinkError),
            wait=capped_backoff(0.2, 10.0),
            stop=stop_any(
                stop_when_event_set(self._abandon),
                stop_after_delay(limit) if limit is not None else stop_never,
                _StopWhen(lambda: self._leaves(sink.name)),
            ),
            sleep=self._sleep,
        )
        try:
            for attempt in attempts:
                with attempt:
                    started = time.monotonic()
                    try:
                        sink.write(batches)
                    except SinkError:
                        SINK_BATCHES.labels(sink.name, "error").inc()
                        raise
                    SINK_SEND_SECONDS.labels(sink.name).observe(time.monotonic() - started)
        except SinkError as exc:
            if self._abandon.is_set():
                abandoned(sink, lines, str(exc))
            elif limit is not None:
                self.left_behind(sink, lines, str(exc))
            return False
        SINK_BATCHES.labels(sink.name, "accepted").inc()
        SINK_RECORDS.labels(sink.name, "accepted").inc(lines)
        if failures:
            _log.info(
                "sink_write_recovered",
                sink=sink.name,
                attempts=failures + 1,
                seconds=round(time.monotonic() - failed_at, 3),
            )
        return True

    def _sleep(self, seconds: float) -> None:
        """A retry's wait: ended by shutdown, or by a reload that removes or replaces the
        sink being retried (a sink that stays waits it out)."""
        deadline = time.monotonic() + seconds
        if self._wake.wait(seconds) and not self._leaves(self.retrying):
            self._abandon.wait(max(0.0, deadline - time.monotonic()))

    def left_behind(self, sink: Sink, lines: int, error: str) -> None:
        """A sink leaving at a reload did not accept a delivery within drain_timeout."""
        if sink.name in self._replacing():
            _log.warning(
                "sink_drain_handed_over", sink=sink.name, records=lines, error=error,
                hint="its replacement receives what it did not accept",
            )
        else:
            SINK_RECORDS.labels(sink.name, "abandoned").inc(lines)
            _log.error("sink_batch_abandoned_at_reload", sink=sink.name, records=lines,
                       error=error)


def abandoned(sink: Sink, lines: int, error: str) -> None:
    """Shutdown gave up on a delivery ``sink`` had not accepted (it is re-read at the
    next start, from the positions that did not move past it)."""
    SINK_RECORDS.labels(sink.name, "abandoned").inc(lines)
    _log.error("sink_batch_abandoned_at_shutdown", sink=sink.name, records=lines, error=error)
