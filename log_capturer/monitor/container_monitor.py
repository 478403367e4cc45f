"""One thread per container, reading its log in windows and resuming exactly where it stopped."""

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
from ..buffers import BufferBudget, Kind, lines_cost
from ..discovery.container import ContainerInfo
from ..docker.engine import DockerEngine
from ..docker.errors import ContainerGoneError, PoolClosedError
from ..docker.frames import ENGINE_CHUNK_BYTES
from ..docker.lines import Lines
from ..docker.stream import LogStream, StreamCut, StreamEnd
from ..metrics.registry import (
    BYTES_CAPTURED,
    CLOCK_BACKWARDS,
    CONTAINERS_MONITORED,
    CONTAINERS_THROTTLED,
    LINES_CAPTURED,
    LINES_DEDUPLICATED,
    LINES_RESENT,
    LINES_TRUNCATED,
    MONITOR_ERRORS,
    PARTIAL_LINES_REREAD,
    PROOF_READS,
    READ_THROTTLED_SECONDS,
    STREAM_WINDOWS,
    TAIL_FALLBACKS,
    TAIL_READS,
    TIMESTAMP_ERRORS,
)
from ..pipeline.queue import BatchQueue
from ..positions.ledger import ContainerPosition, Ledger, MonitorEnd
from ..positions.marks import seqs_of
from ..timestamps import parse_docker_ts
from .admit import RecentLines, StreamDedup, admit
from .config import MonitorConfig
from .pace import ReadPace
from .plan import ReadPlan, plan_window
from .resume import (
    GAP,
    PENDING,
    PROVEN,
    Checked,
    Received,
    TailCheck,
    TailState,
    ended_before_until,
    needs_proof,
    tail_lines,
)

_log = structlog.get_logger(__name__)

# A follow stream silent this long before its end proves it had caught up (see _read).
IDLE_PROOF_NS = 10_000_000_000
# A stream whose newest line is older than this is behind: its window is not ended while
# it delivers (a reopen while behind cannot be cheap), and its request has no ``until``.
BEHIND_NS = 5_000_000_000
# Lines of a tail read ended by "tail_gap": the read is redone with a larger tail, this
# many times larger, before a plain since read.
TAIL_ESCALATION = 10


class _Stopped(Exception):
    """Raised inside a window when the monitor is asked to stop."""


