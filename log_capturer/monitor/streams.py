"""Where a request's log stream comes from: the engine's ``/containers/{id}/logs``
(:class:`EngineStreams`), or a scripted engine in tests; and what the window reader uses
of a stream (:class:`ReadStream`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from ..buffers import BufferBudget
from ..discovery.container import ContainerInfo
from ..docker.engine import DockerEngine
from ..docker.lines import Lines
from ..docker.stream import LogStream, StreamCut, StreamEnd

if TYPE_CHECKING:
    from .window import WindowRequest


class ReadStream(Protocol):
    """What the reader uses of a log stream (:class:`~log_capturer.docker.stream.LogStream`)."""

    deadline: float | None

    @property
    def end_reason(self) -> StreamEnd | None: ...

    @property
    def first_data_ns(self) -> int:
        """Wall clock (ns) when the body's first bytes arrived (0: none yet)."""
        ...

    @property
    def idle_at_end_ns(self) -> int:
        """How long the last read waited for bytes in vain."""
        ...

    @property
    def partial_lines_discarded(self) -> int: ...

    @property
    def pending_ts(self) -> Mapping[str, int]:
        """Per stream, the stamp of a line still incomplete at the end (dropped)."""
        ...

    @property
    def chunks(self) -> int:
        """Engine messages received so far."""
        ...

    @property
    def bad_timestamps(self) -> int: ...

    def batches(self, flush_at_eof: bool = False) -> Iterator[Lines]: ...

    def close(self) -> None: ...


class StreamSource(Protocol):
    """Opens a request's log stream (the engine; a scripted one in tests)."""

    @property
    def whole_second_timestamps(self) -> bool: ...

    def open(
        self, info: ContainerInfo, request: WindowRequest, since_ns: int, cut: StreamCut,
        first: bool,
    ) -> ReadStream: ...


class EngineStreams:
    """Log streams from the engine's ``/containers/{id}/logs``."""

    def __init__(
        self, engine: DockerEngine, stream_window: float, max_line_bytes: int,
        buffers: BufferBudget | None,
    ) -> None:
        self.engine = engine
        self.stream_window = stream_window
        self.max_line_bytes = max_line_bytes
        self.buffers = buffers

    @property
    def whole_second_timestamps(self) -> bool:
        return self.engine.whole_second_timestamps

    def open(
        self, info: ContainerInfo, request: WindowRequest, since_ns: int, cut: StreamCut,
        first: bool,
    ) -> ReadStream:
        tty, tail = info.tty, request.tail
        response = self.engine.open_logs(
            info.id,
            stdout=tty or bool(tail) or "stdout" in request.streams,
            stderr=tty or bool(tail) or "stderr" in request.streams,
            follow=request.follow,
            since_ns=since_ns,
            until_ns=request.until_ns,
            tail=tail,
            deadline=request.deadline,
            # A container never read yet goes before monitors taking turns; the others
            # wait as long as a turn of every monitor may take, not the API timeout.
            priority=first,
            wait_timeout=self.stream_window + self.engine.config.pool.wait_timeout,
            cut=cut,
        )
        return _EngineStream(
            response, tty=tty, deadline=request.deadline,
            max_line_bytes=self.max_line_bytes, buffers=self.buffers,
        )


class _EngineStream(LogStream):
    @property
    def chunks(self) -> int:
        return self.parse_stats.chunks

    @property
    def bad_timestamps(self) -> int:
        return self.parse_stats.bad_timestamps
