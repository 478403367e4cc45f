"""One thread per container, reading its log in windows and resuming exactly where it stopped."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_not_exception_type,
    stop_when_event_set,
)

from ..backoff import capped_backoff
from ..discovery.container import ContainerInfo
from ..docker.engine import DockerEngine
from ..docker.errors import ContainerGoneError, PoolClosedError
from ..docker.frames import ENGINE_CHUNK_BYTES
from ..docker.lines import LogLine
from ..docker.stream import LogStream
from ..metrics.registry import (
    BYTES_CAPTURED,
    CLOCK_BACKWARDS,
    CONTAINERS_MONITORED,
    LINES_CAPTURED,
    LINES_DEDUPLICATED,
    LINES_TRUNCATED,
    MONITOR_ERRORS,
    PARTIAL_LINES_REREAD,
    STREAM_WINDOWS,
    TAIL_FALLBACKS,
    TAIL_READS,
    TIMESTAMP_ERRORS,
)
from ..pipeline.queue import RecordQueue
from . import faults
from .admit import admit_batch
from .config import MonitorConfig
from .marks import Mark, ReadPlan, StreamDedup, plan_window
from .resume import (
    GAP,
    PENDING,
    PROVEN,
    Checked,
    TailCheck,
    ended_before_until,
    tail_lines,
)

_log = structlog.get_logger(__name__)

# A follow stream silent this long before its end proves it had caught up (see _read).
IDLE_PROOF_NS = 10_000_000_000


class _Stopped(Exception):
    """Raised inside a window when the monitor is asked to stop."""


class ContainerMonitor:
    """Owns one thread that captures one container until it is gone or :meth:`stop` is called.

    Each window opens a log stream with ``since`` = the stream's mark and ``until``
    = now + ``stream_window``, reads until the engine ends it or the deadline passes,
    closes it and reopens. Reopens add a bounded ``tail`` so the engine does not
    re-read a big log from its start, and prove the tail skipped nothing (resume.py).
    A running container's stream that the engine ends early
    means it stopped: the monitor then reads to the end of the log (no follow) and
    exits. Marks advance only for lines that entered the queue, so a window cut
    anywhere resumes without loss or repeat. Errors other than "container gone" are
    retried with capped exponential backoff.
    """

    def __init__(
        self,
        info: ContainerInfo,
        engine: DockerEngine,
        queue: RecordQueue,
        config: MonitorConfig,
        marks: dict[str, Mark],
        on_exit: Callable[[ContainerMonitor], None],
    ) -> None:
        self.info = info
        self.engine = engine
        self.queue = queue
        self.config = config
        self.marks = dict(marks)
        self.checked = Checked(self.marks, int(config.reorder_tolerance * 1e9))
        self._plain_next = False  # the last tail read could not be checked: no tail once
        self._rate = 0.0  # engine messages per second in the last read (sizes the tail)
        self._last_read_end = time.monotonic()
        self._reads = 0
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: LogStream | None = None
        self._current_opened = 0.0
        self.finished_reason: str | None = None
        self.windows = 0
        self.thread = threading.Thread(
            target=self._run, name=f"monitor-{info.short_id}", daemon=True
        )

    @staticmethod
    def streams_for(info: ContainerInfo, config: MonitorConfig) -> tuple[str, ...]:
        if info.tty:
            return ("tty",) if (config.stdout or config.stderr) else ()
        return tuple(s for s in ("stdout", "stderr") if getattr(config, s))

    # -- control (any thread) ------------------------------------------------------------

    def start(self) -> None:
        CONTAINERS_MONITORED.inc()
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._current is not None:
                self._current.interrupt()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stream_age(self) -> float | None:
        """How long the current log stream has held its connection; None if none."""
        with self._lock:
            if self._current is None:
                return None
            return time.monotonic() - self._current_opened

    def yield_turn(self) -> bool:
        """End the current window early (its connection goes to a waiter); see turns.py."""
        with self._lock:
            if self._current is None or self._stop.is_set():
                return False
            self._current.yield_turn()
            return True

    def update_info(self, info: ContainerInfo) -> None:
        """A rename: later records carry the new name."""
        self.info = info

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        log = _log.bind(container_id=self.info.short_id, container_name=self.info.name)
        try:
            while not self._stop.is_set():
                if self._with_retry(self._cycle, log):
                    break
            self.finished_reason = self.finished_reason or "stopped"
        except (_Stopped, PoolClosedError):
            self.finished_reason = "stopped"
        except ContainerGoneError:
            self.finished_reason = "gone"
        except Exception:
            if self._stop.is_set():
                self.finished_reason = "stopped"  # the last error was cut short by the stop
            else:
                self.finished_reason = "error"
                MONITOR_ERRORS.labels("unexpected").inc()
                log.exception("monitor_failed")
        finally:
            CONTAINERS_MONITORED.dec()
            log.info("monitor_stopped", reason=self.finished_reason, windows=self.windows)
            self._on_exit(self)

    def _with_retry(
        self, fn: Callable[[], bool], log: structlog.typing.FilteringBoundLogger
    ) -> bool:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            kind = type(exc).__name__
            MONITOR_ERRORS.labels(kind).inc()
            log.warning(
                "monitor_window_failed",
                error=str(exc),
                error_type=kind,
                attempt=state.attempt_number,
            )

        retrying = Retrying(
            retry=retry_if_not_exception_type((ContainerGoneError, PoolClosedError, _Stopped)),
            wait=capped_backoff(self.config.retry_initial_backoff, self.config.retry_max_backoff),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        result: bool = retrying(fn)
        return result

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _cycle(self) -> bool:
        """One window; True when the container has stopped and its log was read to the end."""
        engine_ended = self._window(follow=True)
        if not engine_ended or self._stop.is_set():
            return False
        state = ContainerInfo.from_inspect(self.engine.inspect_container(self.info.id))
        if state.running:
            return False
        self.info = state  # the run that ended (its StartedAt tells a later restart apart)
        while not self._window(follow=False):  # drain: read to the end, no follow
            if self._stop.is_set():
                return False
        self.finished_reason = "exited"
        return True

    def _window(self, follow: bool) -> bool:
        """Run one window. True if the engine ended it before ``until`` (or it was a drain
        that reached the end), which is how a stopped container shows.

        Each request has its own deadline, and the follow request runs even when a
        catch-up read was cut: on a huge log the engine's scan for a lagging stream can
        outlast a window, and it must not keep the busy stream from being read.
        """
        window = self.config.stream_window
        grace = min(1.0, window * 0.25)
        self.windows += 1
        faults.on_window()
        complete = True
        end = "eof"
        until_ns = 0
        for plan in plan_window(self.checked.ts, int(window * 1e9), follow):
            deadline = time.monotonic() + window + grace
            until_ns = time.time_ns() + int(window * 1e9) if plan.follow else 0
            end = self._read(plan, deadline, until_ns, self._tail_for(plan))
            if end == GAP:  # the tail may have skipped lines: read this plan in full
                end = self._read(plan, deadline, until_ns, 0)
            if end == "interrupted" or self._stop.is_set():
                raise _Stopped
            if end != "eof" and not plan.follow:
                complete = False  # a catch-up or drain read was cut: not at the end yet
        if not follow:
            return complete
        return end == "eof" and time.time_ns() < until_ns

    def _tail_for(self, plan: ReadPlan) -> int:
        """The ``tail`` for this request, 0 for a plain ``since`` read.

        Only a reopen of all the container's streams (the tail counts both) from a
        known point is worth it; a lagging stream read alone, a container read from its
        beginning, or the read after an unchecked tail go plain.
        """
        base = self.config.resume_tail_lines
        if base <= 0 or plan.since_ns <= 0 or len(plan.streams) != len(self.checked.ts):
            return 0
        if self._plain_next:
            self._plain_next = False
            return 0
        gap = time.monotonic() - self._last_read_end
        return tail_lines(
            base,
            self.config.resume_tail_max_lines,
            self._rate,
            gap,
            self.config.reorder_tolerance,
        )

    def _read(self, plan: ReadPlan, deadline: float, until_ns: int, tail: int) -> str:
        """One request. Returns how it ended, or ``GAP`` when a tail read must be redone
        plain (nothing of it was delivered then)."""
        info = self.info
        tty = info.tty
        since_ns = plan.since_ns
        if tail:
            since_ns = max(1, since_ns - int(self.config.reorder_tolerance * 1e9))
            TAIL_READS.inc()
        request_ns = time.time_ns()
        started = time.monotonic()
        response = self.engine.open_logs(
            info.id,
            stdout=tty or bool(tail) or "stdout" in plan.streams,
            stderr=tty or bool(tail) or "stderr" in plan.streams,
            follow=plan.follow,
            since_ns=since_ns,
            until_ns=until_ns,
            tail=tail,
            deadline=deadline,
            # A container never read yet goes before monitors taking turns; the others
            # wait as long as a turn of every monitor may take, not the API timeout.
            priority=self._reads == 0,
            wait_timeout=self.config.stream_window + self.engine.config.pool.wait_timeout,
        )
        self._reads += 1
        stream = LogStream(
            response, tty=tty, deadline=deadline, max_line_bytes=self.config.max_line_bytes
        )
        with self._lock:
            self._current = stream
            self._current_opened = time.monotonic()
        if self._stop.is_set():
            stream.interrupt()
        dedups = {s: StreamDedup(self.marks[s]) for s in plan.streams}
        lines: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        truncated = 0
        check = TailCheck(tail) if tail else None
        held: list[LogLine] = []
        held_bytes = 0
        last_ts = 0
        result: str | None = None

        def deliver(batch: list[LogLine]) -> None:
            nonlocal truncated
            admitted = admit_batch(batch, dedups, self.info)
            if not admitted.records:
                return
            # Handled = queued, or dropped by the drop policy (the queue counts it).
            handled = self.queue.put_many(admitted.records, admitted.sizes, self._stop)
            truncated += admitted.commit(handled, dedups, self.marks, lines, sizes)
            if handled < len(admitted.records):
                raise _Stopped  # put_many stops short only when asked to stop

        try:
            chunks_seen = 0
            for batch in stream.batches(flush_at_eof=not plan.follow):
                last_ts = batch[-1].ts_ns
                if check is None or check.state != PENDING:
                    deliver(batch)
                    continue
                state = self._check_batch(check, batch, chunks_seen, stream)
                chunks_seen = stream.parse_stats.chunks
                if state == PENDING:
                    held.extend(batch)
                    held_bytes += sum(len(line.message) for line in batch)
                    if held_bytes > self.config.tail_hold_max_bytes:
                        TAIL_FALLBACKS.labels("held_bytes").inc()
                        result = GAP
                        break
                elif state == GAP:
                    TAIL_FALLBACKS.labels("full").inc()
                    result = GAP
                    break
                else:  # PROVEN: what was held goes first, in order
                    deliver(held + batch)
                    held = []
            if check is not None and result is None and check.state == PENDING:
                # The engine's end settles the count only if ``until`` had not passed:
                # a tail line stamped after ``until`` ends the body early, and lines cut
                # that way prove nothing (the request may have waited long for its
                # connection, ``until`` counting from before the wait).
                eof = stream.end_reason == "eof"
                settled = ended_before_until(eof, until_ns, time.time_ns())
                state = check.at_end(settled, stream.parse_stats.chunks)
                if state == PROVEN:
                    deliver(held)
                elif state == GAP or eof:
                    TAIL_FALLBACKS.labels("full" if state == GAP else "until").inc()
                    result = GAP
                elif stream.end_reason != "interrupted" and self._holds_new_lines(held):
                    # Cut by the deadline before the check: the next request goes plain.
                    TAIL_FALLBACKS.labels("unproven").inc()
                    self._plain_next = True
        finally:
            with self._lock:
                self._current = None
            stream.close()
            closed_ns = time.time_ns()
            elapsed = max(time.monotonic() - started, 1e-3)
            self._rate = stream.parse_stats.chunks / elapsed
            self._last_read_end = time.monotonic()
            # A tail read given up for a plain one ends here with no end of its own.
            end_label = stream.end_reason or ("tail_gap" if result == GAP else "error")
            STREAM_WINDOWS.labels(end_label).inc()
            for name, count in lines.items():
                LINES_CAPTURED.labels(name).inc(count)
                BYTES_CAPTURED.labels(name).inc(sizes[name])
            for name, dedup in dedups.items():
                if dedup.dropped:
                    LINES_DEDUPLICATED.labels(name).inc(dedup.dropped)
                if dedup.clock_backwards:
                    CLOCK_BACKWARDS.inc(dedup.clock_backwards)
            if truncated:
                LINES_TRUNCATED.inc(truncated)
            if stream.partial_lines_discarded:
                PARTIAL_LINES_REREAD.inc(stream.partial_lines_discarded)
            if stream.parse_stats.bad_timestamps:
                TIMESTAMP_ERRORS.inc(stream.parse_stats.bad_timestamps)
        for name in plan.streams:
            self.checked.observe_mark(name, self.marks[name])
        if result is not None:
            return result
        if check is None or check.state == PROVEN:
            # Gap-free: every line not seen comes after the last one received; after
            # the request if the engine ended the body. A follow stream whose last read
            # waited long in vain had caught up: a line written before that wait's
            # first half would have reached us during its second half (the engine sends
            # a followed line as it is written; half the wait bounds how late).
            reference = last_ts
            if stream.end_reason == "eof":
                reference = max(reference, request_ns)
            elif (
                stream.end_reason in ("deadline", "turn")
                and plan.follow
                and stream.idle_at_end_ns >= IDLE_PROOF_NS
            ):
                reference = max(reference, closed_ns - stream.idle_at_end_ns // 2)
            if reference > 0:
                self.checked.after_gap_free_read(plan.streams, reference, stream.pending_ts)
        return stream.end_reason or "error"

    @staticmethod
    def _check_batch(
        check: TailCheck, batch: list[LogLine], chunks_before: int, stream: LogStream
    ) -> str:
        """Feed a batch's lines to the tail check, each with the engine messages counted
        up to it: one for a short line; for a joined or cut one, all of the batch's."""
        chunks_after = stream.parse_stats.chunks
        running = chunks_before
        state = check.state
        for line in batch:
            short = len(line.message) < ENGINE_CHUNK_BYTES and not line.truncated
            running = running + 1 if short else max(running + 1, chunks_after)
            state = check.on_line(line.ts_ns, running, stream.first_data_ns)
            if state != PENDING:
                break
        return state

    def _holds_new_lines(self, held: list[LogLine]) -> bool:
        """Whether lines held back by an unchecked tail read include any not delivered."""
        dedups = {s: StreamDedup(m) for s, m in self.marks.items()}
        for line in held:
            dedup = dedups.get(line.stream)
            if dedup is not None and dedup.admit(line.ts_ns) is not None:
                return True
        return False
