"""The delivery thread: queue -> every sink -> acknowledged positions -> checkpoints."""

from __future__ import annotations

import threading
import time

import structlog

from ..backoff import backoff_seconds
from ..metrics.registry import POSITION_SAVES, SINK_RECORDS
from ..positions.ledger import Ledger
from ..sinks.base import Sink, SinkError
from .batch import Batch, RecordBatch, total_lines
from .config import PipelineConfig
from .held import DROPPED, Held, HeldDeliveries
from .queue import BatchQueue
from .reconfigure import Handover, Reconfiguration, swap_sinks
from .record import LogRecord
from .stages import NoStages, StageChain
from .writes import SinkWriter, abandoned

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

    A pipelined sink (the network sinks) takes a delivery without waiting for the server
    (``Sink.submit``): the delivery is held, and acknowledged once every pipelined sink
    reports it accepted, deliveries strictly in order. Held deliveries are settled (waited
    for, and written again synchronously where the sink failed) before a reload swaps
    sinks, at shutdown, and whenever a pipelined sink reports a failure.
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
        self._pending: Reconfiguration | None = None
        self._pending_lock = threading.Lock()
        self._handover = Handover()  # while a reconfiguration drains
        self._wake = threading.Event()  # ends a retry's wait: shutdown, or a reload asked
        self._writer = SinkWriter(
            self._abandon, self._wake, self._leaves_at_reload, lambda: self._handover.replacing
        )
        self._held = HeldDeliveries()  # in order: acknowledged from the oldest

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Deliver what is queued (up to ``drain_timeout``), save positions, return."""
        self._stopping.set()
        self._thread.join(self.config.drain_timeout if timeout is None else timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._wake.set()
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
                if self._pending is not None:
                    self._reconfigure()
                wake = next_flush
                held = self.stages.next_deadline()
                if held is not None:
                    wake = min(wake, held)
                for sink in self.sinks:
                    due = sink.next_deadline()
                    if due is not None:
                        wake = min(wake, due)
                wait = 0.0 if self._stopping.is_set() else max(0.0, wake - time.monotonic())
                batches = self.queue.get(self.config.batch_size, self.config.batch_wait, wait)
                if batches:
                    self._deliver(self._through_stages(batches))
                if self._staged:
                    self._deliver(RecordBatch.group(self.stages.poll(time.monotonic())))
                now = time.monotonic()
                for sink in self.sinks:
                    sink.poll(now)
                self._collect()
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
                if not self._abandon.is_set():
                    self._settle()
                self.checkpoint(force=True)
            except Exception:
                _log.exception("final_checkpoint_failed")
            left = len(self.queue)
            if left:  # not acknowledged: the next start reads them again from the engine
                _log.warning("queue_abandoned_at_shutdown", records=left)

    # -- reload --------------------------------------------------------------------------

    def reconfigure(self, change: Reconfiguration, give_up: threading.Event) -> bool:
        """Have the dispatcher thread apply ``change`` (see :meth:`_reconfigure`) and wait
        for it; False if ``give_up`` was set or the thread ended first. Any thread."""
        with self._pending_lock:
            self._pending = change
        self._wake.set()  # a sink leaving at this change stops its retries (see _deliver)
        while not change.done.wait(0.2):
            if give_up.is_set() or not self.alive:
                return False
        return True

    def _reconfigure(self) -> None:
        """Apply the pending reconfiguration, in this thread, between deliveries.

        When sinks or stages change, the lines queued when it was asked for are
        delivered first with the running sinks and stages, the stages release what they
        hold (an open multiline group ends there), and the sinks are checkpointed with
        the positions: every line read before the reload reached every old sink. A sink
        leaving (removed, or replaced by one with new settings) gets ``drain_timeout``
        per delivery: a removed one that does not accept it is given up on (counted as
        abandoned; it no longer holds positions back), a replaced one's deliveries go to
        its replacement. Then each leaving sink is closed (its files and threads
        released) before its replacement is built, so the two never run at once (a
        spool directory has one owner). A new sink receives the deliveries from then on.
        """
        with self._pending_lock:
            change, self._pending = self._pending, None
            if not self._abandon.is_set():
                self._wake.clear()
        if change is None:
            return
        swaps = change.swaps(self.sinks)
        try:
            if swaps:
                self._handover.begin(change, self.sinks)
                self._settle()
                if self._handover.interrupted is not None:
                    self._deliver(*self._handover.interrupted)
                self._drain(len(self.queue))
                if self._staged and not self._abandon.is_set():
                    self._deliver(RecordBatch.group(self.stages.flush()))
                if not self._abandon.is_set():
                    self._settle()
                if self._abandon.is_set():
                    return
                self.checkpoint(force=True)
                self.sinks = swap_sinks(self.sinks, change)
                if change.stages is not None:
                    self.stages = change.stages
                    self._staged = not isinstance(self.stages, NoStages)
                self._hand_over()
            self.config = change.config
            self.flush_interval = change.flush_interval
            if swaps:
                self.checkpoint(force=True)
        finally:
            self._handover = Handover()
            change.done.set()

    def _drain(self, lines: int) -> None:
        """Deliver ``lines`` lines from the queue (whole batches) through the running
        stages and sinks."""
        while lines > 0 and not self._abandon.is_set():
            batches = self.queue.get(min(lines, self.config.batch_size), 0.0, 0.0)
            if not batches:
                return
            lines -= total_lines(batches)
            self._deliver(self._through_stages(batches))

    def _hand_over(self) -> None:
        """The deliveries a replaced sink gave up on go to its replacement; then they are
        acknowledged (if it could not be built, they are abandoned for it)."""
        replacements = [s for s in self.sinks if s.name in self._handover.gave_up]
        for batches in self._handover.carry:
            lines = total_lines(batches)
            for sink in replacements:
                if not self._writer.write(sink, batches, lines):
                    return  # abandoned at shutdown: not acknowledged
            self.ledger.acknowledge(batches)
            self.delivered += lines

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

    def _deliver(self, batches: list[Batch], accepted: set[str] | None = None) -> None:
        """Hand ``batches`` to every sink (but those in ``accepted``, which have them),
        then acknowledge them. A reload asked for meanwhile cuts short the retries of a
        sink it removes or replaces: the delivery is finished by :meth:`_reconfigure`."""
        if not batches:
            return
        accepted = set() if accepted is None else accepted
        if any(sink.wants_checkpoint() for sink in self.sinks):
            # A sink rotates only right after a saved checkpoint (see FileSink.recover):
            # wait for one (a full disk) rather than write without it. Nothing may be
            # held then: the state saved must be the sink's current one.
            if self._held and not self._settle():
                if not self._abandon.is_set():  # a reload that removes or replaces one
                    self._handover.interrupted = (batches, accepted)
                return
            failures = 0
            while not self.checkpoint(force=True):
                failures += 1
                if self._abandon.wait(backoff_seconds(failures, 0.2, 10.0)):
                    # Abandoned at shutdown: no sink got this delivery, none acknowledges it.
                    for sink in self.sinks:
                        abandoned(sink, total_lines(batches), "positions not saved")
                    return
        lines = total_lines(batches)
        # Pipelined sinks take the delivery after the others accepted it (a reload that cuts
        # a write short then finds it in none of them); a leaving sink writes it.
        handover = self._handover
        pipelined = [
            sink for sink in self.sinks
            if sink.pipelined and sink.name not in accepted
            and sink.name not in handover.gave_up and sink.name not in handover.leaving
        ]
        if pipelined and not self._wait_room(pipelined):
            if not self._abandon.is_set():  # a reload that removes or replaces one asked
                self._handover.interrupted = (batches, accepted)
            return
        if pipelined:
            self._held.note_states(self.sinks, pipelined)
        for sink in self.sinks:
            if sink.name in accepted or sink in pipelined:
                continue
            if sink.name in handover.gave_up:  # leaving, did not accept an earlier delivery
                if handover.hands_over(sink.name):
                    SINK_RECORDS.labels(sink.name, "abandoned").inc(lines)
                continue
            leaving = sink.name in handover.leaving
            limit = self.config.drain_timeout if leaving else None
            if self._writer.write(sink, batches, lines, limit):
                accepted.add(sink.name)
                continue
            if self._abandon.is_set():
                return  # abandoned at shutdown: nothing of it is acknowledged
            if not leaving:  # a reload that removes or replaces it cut its retries short
                self._handover.interrupted = (batches, accepted)
                return
            handover.gave_up.add(sink.name)
        tickets: dict[str, int] = {}
        for sink in pipelined:
            try:
                ticket = sink.submit(batches, 0.0)
            except SinkError:  # it failed: the next settle writes this one again
                ticket = None
            tickets[sink.name] = DROPPED if ticket is None else ticket
        if tickets or self._held:
            self._held.hold(Held(batches, lines, tickets))
            self._collect()
            return
        self._finish(batches, lines)

    def _finish(self, batches: list[Batch], lines: int) -> None:
        """Every sink accepted ``batches`` (or gave up on them at a reload): acknowledge."""
        if self._handover.gave_up & self._handover.replacing:
            # A sink being replaced gave up: the delivery waits for its replacement,
            # unacknowledged (a removed sink that gave up holds nothing back).
            self._handover.carry.append(batches)
            return
        self.ledger.acknowledge(batches)
        self.delivered += lines

    def _wait_room(self, sinks: list[Sink]) -> bool:
        """Wait until each pipelined sink can take a delivery; False if shutdown gave up
        or a reload removes or replaces one of them."""
        for sink in sinks:
            self._writer.retrying = sink.name
            while not sink.wait_room(0.2):
                self._collect()  # acknowledge what was accepted meanwhile
                if self._abandon.is_set() or self._leaves_at_reload(sink.name):
                    return False
        return True

    def _collect(self) -> None:
        """Acknowledge the held deliveries every sink accepted, oldest first; a sink that
        failed (or could not take one) has them settled at once."""
        done, settle = self._held.accepted({sink.name: sink for sink in self.sinks})
        for held in done:
            self._finish(held.batches, held.lines)
        if settle:
            self._settle()

    def _settle(self) -> bool:
        """Wait for every held delivery, in order (a reload, shutdown, a failed sink): a
        sink that dropped one writes it again, retried like any write. False when
        shutdown, or a reload removing or replacing a sink, cut it short (what is still
        held stays held)."""
        for running in self.sinks:
            if running.pipelined:
                running.flush()
        by_name = {running.name: running for running in self.sinks}
        handover = self._handover
        while self._held:
            held = self._held.oldest
            for name in list(held.tickets):
                sink = by_name.get(name)
                if sink is None:  # not running any more: nothing to wait for
                    del held.tickets[name]
                    continue
                if name in handover.gave_up:
                    if handover.hands_over(name):
                        SINK_RECORDS.labels(name, "abandoned").inc(held.lines)
                    del held.tickets[name]
                    continue
                leaving = name in handover.leaving
                limit = self.config.drain_timeout if leaving else None
                if self._await(sink, held, limit):
                    if name in held.tickets:  # accepted as taken (else written again)
                        held.accepted_by(name)
                    continue
                if self._abandon.is_set() or not leaving:
                    return False
                handover.gave_up.add(name)
                del held.tickets[name]
            self._held.release_oldest()
            self._finish(held.batches, held.lines)
        return True

    def _await(self, sink: Sink, held: Held, limit: float | None) -> bool:
        """Wait until ``sink`` accepted ``held`` (written again if it dropped it); False
        at shutdown, after ``limit`` seconds, or when a reload removes or replaces it."""
        ticket = held.tickets[sink.name]
        started = time.monotonic()
        while ticket >= 0:
            try:
                if sink.wait(ticket, 0.2):
                    return True
            except SinkError:
                # The sink dropped every delivery it had not accepted: each is written
                # again, this one first (never waited for after the sink's reset).
                self._held.dropped(sink.name, ticket)
                break
            if self._abandon.is_set():
                abandoned(sink, held.lines, "not accepted at shutdown")
                return False
            waited = time.monotonic() - started
            if limit is not None and waited >= limit:
                self._writer.left_behind(sink, held.lines, f"not accepted within {limit:g}s")
                return False
            if self._leaves_at_reload(sink.name):
                return False
        left = None if limit is None else max(0.0, limit - (time.monotonic() - started))
        if not self._writer.write(sink, held.batches, held.lines, left):
            return False
        del held.tickets[sink.name]  # counted by the write
        return True

    def _leaves_at_reload(self, name: str) -> bool:
        """A reload asked for removes or replaces sink ``name`` (its retries stop)."""
        pending = self._pending
        return pending is not None and pending.removes_or_replaces(name)

    def checkpoint(self, force: bool = False) -> bool:
        """Make sinks durable, then save positions with their state (this thread only).

        False if that failed (a full disk): the previous positions file stays, and the
        positions stay dirty for the next try. One warning per episode.
        """
        self._collect()
        if not (force or self.ledger.dirty):
            return True
        try:
            states = {sink.name: sink.checkpoint() for sink in self.sinks}
        except OSError as exc:  # not durable: positions must not move past it
            POSITION_SAVES.labels("error").inc()
            return self._checkpoint_failed(exc)
        if self._held:  # the positions do not include the held deliveries yet
            states.update((k, v) for k, v in self._held.states_before.items() if k in states)
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
