"""One thread per container, reading its log in windows and resuming exactly where it
stopped (docs/capture.md: how windows, tails and proofs keep capture exact)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from tenacity import (
    RetryCallState,
    retry_if_not_exception_type,
    stop_when_event_set,
)

from ..backoff import capped_backoff, retrying
from ..buffers import BufferBudget
from ..discovery.container import ContainerInfo
from ..docker.engine import DockerEngine
from ..docker.errors import ContainerGoneError, PoolClosedError
from ..docker.lines import Lines
from ..docker.stream import StreamEnd
from ..metrics.registry import (
    BYTES_CAPTURED,
    CONTAINERS_MONITORED,
    CONTAINERS_THROTTLED,
    LINES_CAPTURED,
    LINES_TRUNCATED,
    MONITOR_ERRORS,
    PROOF_READS,
    READ_THROTTLED_SECONDS,
)
from ..pipeline.queue import BatchQueue
from ..positions.ledger import ContainerPosition, Ledger, MonitorEnd
from ..timestamps import parse_docker_ts
from .admit import RecentLines, StreamDedup, admit
from .config import MonitorConfig
from .pace import ReadPace
from .plan import ReadPlan, plan_window
from .policy import ProofReason, TailPolicy
from .resume import Checked
from .streams import EngineStreams, StreamSource
from .window import BEHIND_NS, ReadKind, Stopped, WindowReader, WindowRequest, WindowResult

_log = structlog.get_logger(__name__)


class ContainerMonitor:
    """Owns one thread that captures one container until it is gone or :meth:`stop` is
    called: windows of ``stream_window`` (:meth:`_window`), each a few requests made by
    a :class:`~.window.WindowReader`, their tails and proof reads decided by a
    :class:`~.policy.TailPolicy`. A running container's stream that the engine ends
    early means it stopped: the monitor then reads to the end of the log (no follow)
    and exits. Read positions (the ledger's ``position.read``) are written by this
    thread only. Errors other than "container gone" are retried with capped
    exponential backoff.
    """

    def __init__(
        self,
        info: ContainerInfo,
        engine: DockerEngine,
        queue: BatchQueue,
        config: MonitorConfig,
        position: ContainerPosition,
        on_exit: Callable[[ContainerMonitor], None],
        ledger: Ledger,
        buffers: BufferBudget | None = None,
        source: StreamSource | None = None,
    ) -> None:
        """``source``: where log streams come from (the engine; a scripted one in tests)."""
        self.info = info
        self.engine = engine
        self.queue = queue
        self.config = config
        self.ledger = ledger  # receives the checked times proven, saves them once delivered
        self.marks = position.read  # stream -> where reading got to (this thread writes it)
        tolerance_ns = int(config.reorder_tolerance * 1e9)
        self.checked = Checked(self.marks, tolerance_ns, ledger.checked_times(info.id))
        # The end of a window with no byte for this long means the stream went quiet.
        self._grace = min(1.0, config.stream_window * 0.25)
        self.policy = TailPolicy(
            config.resume_tail_lines,
            config.resume_tail_max_lines,
            config.reorder_tolerance,
            self._grace,
            int(config.stream_window * 1e9) + 2 * tolerance_ns,
            time.monotonic(),
        )
        self._recent = {stream: RecentLines(buffers=buffers) for stream in self.marks}
        self._pace = ReadPace(config.max_lines_per_second, config.max_bytes_per_second)
        self._reader = WindowReader(
            lambda: self.info,
            source or EngineStreams(engine, config.stream_window, config.max_line_bytes, buffers),
            self.policy,
            self.marks,
            self._recent,
            self._deliver,
            config.max_stream_hold,
            config.stream_window,
            config.tail_hold_max_bytes,
            buffers,
        )
        self._on_exit = on_exit
        self._stop = threading.Event()
        self.finished_reason: MonitorEnd | None = None
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
        self._reader.cut(stop=True)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stream_age(self) -> float | None:
        """How long the current log stream has held its connection; None if none, or
        if it is a proof read the engine is still scanning for."""
        return self._reader.held_for()

    def yield_turn(self) -> bool:
        """End the current window early (its connection goes to a waiter); see turns.py."""
        return not self._stop.is_set() and self._reader.cut(stop=False)

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
            self.finished_reason = self.finished_reason or MonitorEnd.STOPPED
        except (Stopped, PoolClosedError):
            self.finished_reason = MonitorEnd.STOPPED
        except ContainerGoneError:
            self.finished_reason = MonitorEnd.GONE
        except Exception:
            if self._stop.is_set():
                self.finished_reason = MonitorEnd.STOPPED  # the error was cut short by the stop
            else:
                self.finished_reason = MonitorEnd.ERROR
                MONITOR_ERRORS.labels("unexpected").inc()
                log.exception("monitor_failed")
        finally:
            for recent in self._recent.values():
                recent.release()
            CONTAINERS_MONITORED.dec()
            log.info("monitor_stopped", reason=str(self.finished_reason), windows=self.windows)
            self._on_exit(self)

    def _with_retry(
        self, fn: Callable[[], bool], log: structlog.typing.FilteringBoundLogger
    ) -> bool:
        def on_retry(exc: BaseException | None, state: RetryCallState) -> None:
            kind = type(exc).__name__
            MONITOR_ERRORS.labels(kind).inc()
            log.warning(
                "monitor_window_failed",
                error=str(exc),
                error_type=kind,
                attempt=state.attempt_number,
            )

        retry = retrying(
            on_retry,
            retry=retry_if_not_exception_type((ContainerGoneError, PoolClosedError, Stopped)),
            wait=capped_backoff(self.config.retry_initial_backoff, self.config.retry_max_backoff),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep,
        )
        result: bool = retry(fn)
        return result

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _cycle(self) -> bool:
        """One window; True when the container has stopped and its log was read to the end."""
        engine_ended = self._window(follow=True)
        if not engine_ended or self._stop.is_set():
            return False
        state = ContainerInfo.from_inspect(
            self.engine.inspect_container(self.info.id), self.info.host
        )
        if state.running:
            return False
        self.info = state  # the run that ended (its StartedAt tells a later restart apart)
        while not self._window(follow=False):  # drain: read to the end, no follow
            if self._stop.is_set():
                return False
        self.finished_reason = MonitorEnd.EXITED
        return True

    def _window(self, follow: bool) -> bool:
        """Run one window. True if the engine ended it before ``until`` (or it was a drain
        that reached the end), which is how a stopped container shows.

        Each request has its own deadline, and the follow request runs even when a
        catch-up read was cut: on a huge log the engine's scan for a lagging stream can
        outlast a window, and it must not keep the busy stream from being read.
        """
        window = self.config.stream_window
        self.windows += 1
        complete = True
        ended = False
        for plan in plan_window(self.checked.ts, int(window * 1e9), follow):
            if plan.follow:
                ended = self._follow(plan)
                continue
            # A catch-up read beside a follow read keeps its deadline (the busy stream
            # must not wait for it); a drain may run on while behind.
            deadline = time.monotonic() + window + self._grace
            why = ReadKind.CATCH_UP if follow else ReadKind.DRAIN
            result = self._read_redone(plan, deadline, 0, self._tail_for(plan), why)
            if self._ended(result) is not StreamEnd.EOF:
                complete = False  # a catch-up or drain read was cut: not at the end yet
        return ended if follow else complete

    def _follow(self, plan: ReadPlan) -> bool:
        """The follow read of a window (after a proof read when one is due); True if the
        engine ended it before ``until``."""
        due = self.policy.due
        proof_tail = self.policy.proof_tail(self._tail_for(plan))
        if due is not None and proof_tail is not None:
            if self._prove(plan, proof_tail, due.reason) is not StreamEnd.EOF:
                return False  # cut (a turn): the next window proves again
            plan = self._replan(plan)
        deadline, until_ns = self._limits(plan)
        tail = self._tail_for(plan)
        result = self._read(plan, deadline, until_ns, tail, ReadKind.FOLLOW)
        proved = False
        while result.gap is not None and tail:
            if result.gap.quiet and not proved:
                # A full tail of a quiet log: a larger follow tail would wait in vain for
                # a new line to prove it. A proof read settles it by the engine's EOF.
                proved = True
                escalated = self.policy.escalate(tail, result.gap)
                if self._prove(plan, escalated, ProofReason.QUIET_GAP) is not StreamEnd.EOF:
                    return False
                plan = self._replan(plan)
                deadline, until_ns = self._limits(plan)
                tail = self._tail_for(plan)
            else:
                # The tail may have skipped lines: a larger one if it came back full (it
                # costs what it reads), else (or past the largest) a plain since read.
                tail = self.policy.escalate(tail, result.gap)
            result = self._read(plan, deadline, until_ns, tail, ReadKind.FOLLOW)
        end = self._ended(result)
        if end is not None:
            self.policy.after_follow(self.checked.since(plan.streams))
        return end is StreamEnd.EOF and (until_ns <= 0 or time.time_ns() < until_ns)

    def _prove(self, plan: ReadPlan, tail: int, reason: ProofReason) -> StreamEnd | None:
        """A proof read (docs/capture.md): non-follow reads of ``plan``'s streams from its
        ``since`` (the tail escalated while it comes back full, a plain since last) until
        the engine ends one, which moves their checked times to its request."""
        PROOF_READS.labels(reason.value).inc()
        proof = ReadPlan(plan.streams, plan.since_ns, follow=False)
        # It ends by itself (EOF): a deadline cutting the engine's scan would only waste it.
        deadline = time.monotonic() + self.config.max_stream_hold
        end = self._ended(self._read_redone(proof, deadline, 0, tail, ReadKind.PROOF))
        self.policy.proof_ended(reason, settled=end is StreamEnd.EOF)
        return end

    def _read_redone(
        self, plan: ReadPlan, deadline: float, until_ns: int, tail: int, why: ReadKind
    ) -> WindowResult:
        """A request, redone while its tail read is given up (a larger tail, then plain)."""
        result = self._read(plan, deadline, until_ns, tail, why)
        while result.gap is not None and tail:
            tail = self.policy.escalate(tail, result.gap)
            result = self._read(plan, deadline, until_ns, tail, why)
        return result

    def _read(
        self, plan: ReadPlan, deadline: float, until_ns: int, tail: int, why: ReadKind
    ) -> WindowResult:
        """One request; then the checked times move by what it proved."""
        request = WindowRequest(plan.streams, plan.since_ns, until_ns, tail, plan.follow,
                                deadline, why)
        result = self._reader.read(request)
        for name in plan.streams:
            self.checked.observe_mark(name, self.marks[name])
        if result.unproven:
            self.policy.unproven(tail)
        proof = result.proof
        if proof is not None and self.checked.after_gap_free_read(
            plan.streams, proof.reference_ns, proof.pending_ts
        ):
            self._report_checked(plan.streams)
        return result

    def _ended(self, result: WindowResult) -> StreamEnd | None:
        """How a read (after its redos) ended; raises :class:`Stopped` on a stop."""
        end = None if result.gap is not None else result.end
        if end is StreamEnd.INTERRUPTED or self._stop.is_set():
            raise Stopped
        return end

    def _replan(self, plan: ReadPlan) -> ReadPlan:
        """``plan`` again from its streams' checked times (after a proof moved them)."""
        return ReadPlan(plan.streams, self.checked.since(plan.streams), plan.follow)

    def _limits(self, plan: ReadPlan) -> tuple[float, int]:
        """Deadline (monotonic) and ``until`` (ns, 0 = none) of a follow read. A stream
        that is behind gets no ``until``: it may run on while it delivers old lines."""
        window = self.config.stream_window
        deadline = time.monotonic() + window + self._grace
        now_ns = time.time_ns()
        behind = plan.since_ns > 0 and now_ns - plan.since_ns > BEHIND_NS
        return deadline, (0 if behind else now_ns + int(window * 1e9))

    def _tail_for(self, plan: ReadPlan) -> int:
        whole = len(plan.streams) == len(self.checked.ts)
        return self.policy.tail_for(whole, plan.since_ns, time.monotonic())

    def _report_checked(self, streams: tuple[str, ...]) -> None:
        """The ledger saves these checked times once what was read is delivered."""
        self.ledger.note_checked(
            self.info.id,
            {s: self.checked.ts[s] for s in streams},
            {s: self.marks[s] for s in streams},
        )

    def _deliver(self, lines: Lines, dedups: dict[str, StreamDedup]) -> int:
        """Queue the new lines of a read; positions and counters move once it is queued.
        How many lines were new."""
        if not lines:
            return 0
        admitted = admit(lines, dedups, self.info)
        batch = admitted.batch
        if batch is None:
            return 0
        if not self.queue.put(batch, self._stop) and self._stop.is_set():
            raise Stopped  # not queued: the positions stay where they were
        marks = self.marks
        for stream, end in batch.ends.items():
            marks[stream] = end
        new = len(batch)
        self.policy.delivered(parse_docker_ts(batch.lines.stamps[-1]), new)
        for stream, count in admitted.lines.items():
            LINES_CAPTURED.labels(stream).inc(count)
            BYTES_CAPTURED.labels(stream).inc(admitted.bytes[stream])
        if batch.lines.truncated is not None:
            truncated = sum(batch.lines.truncated)
            if truncated:
                LINES_TRUNCATED.inc(truncated)
        if self._pace.bounded:
            self._throttle(self._pace.delay(new, batch.size, time.monotonic()))
        return new

    def _throttle(self, wait: float) -> None:
        """Wait before the next read to stay under the rate bound (pace.py); the lines
        are queued and their positions moved, so a stop meanwhile loses nothing."""
        if wait <= 0:
            return
        CONTAINERS_THROTTLED.inc()
        started = time.monotonic()
        try:
            self._stop.wait(wait)
        finally:
            CONTAINERS_THROTTLED.dec()
            READ_THROTTLED_SECONDS.inc(time.monotonic() - started)
