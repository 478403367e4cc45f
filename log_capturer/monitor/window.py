"""One request of a window: asked for (:class:`WindowRequest`), read to its end by
:class:`WindowReader`, and told (:class:`WindowResult`: what it read, how it ended, what
it proved). How the tail check, the held lines and the proofs keep capture exact:
docs/capture.md, "Tails" and "Checked times and the proofs that move them"."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from ..buffers import BufferBudget, Kind, lines_cost
from ..discovery.container import ContainerInfo
from ..docker.frames import ENGINE_CHUNK_BYTES
from ..docker.lines import Lines
from ..docker.stream import StreamCut, StreamEnd
from ..metrics.registry import (
    CLOCK_BACKWARDS,
    LINES_DEDUPLICATED,
    LINES_RESENT,
    PARTIAL_LINES_REREAD,
    STREAM_WINDOWS,
    TAIL_FALLBACKS,
    TAIL_READS,
    TIMESTAMP_ERRORS,
)
from ..positions.marks import Mark, seqs_of
from ..timestamps import parse_docker_ts
from .admit import RecentLines, StreamDedup
from .policy import Gap, GapReason, TailPolicy
from .resume import GAP, PENDING, PROVEN, TailCheck, TailState, ended_before_until
from .streams import ReadStream, StreamSource

IDLE_PROOF_NS = 10_000_000_000
"""A follow stream silent this long before its end proves it had caught up."""
BEHIND_NS = 5_000_000_000
"""A stream whose newest line is older than this is behind: its window is not ended while
it delivers (a reopen while behind cannot be cheap), and its request has no ``until``."""


class Stopped(Exception):
    """Raised inside a window when the monitor is asked to stop."""


class ReadKind(Enum):
    """Why a request is made."""

    FOLLOW = "follow"
    """The window's follow read: its deadline moves on while the stream is behind."""
    CATCH_UP = "catch_up"
    """A stream far behind the other, read alone without follow beside the follow read."""
    DRAIN = "drain"
    """The container stopped: read to the end (a last line without a newline is whole)."""
    PROOF = "proof"
    """A proof read: not follow, it ends by itself (never cut by a turn while the engine
    scans)."""


@dataclass(frozen=True, slots=True)
class WindowRequest:
    """``streams`` from ``since_ns`` (moved back by the tolerance when ``tail``), until
    ``until_ns`` (0: none), read until ``deadline`` (monotonic)."""

    streams: tuple[str, ...]
    since_ns: int
    until_ns: int
    tail: int
    follow: bool
    deadline: float
    why: ReadKind


@dataclass(slots=True)
class Proof:
    """Every line of the streams not seen yet is stamped at or after ``reference_ns``
    minus the tolerance; a line still incomplete at the end (``pending_ts``) caps it."""

    reference_ns: int
    pending_ts: Mapping[str, int]


@dataclass(slots=True)
class WindowResult:
    """What a request read (``new_lines`` queued, the newest stamp seen), how it ended
    (``end``; ``gap``: a tail read given up, nothing of it delivered: redo it;
    ``unproven``: a follow tail read cut before its check while it held new lines) and
    what it proved (``proof``: None when it proved nothing)."""

    end: StreamEnd | None = None
    gap: Gap | None = None
    new_lines: int = 0
    newest: bytes = b""
    unproven: bool = False
    proof: Proof | None = None


@dataclass(slots=True)
class _Hold:
    """The lines of a tail read held back until its check settles, and the bytes they
    reserve in the buffer budget."""

    lines: Lines = field(default_factory=Lines.empty)
    cost: int = 0

    def release(self, buffers: BufferBudget | None) -> None:
        if self.cost and buffers is not None:
            buffers.release(Kind.TAIL_HOLD, self.cost)
        self.lines, self.cost = Lines.empty(), 0


Deliver = Callable[[Lines, dict[str, StreamDedup]], int]
"""Queues a read's new lines (dedup per stream), moving the read marks; how many."""


