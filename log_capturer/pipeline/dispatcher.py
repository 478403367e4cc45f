"""The delivery thread: queue -> every sink -> acknowledged positions -> checkpoints."""

from __future__ import annotations

import threading
import time

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
)

from ..backoff import backoff_seconds, capped_backoff
from ..metrics.registry import POSITION_SAVES, SINK_BATCHES, SINK_RECORDS, SINK_SEND_SECONDS
from ..positions.ledger import Ledger
from ..sinks.base import Sink, SinkError
from .batch import Batch, RecordBatch, total_lines
from .config import PipelineConfig
from .queue import BatchQueue
from .record import LogRecord
from .stages import NoStages, StageChain

_log = structlog.get_logger(__name__)


class Dispatcher:
    """Owns one thread that takes batches off the queue and hands them to every sink.

    Each delivery is the batches queued up to ``batch_size`` lines (one sink call, one
    write). It is acknowledged (positions advance past it) only after every sink
    accepted it; a sink that fails is retried with capped backoff until it accepts
    or shutdown gives up on it, and then nothing of it is acknowledged, so the next
    start re-reads it from the engine. Batches become records only for the stages.
    Positions are saved every ``flush_interval`` together with each sink's
    checkpoint, in this thread, so the saved positions and the sinks' state always
    describe the same moment.
    """

    def __init__(
        self,
        queue: BatchQueue,
        sinks: list[Sink],
        ledger: Ledger,
        config: PipelineConfig,
        flush_interval: float,
        stages: StageChain | None = None,
    ) -> None:
        self.queue = queue
        self.stages: StageChain = stages or NoStages()
        self._staged = not isinstance(self.stages, NoStages)
        self.sinks = sinks
        self.ledger = ledger
        self.config = config
        self.flush_interval = flush_interval
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self.delivered = 0
        self._checkpoint_failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Deliver what is queued (up to ``drain_timeout``), save positions, return."""
        self._stopping.set()
        self._thread.join(self.config.drain_timeout if timeout is None else timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._thread.join(30)
            if self._thread.is_alive():
                _log.error("dispatcher_did_not_stop")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_interval
        try:
            while not self._abandon.is_set():
                wake = next_flush
                held = self.stages.next_deadline()
                if held is not None:
                    wake = min(wake, held)
                wait = 0.0 if self._stopping.is_set() else max(0.0, wake - time.monotonic())
                batches = self.queue.get(self.config.batch_size, self.config.batch_wait, wait)
                if batches:
                    self._deliver(self._through_stages(batches))
                if self._staged:
                    self._deliver(RecordBatch.group(self.stages.poll(time.monotonic())))
                if time.monotonic() >= next_flush:
                    self.checkpoint()
                    next_flush = time.monotonic() + self.flush_interval
                if self._stopping.is_set() and not batches:
                    break
        except Exception:
            _log.exception("dispatcher_failed")
            raise
        finally:
            try:
                if not self._abandon.is_set() and self._staged:
                    self._deliver(RecordBatch.group(self.stages.flush()))
                self.checkpoint(force=True)
            except Exception:
                _log.exception("final_checkpoint_failed")
            left = len(self.queue)
            if left:  # not acknowledged: the next start reads them again from the engine
                _log.warning("queue_abandoned_at_shutdown", records=left)

    def _through_stages(self, batches: list[Batch]) -> list[Batch]:
        """Batches of containers a stage applies to become records and go through the
        stages; the others pass as they are (columns)."""
        if not self._staged:
            return batches
        records: list[LogRecord] = []
        passed: list[Batch] = []
        applies = self.stages.applies_to
        for batch in batches:
            if applies(batch.container):
                records += batch.records()
            else:
                passed.append(batch)
        if not records:
            return passed
        return passed + RecordBatch.group(self.stages.process(records, time.monotonic()))

    def _deliver(self, batches: list[Batch]) -> None:
        if not batches:
            return
        if any(sink.wants_checkpoint() for sink in self.sinks):
            # A sink rotates only right after a saved checkpoint (see FileSink.recover):
            # wait for one (a full disk) rather than write without it.
            failures = 0
            while not self.checkpoint(force=True):
                failures += 1
                if self._abandon.wait(backoff_seconds(failures, 0.2, 10.0)):
                    # Abandoned at shutdown: no sink got this delivery, none acknowledges it.
                    for sink in self.sinks:
                        self._abandoned(sink, total_lines(batches), "positions not saved")
                    return
        lines = total_lines(batches)
        for sink in self.sinks:
            if not self._write_with_retry(sink, batches, lines):
                return  # abandoned at shutdown: nothing of this delivery is acknowledged
        self.ledger.acknowledge(batches)
        self.delivered += lines

    def _write_with_retry(self, sink: Sink, batches: list[Batch], lines: int) -> bool:
        failures = 0
        failed_at = 0.0  # monotonic time of this delivery's first failure

        def before_sleep(state: RetryCallState) -> None:
            nonlocal failures, failed_at
            exc = state.outcome.exception() if state.outcome else None
            # One warning per episode (a full disk fails every retry for minutes); the
            # retries are counted (sink_batches_total{status="error"}) and logged at debug.
            log = _log.debug if failures else _log.warning
            if not failures:
                failed_at = time.monotonic()
            failures += 1
            log("sink_write_failed", sink=sink.name, attempt=state.attempt_number, error=str(exc))

        retrying = Retrying(
            retry=retry_if_exception_type(SinkError),
            wait=capped_backoff(0.2, 10.0),
            stop=stop_when_event_set(self._abandon),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    started = time.monotonic()
                    try:
                        sink.write(batches)
                    except SinkError:
                        SINK_BATCHES.labels(sink.name, "error").inc()
                        raise
                    SINK_SEND_SECONDS.labels(sink.name).observe(time.monotonic() - started)
        except SinkError as exc:
            self._abandoned(sink, lines, str(exc))
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
        self._abandon.wait(seconds)

    @staticmethod
    def _abandoned(sink: Sink, lines: int, error: str) -> None:
        """Shutdown gave up on a delivery ``sink`` had not accepted (it is re-read at the
        next start, from the positions that did not move past it)."""
        SINK_RECORDS.labels(sink.name, "abandoned").inc(lines)
        _log.error("sink_batch_abandoned_at_shutdown", sink=sink.name, records=lines, error=error)

    def checkpoint(self, force: bool = False) -> bool:
        """Make sinks durable, then save positions with their state (this thread only).

        False if that failed (a full disk): the previous positions file stays, and the
        positions stay dirty for the next try. One warning per episode.
        """
        if not (force or self.ledger.dirty):
            return True
        try:
            states = {sink.name: sink.checkpoint() for sink in self.sinks}
        except OSError as exc:  # not durable: positions must not move past it
            POSITION_SAVES.labels("error").inc()
            return self._checkpoint_failed(exc)
        try:  # counts its own failures
            self.ledger.save({k: v for k, v in states.items() if v is not None}, force=force)
        except OSError as exc:
            return self._checkpoint_failed(exc)
        if self._checkpoint_failing:
            self._checkpoint_failing = False
            _log.info("checkpoint_recovered")
        return True

    def _checkpoint_failed(self, exc: OSError) -> bool:
        if not self._checkpoint_failing:
            self._checkpoint_failing = True
            _log.warning("checkpoint_failed", error=str(exc))
        return False
