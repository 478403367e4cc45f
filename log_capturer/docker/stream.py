"""Owning one streaming response from the engine: read with a deadline, interrupt, close once."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.util.wait import wait_for_read

from ..buffers import BufferBudget
from .bulk import BulkLineDecoder
from .chunked import ChunkedBodyError, ChunkedDecoder
from .connection import DockerSocketConnection
from .errors import StreamBrokenError
from .frames import ChunkParseStats, FrameDecoder, RawDecoder
from .gather import GATHER_DELAY, GatheredSocket, can_gather
from .lines import LineAssembler, Lines

READ_SIZE = 256 * 1024  # a backlog arrives as fast as we read: fewer, larger reads
# Each read allocates its size up front. A stream starts at READ_SIZE_MIN and doubles
# while reads come back full (a backlog reaches READ_SIZE in four reads); it halves when
# a read fills less than a quarter, so a quiet stream does not hold a 256 KiB buffer
# while it waits. Meant against C-heap fragmentation (scale.py, 300 containers: RSS 218
# MB, 145 with a fixed mmap threshold, 190 with this), not shown to help at 500
# containers (540 MB before, 645 after, one run each): see benchmarks/README.md. The
# daemon now fixes the mmap threshold itself (cli.MMAP_THRESHOLD).
READ_SIZE_MIN = 16 * 1024
# Over TCP and TLS, after a read this small (the engine sends a backlog in pieces as
# small as one line when we keep up), wait a moment so the next read takes what arrived
# meanwhile: each read costs tens of microseconds of Python whatever its size. The wait
# is the time the stream needs for COALESCE_TARGET bytes at its rate of the last read,
# at most COALESCE_DELAY, meant never to be long enough for the engine to block (it
# writes each message with its own write, and the socket holds only about 200 of them).
# Over a unix socket it did stall the engine: there the kernel gathers reads (gather.py).
COALESCE_BELOW = 16 * 1024
COALESCE_TARGET = 8 * 1024
COALESCE_DELAY = GATHER_DELAY
# A read may block this much past the deadline rather than set the socket's timeout
# (two fcntl calls) before every read of a busy stream.
TIMEOUT_SLACK = 0.01


_buffers = threading.local()


def _read_buffer(size: int) -> memoryview:
    """This thread's read buffer of ``size`` bytes (a new one when the size changed: a
    stream's read size moves by doubling or halving, so rarely)."""
    buffer: memoryview | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) != size:
        buffer = _buffers.buffer = memoryview(bytearray(size))
    return buffer


class StreamEnd(StrEnum):
    """How a streaming response ended (the value is the metric label)."""

    EOF = "eof"  # the engine ended the body
    DEADLINE = "deadline"  # our deadline passed (a quiet follow stream never ends itself)
    INTERRUPTED = "interrupted"  # cut from another thread to stop
    TURN = "turn"  # cut from another thread to give the connection to a waiter