class WindowReader:
    """Makes one monitor's requests, one at a time (its thread), and reads each to its
    end. Any thread may cut the current one (:meth:`cut`)."""

    def __init__(
        self,
        info: Callable[[], ContainerInfo],
        source: StreamSource,
        policy: TailPolicy,
        marks: dict[str, Mark],
        recent: Mapping[str, RecentLines],
        deliver: Deliver,
        max_stream_hold: float,
        stream_window: float,
        tail_hold_max_bytes: int,
        buffers: BufferBudget | None = None,
    ) -> None:
        self._info = info
        self._source = source
        self._policy = policy
        self._marks = marks
        self._recent = recent
        self._deliver = deliver
        self._max_stream_hold = max_stream_hold
        self._stream_window = stream_window
        self._tail_hold_max_bytes = tail_hold_max_bytes
        self._buffers = buffers
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._cut: StreamCut | None = None  # the current request's, from before it is sent
        self._current: ReadStream | None = None
        self._current_proof = False
        self.requests = 0

    # -- any thread ------------------------------------------------------------------------

    def cut(self, stop: bool) -> bool:
        """End the current request (``stop``: and every later one); False if none holds a
        connection (a turn is then not given)."""
        with self._lock:
            if stop:
                self._stopping.set()
                if self._cut is not None:
                    self._cut.cut(stop=True)
                return True
            if self._cut is None or self._cut.attached_at is None or self._stopping.is_set():
                return False
            self._cut.cut(stop=False)
            return True

    def held_for(self) -> float | None:
        """How long the current request has held its connection; None if none, or if it
        is a proof read the engine is still scanning for (a cut would waste the scan, and
        the next window would start it again)."""
        with self._lock:
            # Held from when the request got its connection (its wait for one is not a
            # turn), including a wait for the engine's answer.
            held_since = self._cut.attached_at if self._cut is not None else None
            if held_since is None:
                return None
            if self._current_proof and not (self._current and self._current.first_data_ns):
                return None
            return time.monotonic() - held_since

    # -- the monitor's thread --------------------------------------------------------------

    def read(self, request: WindowRequest) -> WindowResult:
        """Make ``request`` and read it to its end (see :class:`WindowResult`)."""
        since_ns = request.since_ns
        if request.tail:
            since_ns = max(1, since_ns - self._policy.tolerance_ns)
            TAIL_READS.inc()
        request_ns = time.time_ns()
        started = time.monotonic()
        stream = self._open(request, since_ns)
        result = WindowResult()
        dedups = {
            s: StreamDedup(self._marks[s], self._recent[s], self._source.whole_second_timestamps)
            for s in request.streams
        }
        hold = _Hold()
        try:
            gap_free = self._consume(request, stream, dedups, hold, result, request_ns, started)
        finally:
            hold.release(self._buffers)  # delivered, or given up (read again)
            with self._lock:
                self._current = None
                self._cut = None
                self._current_proof = False
            stream.close()
            closed_ns = time.time_ns()
            elapsed = time.monotonic() - started
            self._policy.read_ended(
                request.follow, result.gap is not None, result.new_lines, elapsed,
                stream.idle_at_end_ns, time.monotonic(),
            )
            _count(stream, result, dedups)
        result.end = stream.end_reason
        if gap_free:
            result.proof = _proof(request, stream, result.newest, request_ns, closed_ns)
        return result

    def _open(self, request: WindowRequest, since_ns: int) -> ReadStream:
        cut = StreamCut()
        with self._lock:
            # Stops and turns reach the request from here on, also while the engine has
            # not answered yet (Podman answers a quiet follow request only at its first line).
            self._cut = cut
            self._current_proof = request.why is ReadKind.PROOF
            if self._stopping.is_set():
                cut.cut(stop=True)
        try:
            stream = self._source.open(self._info(), request, since_ns, cut, self.requests == 0)
        except BaseException:
            with self._lock:
                self._cut = None
            raise
        self.requests += 1
        with self._lock:
            self._current = stream
        return stream

    def _consume(
        self,
        request: WindowRequest,
        stream: ReadStream,
        dedups: dict[str, StreamDedup],
        hold: _Hold,
        result: WindowResult,
        request_ns: int,
        started: float,
    ) -> bool:
        """Read every batch: delivered at once, or held while the tail check is pending.
        True if the read was gap-free (no tail, or its tail proven)."""
        check = TailCheck(request.tail) if request.tail else None
        extend = request.why in (ReadKind.FOLLOW, ReadKind.DRAIN)
        hold_until = started + self._max_stream_hold
        chunks_seen = 0
        # A running container's log may end inside a split line still being written:
        # only a drain's last line without a newline is whole.
        for lines in stream.batches(flush_at_eof=request.why is ReadKind.DRAIN):
            result.newest = lines.stamps[-1]
            if extend:
                self._extend_if_behind(stream, lines, hold_until)
            if check is None or check.state is not PENDING:
                result.new_lines += self._deliver(lines, dedups)
                continue
            state = _check_batch(check, lines, chunks_seen, stream)
            chunks_seen = stream.chunks
            if state is PENDING:
                gap = self._held(hold, lines)
                if gap is not None:
                    result.gap = self._gave_up(gap)
                    return False
            elif state is GAP:
                age = _age(request_ns, result.newest)
                result.gap = self._gave_up(self._policy.gap(GapReason.FULL, age))
                return False
            else:  # PROVEN: what was held goes first, in order
                hold.lines.extend(lines)
                result.new_lines += self._deliver(hold.lines, dedups)
                hold.release(self._buffers)
        if check is None:
            return True
        if check.state is PENDING:
            self._settle_at_end(request, stream, check, hold, dedups, result, request_ns)
        return result.gap is None and check.state is PROVEN

    def _held(self, hold: _Hold, lines: Lines) -> Gap | None:
        """Hold ``lines`` back; a gap when the hold does not fit its bounds."""
        cost = lines_cost(len(lines), lines.size)
        if hold.cost + cost > self._tail_hold_max_bytes:
            return self._policy.gap(GapReason.HELD_BYTES)
        if self._buffers is not None and not self._buffers.try_reserve(Kind.TAIL_HOLD, cost):
            return self._policy.gap(GapReason.BUDGET)
        hold.cost += cost
        hold.lines.extend(lines)
        return None

    def _settle_at_end(
        self,
        request: WindowRequest,
        stream: ReadStream,
        check: TailCheck,
        hold: _Hold,
        dedups: dict[str, StreamDedup],
        result: WindowResult,
        request_ns: int,
    ) -> None:
        """The body ended with the tail check still pending.

        The engine's end settles the count only if ``until`` had not passed: a tail line
        stamped after ``until`` ends the body early, and lines cut that way prove nothing
        (the request may have waited long for its connection, ``until`` counting from
        before the wait).
        """
        eof = stream.end_reason is StreamEnd.EOF
        settled = ended_before_until(eof, request.until_ns, time.time_ns())
        state = check.at_end(settled, stream.chunks)
        if state is PROVEN:
            result.new_lines += self._deliver(hold.lines, dedups)
        elif state is GAP:
            age = _age(request_ns, result.newest)
            result.gap = self._gave_up(self._policy.gap(GapReason.FULL, age))
        elif eof:
            result.gap = self._gave_up(self._policy.gap(GapReason.UNTIL))
        elif (
            request.follow
            and stream.end_reason is not StreamEnd.INTERRUPTED
            and self._holds_new_lines(hold.lines)
        ):
            # Cut before the check (no new line came to prove it): its new lines are read
            # again by a proof read, which the engine's end settles. (A non-follow read cut
            # so is read again as it was: its end settles it.)
            result.unproven = True

    @staticmethod
    def _gave_up(gap: Gap) -> Gap:
        """A tail read that cannot be trusted: counted, and redone by the monitor."""
        TAIL_FALLBACKS.labels(gap.reason.value).inc()
        return gap

    def _extend_if_behind(self, stream: ReadStream, lines: Lines, hold_until: float) -> None:
        """A stream still reading old lines keeps its connection: a reopen while behind
        would make the engine look for ``since`` in the whole log file."""
        if stream.deadline is None:
            return
        newest = lines.stamps[-1]
        if time.time_ns() - parse_docker_ts(newest) > BEHIND_NS:
            extended = min(time.monotonic() + self._stream_window, hold_until)
            if extended > stream.deadline:
                stream.deadline = extended

    def _holds_new_lines(self, held: Lines) -> bool:
        """Whether lines held back by an unchecked tail read include any not delivered."""
        for stream, ts_ns, seq in zip(
            held.streams, held.ts_ns(), seqs_of(held.streams, held.stamps), strict=True
        ):
            mark = self._marks.get(stream)
            if mark is not None and not mark.covers(ts_ns, seq):
                return True
        return False


