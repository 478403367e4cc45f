"""A scripted engine for the window reader: a container's log as a list, served by the
engine's rules as ../shared/README.md records them (Docker 20.10):

* ``tail=N`` is taken from the whole log first, counting the lines of both streams (the
  reader asks for both streams whenever it asks for a tail), then ``since`` applies;
* ``since`` is inclusive;
* a non-follow read ends (EOF) after the lines stamped up to ``until``;
* a follow read sends the lines there are, then the lines written later, as they are
  written; ``until`` ends it only when a newer line arrives (the engine stops at the
  first line stamped after ``until`` and ends the body): a quiet follow stream is ended
  by our deadline, not by the engine;
* a followed json-file log that rotates sends its last lines again (same bytes, same
  timestamps).

Time is the real clock: lines written "later" are stamped after the body's first byte.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import Lines
from log_capturer.docker.stream import StreamCut, StreamEnd
from log_capturer.monitor.window import WindowRequest
from log_capturer.timestamps import format_rfc3339_ns

S = 1_000_000_000
MS = 1_000_000


@dataclass(frozen=True)
class Line:
    stream: str
    ts_ns: int
    message: bytes


@dataclass
class Later:
    """Lines the container writes while a follow read is open (``repeat``: after them,
    the engine sends the last ``repeat`` lines again, as at a rotation)."""

    messages: list[tuple[str, str]]
    repeat: int = 0


@dataclass
class Sent:
    """A request as the engine received it."""

    streams: tuple[str, ...]
    since_ns: int
    until_ns: int
    tail: int
    follow: bool
    lines: int = 0
    end: StreamEnd | None = None


@dataclass
class ScriptedEngine:
    """The container's log (``log``, file order) and what follow reads will see written
    (``later``, one entry per follow read, in order; none: the stream stays quiet and our
    deadline ends it after ``idle_ns`` in vain)."""

    log: list[Line] = field(default_factory=list)
    later: list[Later] = field(default_factory=list)
    idle_ns: int = 2 * S
    wait_past_until: bool = False
    """The request waits for a connection past its ``until`` while the container writes a
    line (stamped after ``until``)."""
    sent: list[Sent] = field(default_factory=list)

    whole_second_timestamps = False

    def write(self, stream: str, ts_ns: int, message: str) -> Line:
        line = Line(stream, ts_ns, message.encode())
        self.log.append(line)
        return line

    def open(
        self, info: ContainerInfo, request: WindowRequest, since_ns: int, cut: StreamCut,
        first: bool,
    ) -> ScriptedStream:
        if self.wait_past_until and request.until_ns:
            self.wait_past_until = False  # the first request only
            while time.time_ns() <= request.until_ns:
                time.sleep(0.005)
            self.write("stdout", request.until_ns + MS, "written while the request waited")
        # What the reader asks for: both streams with a tail (the tail counts both).
        streams = ("stdout", "stderr") if request.tail else request.streams
        lines = self.log[-request.tail :] if request.tail else list(self.log)
        lines = [x for x in lines if x.ts_ns >= since_ns and x.stream in streams]
        sent = Sent(request.streams, since_ns, request.until_ns, request.tail, request.follow)
        self.sent.append(sent)
        later = self.later.pop(0) if request.follow and self.later else None
        return ScriptedStream(self, sent, lines, later, request)


class ScriptedStream:
    """One response: the lines there are, then (follow) those written later."""

    def __init__(
        self, engine: ScriptedEngine, sent: Sent, lines: list[Line], later: Later | None,
        request: WindowRequest,
    ) -> None:
        self.engine = engine
        self.sent = sent
        self.lines = lines
        self.later = later
        self.request = request
        self.deadline: float | None = request.deadline
        self._end: StreamEnd | None = None
        self._chunks = 0
        self._first_data_ns = 0
        self._idle_ns = 0

    @property
    def end_reason(self) -> StreamEnd | None:
        return self._end

    @property
    def first_data_ns(self) -> int:
        return self._first_data_ns

    @property
    def idle_at_end_ns(self) -> int:
        return self._idle_ns

    @property
    def partial_lines_discarded(self) -> int:
        return 0

    @property
    def pending_ts(self) -> Mapping[str, int]:
        return {}

    @property
    def chunks(self) -> int:
        return self._chunks

    @property
    def bad_timestamps(self) -> int:
        return 0

    def batches(self, flush_at_eof: bool = False) -> Iterator[Lines]:
        self._first_data_ns = time.time_ns()
        until = self.request.until_ns
        if not self.request.follow:
            yield from self._send([x for x in self.lines if not until or x.ts_ns <= until])
            self._end = StreamEnd.EOF
            return
        for x in self.lines:
            if until and x.ts_ns > until:  # a newer line than until: the engine ends the body
                self._end = StreamEnd.EOF
                return
            yield from self._send([x])
        written = self._written()
        for x in written:
            if until and x.ts_ns > until:
                self._end = StreamEnd.EOF
                return
            yield from self._send([x])
        self._idle_ns = self.engine.idle_ns
        self._end = StreamEnd.DEADLINE

    def _written(self) -> list[Line]:
        """The lines written while the stream is open (stamped after its first byte)."""
        if self.later is None:
            return []
        out = []
        for i, (stream, message) in enumerate(self.later.messages):
            out.append(self.engine.write(stream, self._first_data_ns + (i + 1) * MS, message))
        if self.later.repeat:
            out += out[-self.later.repeat :]
        return out

    def _send(self, lines: list[Line]) -> Iterator[Lines]:
        if not lines:
            return
        self._chunks += len(lines)
        self.sent.lines += len(lines)
        yield Lines(
            [x.stream for x in lines],
            [format_rfc3339_ns(x.ts_ns).encode() for x in lines],
            [x.message for x in lines],
        )

    def close(self) -> None:
        if self._end is None:
            self._end = StreamEnd.INTERRUPTED
        self.sent.end = self._end