class StreamCut:
    """Interrupts one streaming request from another thread, from before it is sent to
    the end of its response.

    The pool hands it the connection and lease the request got (:meth:`attach`, see
    ``DockerConnectionPool.checkout``), so a cut also reaches a request still waiting
    for the engine's response headers. (Podman sends a follow stream's headers only
    with its first line: a quiet container's request waits there for the whole window.)
    Only the socket is shut down, never closed, and only while the lease is current.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: DockerSocketConnection | None = None
        self._lease = -1
        self.attached_at: float | None = None  # when the request got its connection
        self.interrupted = False
        self.turn_over = False  # interrupted to give the connection to a waiter
        self.stopped = False  # interrupted to stop

    def attach(self, conn: DockerSocketConnection, lease: int) -> None:
        """The request got ``conn`` under ``lease`` (called by the pool at checkout)."""
        with self._lock:
            if self._conn is not conn or self._lease != lease:
                self.attached_at = time.monotonic()
            self._conn, self._lease = conn, lease
            cut = self.interrupted
        if cut:
            conn.shutdown_if_leased(lease)

    def cut(self, stop: bool) -> None:
        with self._lock:
            self.stopped = self.stopped or stop
            self.turn_over = self.turn_over or not stop
            self.interrupted = True
            conn, lease = self._conn, self._lease
        if conn is not None:
            conn.shutdown_if_leased(lease)

    def reason(self) -> StreamEnd:
        """How a cut stream ended: ``turn`` unless a stop was asked for too."""
        return StreamEnd.TURN if self.turn_over and not self.stopped else StreamEnd.INTERRUPTED


class ManagedResponse:
    """Owns a streaming HTTP response and the socket under it until :meth:`close`.

    * Reads block at most until the ``deadline`` (a monotonic time): the socket's
      timeout is set to the time left before each read, because a quiet follow
      stream never ends by itself on the engine.
    * :meth:`interrupt` may be called from any thread. It only shuts the socket down
      (waking the blocked reader with EOF) and only while this response still holds
      the connection (its lease). Closing the response from another thread would
      deadlock a blocked reader (urllib3 #2868), so only the reader closes.
    * :meth:`close` runs once, whatever happened: it closes the response and with
      it the socket, so the file descriptor is freed now, not at the next GC (no
      ``sock._response`` cycle as in docker-py #2766). A response the engine ended
      cleanly has already returned its connection to the pool for reuse.
    """

    def __init__(self, response: requests.Response | None, cut: StreamCut | None = None) -> None:
        self._response = response
        self._raw: Any = response.raw if response is not None else None
        conn = self._raw.connection if self._raw is not None else None
        self._conn: DockerSocketConnection | None = (
            conn if isinstance(conn, DockerSocketConnection) else None
        )
        self.cut = cut or StreamCut()
        if self._conn is not None:
            self.cut.attach(self._conn, self._conn.lease)
        sock = self._conn.sock if self._conn is not None else None
        self._tls_sock: ssl.SSLSocket | None = sock if isinstance(sock, ssl.SSLSocket) else None
        # A chunked body (every log and event stream) is decoded here, from the
        # connection's buffered reader: see chunked.py for why.
        http_response = getattr(self._raw, "_fp", None)
        self._http: Any = http_response if getattr(http_response, "chunked", False) else None
        self._chunks = ChunkedDecoder() if self._http is not None else None
        self._read_size = READ_SIZE_MIN  # the next read's size (see READ_SIZE_MIN)
        self._buffered_empty = False  # the reader holds no bytes: read into our buffer
        self._body_done = False
        self._gather: GatheredSocket | None = None  # while the kernel gathers reads
        self._gather_tried = False
        self._deadline: float | None = None  # of the current read
        self._close_lock = threading.Lock()
        self._closed = False
        self.end_reason: StreamEnd | None = None

    @classmethod
    def ended(cls, end: StreamEnd, cut: StreamCut | None = None) -> ManagedResponse:
        """A response that ended before the engine sent its headers (see
        ``DockerEngine.open_logs``): reads return ``b""`` with ``end``."""
        managed = cls(None, cut)
        managed.end_reason = end
        managed._closed = True
        return managed

    @property
    def interrupted(self) -> bool:
        return self.cut.interrupted

    @property
    def turn_over(self) -> bool:
        return self.cut.turn_over

    @property
    def stopped(self) -> bool:
        return self.cut.stopped

    def __enter__(self) -> ManagedResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def read(self, deadline: float | None) -> bytes:
        """Up to ``READ_SIZE`` body bytes as soon as any arrive; ``b""`` at the end (see
        ``end_reason``)."""
        return self._guarded(deadline, self._read_body)

    @property
    def chunked(self) -> bool:
        """The body is chunked: :meth:`read_raw` then returns it still chunk-encoded."""
        return self._chunks is not None

    def read_raw(self, deadline: float | None) -> bytes:
        """Like :meth:`read`, but a chunked body comes as it is on the wire, for a caller
        that decodes the chunks itself (bulk.py) and calls :meth:`body_ended` when it
        sees the last one. Over a unix socket the kernel gathers these reads (see
        :attr:`gathers`)."""
        if (
            not self._gather_tried
            and self._buffered_empty
            and self._http is not None
            and not self._body_done
        ):
            self._start_gathering()
        return self._guarded(deadline, self._read_wire)

    @property
    def gathers(self) -> bool:
        """Reads wait in the kernel for ``GATHER_BYTES`` or ``GATHER_DELAY``, whichever
        comes first (gather.py; no nap needed after a small read)."""
        return self._gather is not None

    def _start_gathering(self) -> None:
        """Over a plain unix socket, once the buffered reader holds nothing (so that every
        read reaches the socket; ``_buffered_empty`` is only set for a reader with
        ``readinto1``), and never once the body ended: its connection is back in the pool
        then, maybe another request's (LogStream reads once more after the last chunk).
        Undone before the connection goes back to the pool (:meth:`_stop_gathering`)."""
        self._gather_tried = True
        sock = self._conn.sock if self._conn is not None else None
        if sock is not None and can_gather(sock):
            self._gather = GatheredSocket(sock)

    def _stop_gathering(self) -> None:
        """The socket as the pool handed it out; closed if it cannot be set back (the pool
        then drops the connection)."""
        gather, self._gather = self._gather, None
        if gather is not None and not gather.restore() and self._conn is not None:
            self._conn.close()

    def _wait_readable(self) -> None:
        assert self._gather is not None
        self._gather.wait_readable(self._deadline)

    def body_ended(self) -> None:
        """The caller of :meth:`read_raw` saw the body's last chunk."""
        if not self._body_done and self._http is not None:
            self._complete()

    def _guarded(self, deadline: float | None, reader: Callable[[], bytes]) -> bytes:
        if self.end_reason is not None:
            return b""
        if self.interrupted:
            self.end_reason = self._cut_reason()
            return b""
        conn = self._conn
        sock = conn.sock if conn is not None else None
        remaining: float | None = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.end_reason = StreamEnd.DEADLINE
                return b""
        try:
            if self._gather is not None:
                self._deadline = deadline
                self._wait_readable()
            elif sock is not None:  # (an OSError here is the socket's end, as in the read)
                current = sock.gettimeout()
                if remaining is None:
                    if current is not None:
                        sock.settimeout(None)
                elif current is None or not remaining <= current <= remaining + TIMEOUT_SLACK:
                    sock.settimeout(remaining)
            data = reader()
        except (ReadTimeoutError, TimeoutError):
            self.end_reason = StreamEnd.DEADLINE
            return b""
        except (ProtocolError, OSError, ChunkedBodyError) as exc:
            if self.interrupted:
                self.end_reason = self._cut_reason()
                return b""
            raise StreamBrokenError(f"stream broke: {exc!r}") from exc
        if not data:
            self.end_reason = self._cut_reason() if self.interrupted else StreamEnd.EOF
        return data

    def _read1(self, fp: Any) -> bytes:
        """What ``fp`` has, up to the stream's read size, which follows the reads.

        Read into this thread's buffer and copied out at the size that arrived: a
        ``read1(size)`` allocates ``size`` and shrinks it to what came, which splits a
        free chunk of the C heap at every read, and with one thread per container
        the heaps fragment and grow for hours (benchmarks/README.md, "Memory"). The
        reader may still hold body bytes that came with the headers: ``read1`` takes
        them first (``readinto1`` would block for more after copying them), until a
        read returns less than asked, which leaves it holding nothing."""
        size = self._read_size
        if self._buffered_empty:
            buffer = _read_buffer(size)
            n = fp.readinto1(buffer)
            while n is None:  # a gathering socket's read timed out with nothing after all
                self._wait_readable()
                n = fp.readinto1(buffer)
            data = bytes(buffer[:n])
        else:
            data = fp.read1(size)
            self._buffered_empty = len(data) < size and hasattr(fp, "readinto1")
        if self._tls_sock is not None and data and len(data) < size:
            data = self._gather_records(fp, data, size)
            self._buffered_empty = False  # read1 may have left bytes in the reader
        if len(data) >= size:
            self._read_size = min(2 * size, READ_SIZE)
        elif 4 * len(data) < size and size > READ_SIZE_MIN:
            self._read_size = size // 2
        return data

    def _gather_records(self, fp: Any, data: bytes, size: int) -> bytes:
        """Over TLS a read returns one TLS record, and the engine flushes each log line
        as a record of its own: read on while more has arrived (decrypted bytes pending,
        or the socket readable), so a read takes what arrived, as on a unix socket.
        Without this, a backlog over TLS is read a line per read (and a coalescing nap
        per line: 500 lines/s measured)."""
        sock = self._tls_sock
        assert sock is not None
        parts = [data]
        got = len(data)
        while got < size and (sock.pending() or wait_for_read(sock, timeout=0.0)):
            try:
                more: bytes = fp.read1(size - got)
            except OSError:
                break  # keep what was read; the next read meets the error again
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts) if len(parts) > 1 else data

    def _read_wire(self) -> bytes:
        if self._chunks is None:
            return self._read1(self._raw)
        if self._body_done:
            return b""
        raw = self._read1(self._http.fp)
        if not raw and not self.interrupted:
            raise ChunkedBodyError("the engine closed the connection before the body ended")
        return raw

    def _read_body(self) -> bytes:
        if self._chunks is None:
            return self._read1(self._raw)
        while not self._body_done:
            raw = self._read1(self._http.fp)
            if not raw:
                if self.interrupted:
                    return b""
                raise ChunkedBodyError("the engine closed the connection before the body ended")
            data = self._chunks.feed(raw)
            if self._chunks.done:
                self._complete()
            if data:
                return data
        return b""

    def _complete(self) -> None:
        """The engine ended the body: mark the response complete and give the connection
        back to the pool, as urllib3 does when it reads a body to its end."""
        self._body_done = True
        self._stop_gathering()
        self._http.close()  # http.client: the response is done; the socket stays open
        self._raw.release_conn()

    def _cut_reason(self) -> StreamEnd:
        return self.cut.reason()

    def yield_turn(self) -> None:
        """Like :meth:`interrupt`, but the reader sees ``turn``: end this window only."""
        self.cut.cut(stop=False)

    def interrupt(self) -> None:
        """Wake the reader from another thread; it will see the end and close."""
        self.cut.cut(stop=True)

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._response is not None:
                self._response.close()
        finally:
            self._response = None
            self._raw = None
            self._conn = None
            self._tls_sock = None
            self._gather = None


class LogStream:
    """One window of a container's log: decodes frames (or a TTY's raw bytes) into whole lines."""

    def __init__(
        self,
        response: ManagedResponse,
        *,
        tty: bool,
        deadline: float | None,
        max_line_bytes: int,
        parse_stats: ChunkParseStats | None = None,
        buffers: BufferBudget | None = None,
    ) -> None:
        self.response = response
        self.deadline = deadline
        self.parse_stats = parse_stats or ChunkParseStats()
        self._decoder: FrameDecoder | RawDecoder = (
            RawDecoder(self.parse_stats) if tty else FrameDecoder(self.parse_stats)
        )
        self.assembler = LineAssembler(max_line_bytes, buffers)
        # A chunked multiplexed body (the usual case) is decoded in bulk from the wire.
        self._bulk = (
            BulkLineDecoder(self._decoder, self.assembler)
            if isinstance(self._decoder, FrameDecoder) and response.chunked
            else None
        )
        self.partial_lines_discarded = 0
        self.first_data_ns = 0  # wall clock when the body's first bytes arrived
        self.idle_at_end_ns = 0  # how long the last read waited for bytes in vain
        self.pending_ts: dict[str, int] = {}  # incomplete lines dropped at the end

    @property
    def end_reason(self) -> StreamEnd | None:
        return self.response.end_reason

    def batches(self, flush_at_eof: bool = False) -> Iterator[Lines]:
        """Whole lines until the engine ends the body, the deadline passes, or an
        interrupt: non-empty :class:`Lines` per socket read (a backlog read holds
        thousands).

        ``flush_at_eof``: the container has stopped and this body is its end, so a last
        line without a newline is complete. Otherwise an incomplete line is dropped at
        the end and re-read by the next window.
        """
        bulk = self._bulk
        previous = time.monotonic()  # when the previous read returned
        while True:
            waiting_since = time.time_ns()
            if bulk is not None:
                data = self.response.read_raw(self.deadline)
            else:
                data = self.response.read(self.deadline)
            if not data:
                # Idle only if the read itself waited: a reader held up elsewhere (a full
                # queue) finds the deadline passed at once, with bytes still unread.
                self.idle_at_end_ns = time.time_ns() - waiting_since
                break
            if not self.first_data_ns:
                self.first_data_ns = time.time_ns()
            if bulk is not None:
                try:
                    batch = bulk.feed(data)
                except ChunkedBodyError as exc:
                    if self.response.interrupted:
                        self.response.end_reason = self.response._cut_reason()
                        break
                    raise StreamBrokenError(f"stream broke: {exc!r}") from exc
                now = time.monotonic()
                if bulk.done:
                    self.response.body_ended()
                elif len(data) < COALESCE_BELOW and not self.response.gathers:
                    time.sleep(min(COALESCE_DELAY, COALESCE_TARGET * (now - previous) / len(data)))
                previous = now
            else:
                batch = Lines.empty()
                add = self.assembler.add
                for chunk in self._decoder.feed(data):
                    batch.add_loglines(add(chunk))
            if batch:
                yield batch
        batch = Lines.empty()
        if flush_at_eof and self.response.end_reason is StreamEnd.EOF:
            if isinstance(self._decoder, RawDecoder):
                for chunk in self._decoder.flush():
                    batch.add_loglines(self.assembler.add(chunk))
            batch.add_loglines(self.assembler.flush())
        else:
            self.pending_ts = self.assembler.pending_ts()
            self.partial_lines_discarded += self.assembler.discard()
        if batch:
            yield batch

    def interrupt(self) -> None:
        self.response.interrupt()

    def yield_turn(self) -> None:
        self.response.yield_turn()

    def close(self) -> None:
        self.assembler.discard()  # a read given up early: its partial lines are not held
        self.response.close()