def _check_batch(
    check: TailCheck, lines: Lines, chunks_before: int, stream: ReadStream
) -> TailState:
    """Feed a read's lines to the tail check, each with the engine messages counted up
    to it: one for a short line; for a joined or cut one, all of the read's."""
    chunks_after = stream.chunks
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


def _proof(
    request: WindowRequest, stream: ReadStream, newest: bytes, request_ns: int, closed_ns: int
) -> Proof | None:
    """What a gap-free read proved: every line not seen comes after the last one received;
    after the request if the engine ended the body (up to ``until`` when that had passed:
    a re-read after a tail fallback). A follow stream whose read waited long in vain at
    its end had caught up: a line written before that wait's first half would have
    reached us during its second half (the engine sends a followed line as it is
    written; half the wait bounds how late)."""
    reference = parse_docker_ts(newest) if newest else 0
    until_ns = request.until_ns
    if stream.end_reason is StreamEnd.EOF:
        reference = max(reference, min(request_ns, until_ns) if until_ns else request_ns)
    elif (
        stream.end_reason in (StreamEnd.DEADLINE, StreamEnd.TURN)
        and request.follow
        and stream.idle_at_end_ns >= IDLE_PROOF_NS
    ):
        reference = max(reference, closed_ns - stream.idle_at_end_ns // 2)
    return Proof(reference, stream.pending_ts) if reference > 0 else None


def _count(stream: ReadStream, result: WindowResult, dedups: dict[str, StreamDedup]) -> None:
    """The read's counters: how it ended (a tail read given up ends with no end of its
    own), what dedup dropped, lines read again, bad timestamps."""
    end_label = stream.end_reason or ("tail_gap" if result.gap is not None else "error")
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
    if stream.bad_timestamps:
        TIMESTAMP_ERRORS.inc(stream.bad_timestamps)


def _age(request_ns: int, ts: bytes) -> int:
    """How long before the request a line stamped ``ts`` was written (0 if no line)."""
    return request_ns - parse_docker_ts(ts) if ts else 0