class ContainerMonitor:
    """Owns one thread that captures one container until it is gone or :meth:`stop` is called.

    Each window opens a log stream with ``since`` = the stream's mark and ``until``
    = now + ``stream_window``, reads until the engine ends it or the deadline passes,
    closes it and reopens. Reopens add a bounded ``tail`` so the engine does not
    re-read a big log from its start, and prove the tail skipped nothing (resume.py);
    a quiet stream's checked time is moved past a burst by a non-follow proof read,
    and the proofs are reported to the ledger, which saves them once delivered.
    A stream that is behind (its newest line older than a few seconds) is not ended
    while it delivers: its request has no ``until`` and its deadline moves on with
    every read, up to ``max_stream_hold``, so a backlog is read in one request.
    A running container's stream that the engine ends early means it stopped: the
    monitor then reads to the end of the log (no follow) and exits. Read positions
    (the ledger's ``position.read``, written by this thread only) advance only for
    lines that entered the queue, so a window cut anywhere resumes without loss or
    repeat. Errors other than "container gone" are retried with capped exponential
    backoff.
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
    ) -> None:
        self.info = info
        self.engine = engine
        self.queue = queue
        self.config = config
        self.ledger = ledger  # receives the checked times proven, saves them once delivered
        self.marks = position.read  # stream -> where reading got to (this thread writes it)
        self._tolerance_ns = int(config.reorder_tolerance * 1e9)
        self.checked = Checked(self.marks, self._tolerance_ns, ledger.checked_times(info.id))
        # The end of a window with no byte for this long means the stream went quiet.
        self._grace = min(1.0, config.stream_window * 0.25)
        self._received = Received(int(config.stream_window * 1e9) + 2 * self._tolerance_ns)
        # What this monitor holds is counted there; held tails reserve from its total.
        self._buffers = buffers
        self._recent = {stream: RecentLines(buffers=buffers) for stream in self.marks}
        self._prove_next: str | None = None  # why the next follow window starts with a proof
        self._prove_tail = 0  # ... and the smallest tail it needs (what an unproven one held)
        self._gap = ""  # why the last tail read was given up
        self._gap_quiet = False  # ... and whether the log was quiet at its request
        self._rate = 0.0  # new lines per second in the last follow read (sizes the tail)
        self._new_lines = 0  # new lines queued by the current read
        self._idle_ns = 0  # how long the last follow read waited in vain at its end
        self._last_read_end = time.monotonic()
        self._pace = ReadPace(config.max_lines_per_second, config.max_bytes_per_second)
        self._reads = 0
        self._on_exit = on_exit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: LogStream | None = None
        self._cut: StreamCut | None = None  # the current request's, from before it is sent
        self._current_proof = False
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
        with self._lock:
            if self._cut is not None:
                self._cut.cut(stop=True)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stream_age(self) -> float | None:
        """How long the current log stream has held its connection; None if none, or
        if it is a proof read the engine is still scanning for (a cut would waste the
        scan, and the next window would start it again)."""
        with self._lock:
            # Held from when the request got its connection (its wait for one is not a
            # turn), including a wait for the engine's answer.
            held_since = self._cut.attached_at if self._cut is not None else None
            if held_since is None:
                return None
            if self._current_proof and not (self._current and self._current.first_data_ns):
                return None
            return time.monotonic() - held_since

    def yield_turn(self) -> bool:
        """End the current window early (its connection goes to a waiter); see turns.py."""
        with self._lock:
            if self._cut is None or self._cut.attached_at is None or self._stop.is_set():
                return False
            self._cut.cut(stop=False)
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
            self.finished_reason = self.finished_reason or MonitorEnd.STOPPED
        except (_Stopped, PoolClosedError):
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
            retry=retry_if_not_exception_type((ContainerGoneError, PoolClosedError, _Stopped)),
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
            tail = self._tail_for(plan)
            result = self._read(plan, deadline, 0, tail, extend=not follow, drain=not follow)
            while result is GAP and tail:
                tail = self._escalated(tail)
                result = self._read(plan, deadline, 0, tail, extend=not follow, drain=not follow)
            if self._ended(result) is not StreamEnd.EOF:
                complete = False  # a catch-up or drain read was cut: not at the end yet
        return ended if follow else complete

    def _follow(self, plan: ReadPlan) -> bool:
        """The follow read of a window (after a proof read when one is due); True if the
        engine ended it before ``until``."""
        if self._prove_next is not None:
            tail = self._tail_for(plan)
            if tail:
                tail = min(max(tail, self._prove_tail), self.config.resume_tail_max_lines)
            if tail or self._prove_next != "resend":
                end = self._prove(plan, tail, self._prove_next)
                if end is not StreamEnd.EOF:
                    return False  # cut (a turn): the next window proves again
                plan = self._replan(plan)
            else:
                self._prove_next = None  # no tail to prove with: not worth a full read
        deadline, until_ns = self._limits(plan)
        tail = self._tail_for(plan)
        result = self._read(plan, deadline, until_ns, tail, extend=True)
        proved = False
        while result is GAP and tail:
            if self._gap_quiet and not proved:
                # A full tail of a quiet log: a larger follow tail would wait in vain for
                # a new line to prove it. A proof read settles it by the engine's EOF.
                proved = True
                end = self._prove(plan, self._escalated(tail), "quiet_gap")
                if end is not StreamEnd.EOF:
                    return False
                plan = self._replan(plan)
                deadline, until_ns = self._limits(plan)
                tail = self._tail_for(plan)
            else:
                # The tail may have skipped lines: a larger one if it came back full (it
                # costs what it reads), else (or past the largest) a plain since read.
                tail = self._escalated(tail)
            result = self._read(plan, deadline, until_ns, tail, extend=True)
        end = self._ended(result)
        if end is not None and self._prove_next is None:
            resend = self._received.since(self.checked.since(plan.streams) - self._tolerance_ns)
            quiet = self._idle_ns >= int(self._grace * 1e9)
            if needs_proof(quiet, resend, self.config.resume_tail_lines):
                self._prove_next = "resend"
        return end is StreamEnd.EOF and (until_ns <= 0 or time.time_ns() < until_ns)

    def _prove(self, plan: ReadPlan, tail: int, reason: str) -> StreamEnd | None:
        """A proof read (resume.py): non-follow reads of ``plan``'s streams from its
        ``since`` (the tail escalated while it comes back full, a plain since last) until
        the engine ends one, which moves their checked times to its request."""
        PROOF_READS.labels(reason).inc()
        proof = ReadPlan(plan.streams, plan.since_ns, follow=False)
        # It ends by itself (EOF): a deadline cutting the engine's scan would only waste it.
        deadline = time.monotonic() + self.config.max_stream_hold
        result = self._read(proof, deadline, 0, tail, extend=False, proof=True)
        while result is GAP and tail:
            tail = self._escalated(tail)
            result = self._read(proof, deadline, 0, tail, extend=False, proof=True)
        end = self._ended(result)
        if end is StreamEnd.EOF:
            self._prove_next = None
            self._prove_tail = 0
        else:
            self._prove_next = reason
        return end

    def _ended(self, result: StreamEnd | TailState | None) -> StreamEnd | None:
        """How a read (after its redos) ended; raises :class:`_Stopped` on a stop."""
        end = result if isinstance(result, StreamEnd) else None
        if end is StreamEnd.INTERRUPTED or self._stop.is_set():
            raise _Stopped
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

    def _escalated(self, tail: int) -> int:
        """The tail of the redo of a tail read given up: 10x if it came back full (it costs
        what it reads), up to the largest; else (or past the largest) 0, a plain read."""
        maximum = self.config.resume_tail_max_lines
        if self._gap == "full" and tail < maximum:
            return min(tail * TAIL_ESCALATION, maximum)
        return 0

    def _tail_for(self, plan: ReadPlan) -> int:
        """The ``tail`` for this request, 0 for a plain ``since`` read.

        Only a reopen of all the container's streams (the tail counts both) from a
        known point is worth it; a lagging stream read alone or a container read from
        its beginning go plain. It covers what the container writes meanwhile and the
        known lines it sends again (a burst just behind ``since``).
        """
        base = self.config.resume_tail_lines
        if base <= 0 or plan.since_ns <= 0 or len(plan.streams) != len(self.checked.ts):
            return 0
        gap = time.monotonic() - self._last_read_end
        return tail_lines(
            base,
            self.config.resume_tail_max_lines,
            self._rate,
            gap,
            self.config.reorder_tolerance,
            self._received.since(plan.since_ns - self._tolerance_ns),
        )

    def _read(
        self,
        plan: ReadPlan,
        deadline: float,
        until_ns: int,
        tail: int,
        extend: bool,
        drain: bool = False,
        proof: bool = False,
    ) -> StreamEnd | TailState | None:
        """One request. Returns how it ended (None: an error), or ``GAP`` when a tail read
        must be redone (nothing of it was delivered then). ``drain``: the container has
        stopped, so a last line without a newline is whole; ``proof``: a proof read."""
        info = self.info
        tty = info.tty
        since_ns = plan.since_ns
        if tail:
            since_ns = max(1, since_ns - int(self.config.reorder_tolerance * 1e9))
            TAIL_READS.inc()
        request_ns = time.time_ns()
        started = time.monotonic()
        cut = StreamCut()
        with self._lock:
            # Stops and turns reach the request from here on, also while the engine has
            # not answered yet (Podman answers a quiet follow request only at its first line).
            self._cut = cut
            self._current_proof = proof
        if self._stop.is_set():
            cut.cut(stop=True)
        try:
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
                cut=cut,
            )
        except BaseException:
            with self._lock:
                self._cut = None
            raise
        self._reads += 1
        stream = LogStream(
            response,
            tty=tty,
            deadline=deadline,
            max_line_bytes=self.config.max_line_bytes,
            buffers=self._buffers,
        )
        with self._lock:
            self._current = stream
        self._new_lines = 0
        coarse = self.engine.whole_second_timestamps
        dedups = {s: StreamDedup(self.marks[s], self._recent[s], coarse) for s in plan.streams}
        check = TailCheck(tail) if tail else None
        held = Lines.empty()
        held_cost = 0  # bytes reserved for ``held`` (buffers.py)
        last_ts = b""
        result: TailState | None = None
        hold_until = started + self.config.max_stream_hold
        try:
            chunks_seen = 0
            # A running container's log may end inside a split line still being
            # written: only a drain's last line without a newline is whole.
            for lines in stream.batches(flush_at_eof=drain):
                last_ts = lines.stamps[-1]
                if extend:
                    self._extend_if_behind(stream, lines, hold_until)
                if check is None or check.state is not PENDING:
                    self._deliver(lines, dedups)
                    continue
                state = self._check_batch(check, lines, chunks_seen, stream)
                chunks_seen = stream.parse_stats.chunks
                if state is PENDING:
                    cost = lines_cost(len(lines), lines.size)
                    if held_cost + cost > self.config.tail_hold_max_bytes:
                        result = self._fallback("held_bytes")
                        break
                    if not self._reserve(cost):
                        result = self._fallback("budget")
                        break
                    held_cost += cost
                    held.extend(lines)
                elif state is GAP:
                    result = self._fallback("full", _age(request_ns, last_ts))
                    break
                else:  # PROVEN: what was held goes first, in order
                    held.extend(lines)
                    self._deliver(held, dedups)
                    held = Lines.empty()
                    held_cost = self._unreserve(held_cost)
            if check is not None and result is None and check.state is PENDING:
                # The engine's end settles the count only if ``until`` had not passed:
                # a tail line stamped after ``until`` ends the body early, and lines cut
                # that way prove nothing (the request may have waited long for its
                # connection, ``until`` counting from before the wait).
                eof = stream.end_reason is StreamEnd.EOF
                settled = ended_before_until(eof, until_ns, time.time_ns())
                state = check.at_end(settled, stream.parse_stats.chunks)
                if state is PROVEN:
                    self._deliver(held, dedups)
                elif state is GAP:
                    result = self._fallback("full", _age(request_ns, last_ts))
                elif eof:
                    result = self._fallback("until")
                elif (
                    plan.follow
                    and stream.end_reason is not StreamEnd.INTERRUPTED
                    and self._holds_new_lines(held)
                ):
                    # Cut before the check (no new line came to prove it): its new lines
                    # are read again by a proof read, which the engine's end settles. (A
                    # non-follow read cut so is read again as it was: its end settles it.)
                    self._prove_next = "unproven"
                    self._prove_tail = tail
        finally:
            self._unreserve(held_cost)  # delivered, or given up (read again)
            with self._lock:
                self._current = None
                self._cut = None
                self._current_proof = False
            stream.close()
            closed_ns = time.time_ns()
            elapsed = max(time.monotonic() - started, 1e-3)
            if plan.follow and result is None:
                # What the container writes (what a tail must cover), not what was sent
                # again: the lines a reopen sends again are counted by ``_received``.
                self._rate = self._new_lines / elapsed
                self._idle_ns = stream.idle_at_end_ns
            self._last_read_end = time.monotonic()
            # A tail read given up for another ends here with no end of its own.
            end_label = stream.end_reason or ("tail_gap" if result is GAP else "error")
            STREAM_WINDOWS.labels(str(end_label)).inc()
            for name, dedup in dedups.items():
                if dedup.dropped:
                    LINES_DEDUPLICATED.labels(name).inc(dedup.dropped)
                if dedup.resent:
                    LINES_RESENT.labels(name).inc(dedup.resent)
                if dedup.clock_backwards:
                    CLOCK_BACKWARDS.inc(dedup.clock_backwards)
            if stream.partial_lines_discarded:
                PARTIAL_LINES_REREAD.inc(stream.partial_lines_discarded)
            if stream.parse_stats.bad_timestamps:
                TIMESTAMP_ERRORS.inc(stream.parse_stats.bad_timestamps)
        for name in plan.streams:
            self.checked.observe_mark(name, self.marks[name])
        if result is not None:
            return result
        if check is None or check.state is PROVEN:
            # Gap-free: every line not seen comes after the last one received; after
            # the request if the engine ended the body. A follow stream whose last read
            # waited long in vain had caught up: a line written before that wait's
            # first half would have reached us during its second half (the engine sends
            # a followed line as it is written; half the wait bounds how late).
            reference = parse_docker_ts(last_ts) if last_ts else 0
            if stream.end_reason is StreamEnd.EOF:
                # The engine's end covers the lines up to the request, but only up to
                # ``until`` when that had passed (a re-read after a tail fallback).
                reference = max(reference, min(request_ns, until_ns) if until_ns else request_ns)
            elif (
                stream.end_reason in (StreamEnd.DEADLINE, StreamEnd.TURN)
                and plan.follow
                and stream.idle_at_end_ns >= IDLE_PROOF_NS
            ):
                reference = max(reference, closed_ns - stream.idle_at_end_ns // 2)
            if reference > 0 and self.checked.after_gap_free_read(
                plan.streams, reference, stream.pending_ts
            ):
                self._report_checked(plan.streams)
        return stream.end_reason

    def _reserve(self, cost: int) -> bool:
        """Room for ``cost`` more held bytes in the daemon's buffer budget."""
        return self._buffers is None or self._buffers.try_reserve(Kind.TAIL_HOLD, cost)

    def _unreserve(self, cost: int) -> int:
        """Give back ``cost`` held bytes; 0 (what is then held)."""
        if cost and self._buffers is not None:
            self._buffers.release(Kind.TAIL_HOLD, cost)
        return 0

    def _report_checked(self, streams: tuple[str, ...]) -> None:
        """The ledger saves these checked times once what was read is delivered."""
        self.ledger.note_checked(
            self.info.id,
            {s: self.checked.ts[s] for s in streams},
            {s: self.marks[s] for s in streams},
        )

    def _fallback(self, reason: str, newest_age_ns: int = 0) -> TailState:
        """A tail read that cannot be trusted: counted, and redone (see _window).
        ``newest_age_ns``: how long before the request the newest line seen was written
        (a full tail of a log quiet for the grace is settled by a proof read)."""
        TAIL_FALLBACKS.labels(reason).inc()
        self._gap = reason
        self._gap_quiet = reason == "full" and newest_age_ns >= int(self._grace * 1e9)
        return GAP

    def _extend_if_behind(self, stream: LogStream, lines: Lines, hold_until: float) -> None:
        """A stream still reading old lines keeps its connection: a reopen while behind
        would make the engine look for ``since`` in the whole log file."""
        if stream.deadline is None:
            return
        newest = lines.stamps[-1]
        if time.time_ns() - parse_docker_ts(newest) > BEHIND_NS:
            extended = min(time.monotonic() + self.config.stream_window, hold_until)
            if extended > stream.deadline:
                stream.deadline = extended

    def _deliver(self, lines: Lines, dedups: dict[str, StreamDedup]) -> None:
        """Queue the new lines of a read; positions and counters move once it is queued."""
        if not lines:
            return
        admitted = admit(lines, dedups, self.info)
        batch = admitted.batch
        if batch is None:
            return
        if not self.queue.put(batch, self._stop) and self._stop.is_set():
            raise _Stopped  # not queued: the positions stay where they were
        marks = self.marks
        for stream, end in batch.ends.items():
            marks[stream] = end
        new = len(batch)
        self._new_lines += new
        self._received.add(parse_docker_ts(batch.lines.stamps[-1]), new)
        for stream, count in admitted.lines.items():
            LINES_CAPTURED.labels(stream).inc(count)
            BYTES_CAPTURED.labels(stream).inc(admitted.bytes[stream])
        if batch.lines.truncated is not None:
            truncated = sum(batch.lines.truncated)
            if truncated:
                LINES_TRUNCATED.inc(truncated)
        if self._pace.bounded:
            self._throttle(self._pace.delay(new, batch.size, time.monotonic()))

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

    @staticmethod
    def _check_batch(
        check: TailCheck, lines: Lines, chunks_before: int, stream: LogStream
    ) -> TailState:
        """Feed a read's lines to the tail check, each with the engine messages counted
        up to it: one for a short line; for a joined or cut one, all of the read's."""
        chunks_after = stream.parse_stats.chunks
        running = chunks_before
        state = check.state
        for ts_ns, message, truncated in zip(
            lines.ts_ns(), lines.messages, lines.truncated_flags(), strict=True
        ):
            short = len(message) < ENGINE_CHUNK_BYTES and not truncated
            running = running + 1 if short else max(running + 1, chunks_after)
            state = check.on_line(ts_ns, running, stream.first_data_ns)
            if state is not PENDING:
                break
        return state

    def _holds_new_lines(self, held: Lines) -> bool:
        """Whether lines held back by an unchecked tail read include any not delivered."""
        for stream, ts_ns, seq in zip(
            held.streams, held.ts_ns(), seqs_of(held.streams, held.stamps), strict=True
        ):
            mark = self.marks.get(stream)
            if mark is not None and not mark.covers(ts_ns, seq):
                return True
        return False


def _age(request_ns: int, ts: bytes) -> int:
    """How long before the request a line stamped ``ts`` was written (0 if no line)."""
    return request_ns - parse_docker_ts(ts) if ts else 0
