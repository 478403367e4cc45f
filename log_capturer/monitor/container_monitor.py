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
    TIMESTAMP_ERRORS,
)
from ..pipeline.queue import RecordQueue
from . import faults
from .admit import admit_batch
from .config import MonitorConfig
from .marks import Mark, ReadPlan, StreamDedup, plan_window

_log = structlog.get_logger(__name__)


class _Stopped(Exception):
    """Raised inside a window when the monitor is asked to stop."""


class ContainerMonitor:
    """Owns one thread that captures one container until it is gone or :meth:`stop` is called.

    Each window opens a log stream with ``since`` = the stream's mark and ``until``
    = now + ``stream_window``, reads until the engine ends it or the deadline passes,
    closes it and reopens. A running container's stream that the engine ends early
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
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: LogStream | None = None
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
        for plan in plan_window(self.marks, int(window * 1e9), follow):
            deadline = time.monotonic() + window + grace
            until_ns = time.time_ns() + int(window * 1e9) if plan.follow else 0
            end = self._read(plan, deadline, until_ns)
            if end == "interrupted" or self._stop.is_set():
                raise _Stopped
            if end != "eof" and not plan.follow:
                complete = False  # a catch-up or drain read was cut: not at the end yet
        if not follow:
            return complete
        return end == "eof" and time.time_ns() < until_ns

    def _read(self, plan: ReadPlan, deadline: float, until_ns: int) -> str:
        info = self.info
        tty = info.tty
        response = self.engine.open_logs(
            info.id,
            stdout=tty or "stdout" in plan.streams,
            stderr=tty or "stderr" in plan.streams,
            follow=plan.follow,
            since_ns=plan.since_ns,
            until_ns=until_ns,
            deadline=deadline,
        )
        stream = LogStream(
            response, tty=tty, deadline=deadline, max_line_bytes=self.config.max_line_bytes
        )
        with self._lock:
            self._current = stream
        if self._stop.is_set():
            stream.interrupt()
        dedups = {s: StreamDedup(self.marks[s]) for s in plan.streams}
        lines: Counter[str] = Counter()
        sizes: Counter[str] = Counter()
        truncated = 0
        try:
            for batch in stream.batches(flush_at_eof=not plan.follow):
                admitted = admit_batch(batch, dedups, self.info)
                if not admitted.records:
                    continue
                # Handled = queued, or dropped by the drop policy (the queue counts it).
                handled = self.queue.put_many(admitted.records, admitted.sizes, self._stop)
                truncated += admitted.commit(handled, dedups, self.marks, lines, sizes)
                if handled < len(admitted.records):
                    raise _Stopped  # put_many stops short only when asked to stop
        finally:
            with self._lock:
                self._current = None
            stream.close()
            STREAM_WINDOWS.labels(stream.end_reason or "error").inc()
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
        return stream.end_reason or "error"
