"""The pool's contract: bounds, waiting, reuse, expiry, health checks, and honest accounting."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from log_capturer.docker.chunked import ChunkedDecoder
from log_capturer.docker.config import DockerConfig, PoolConfig
from log_capturer.docker.engine import DockerEngine
from log_capturer.docker.errors import PoolClosedError, PoolExhaustedError
from log_capturer.docker.gather import GATHER_BYTES, GATHER_DELAY
from log_capturer.docker.pool import request_kind
from log_capturer.docker.stream import READ_SIZE_MIN, ManagedResponse, _read_buffer
from log_capturer_testkit import wait_for

from .fake_engine import FakeEngine


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeEngine]:
    engine = FakeEngine(tmp_path / "engine.sock")
    yield engine
    engine.stop()


def make_engine(fake: FakeEngine, **pool: object) -> DockerEngine:
    config = DockerConfig(
        socket_path=fake.path, timeout=5, api_version="1.41", pool=PoolConfig(**pool)
    )  # type: ignore[arg-type]
    return DockerEngine(config)


def hold(engine: DockerEngine, seconds: float, lines: int = 0) -> ManagedResponse:
    url = engine.url("/containers/{0}/logs", "abc")
    response = engine.get(url, {"seconds": seconds, "lines": lines}, stream=True)
    return ManagedResponse(response)


def raw_ping(engine: DockerEngine) -> None:
    """GET /_ping without the retries and error handling of ``engine.ping()``."""
    engine.get(engine.url("/_ping", versioned=False)).close()


def drain(stream: ManagedResponse, deadline: float | None = None) -> None:
    while stream.read(deadline):
        pass


def drain_raw(stream: ManagedResponse, deadline: float | None = None) -> tuple[bytes, bool]:
    """The body through ``read_raw``, as bulk.py reads it; and whether any read was
    gathered by the kernel."""
    chunks = ChunkedDecoder()
    body = b""
    gathered = False
    while not chunks.done:
        raw = stream.read_raw(deadline)
        gathered = gathered or stream.gathers
        if not raw:
            break
        body += chunks.feed(raw)
    if chunks.done:
        stream.body_ended()
    return body, gathered


def wait_waiting(engine: DockerEngine, n: int) -> None:
    """Until ``n`` callers wait for a connection (the pool's own count)."""
    wait_for(lambda: engine.pool.stats().waiting == n, 5, interval=0.01, what=f"{n} waiting")


def _fd_is(fd: int, inode: int) -> bool:
    try:
        return os.fstat(fd).st_ino == inode
    except OSError:
        return False


def test_sequential_api_calls_reuse_one_connection(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        for _ in range(20):
            assert engine.ping()
        stats = engine.pool.stats()
        assert stats.new_connections == 1
        assert stats.checkouts == {"api": 20}
        assert stats.reuses == {"api": 19}
        assert (stats.open, stats.idle, stats.in_use) == (1, 1, 0)
    finally:
        engine.close()


def test_streams_with_different_urls_share_the_pool(fake: FakeEngine) -> None:
    """docker-py's stock adapter keys pools by URL; ours must reuse across ids and since."""
    engine = make_engine(fake)
    try:
        for since in range(5):
            url = engine.url("/containers/{0}/logs", f"c{since}")
            response = engine.get(url, {"since": since, "lines": 2}, stream=True)
            with ManagedResponse(response) as stream:
                drain(stream)
                assert stream.end_reason == "eof"
        stats = engine.pool.stats()
        assert stats.new_connections == 1
        assert stats.reuses == {"stream": 4}
    finally:
        engine.close()


def test_a_stream_read_allocates_what_arrived_not_its_read_size(fake: FakeEngine) -> None:
    """Reads go into the thread's buffer and are copied out at their size: a read that
    allocated its whole read size (16 KiB and up) and shrank it to a few hundred bytes
    fragmented the C heap of every monitor thread (benchmarks/README.md, "Memory")."""
    engine = make_engine(fake)
    try:
        url = engine.url("/containers/{0}/logs", "c1")
        response = engine.get(url, {"seconds": 0.3, "lines": 3}, stream=True)
        with ManagedResponse(response) as stream:
            assert stream.read(None)  # the lines (with whatever came with the headers)
            _read_buffer(READ_SIZE_MIN)  # this thread's buffer, as after a first read of it
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                before, _ = tracemalloc.get_traced_memory()
                drain(stream)  # the body's end, after 0.3 s
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert stream.end_reason == "eof"
        assert peak - before < READ_SIZE_MIN // 2, (before, peak)
    finally:
        engine.close()


def test_max_open_makes_callers_wait_then_fail_clearly(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=2, max_idle=2, wait_timeout=0.3)
    held = [hold(engine, 30), hold(engine, 30)]
    errors: list[BaseException] = []

    def call() -> None:
        try:
            raw_ping(engine)
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    try:
        caller.start()
        wait_waiting(engine, 1)  # it waits rather than failing at once ...
        caller.join(5)
        assert len(errors) == 1 and isinstance(errors[0], PoolExhaustedError)  # ... then fails
        assert "max_open" in str(errors[0]) and "0.3s" in str(errors[0])
        stats = engine.pool.stats()
        assert (stats.open, stats.in_use, stats.waits, stats.wait_timeouts) == (2, 2, 1, 1)
        assert stats.waiting == 0
    finally:
        for stream in held:
            stream.interrupt()
            stream.close()
        engine.close()
    assert engine.pool.stats().open == 0


def test_a_returned_connection_goes_to_the_waiter(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=1, max_idle=1, wait_timeout=5)
    first = hold(engine, 0.3, lines=1)
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(engine.ping()))
    waiter.start()
    wait_waiting(engine, 1)
    drain(first)  # the engine ends the body: the connection is returned, not closed
    first.close()
    waiter.join(5)
    try:
        assert result == [True]
        stats = engine.pool.stats()
        assert stats.new_connections == 1  # the waiter reused the stream's connection
        assert stats.waits == 1 and stats.wait_timeouts == 0
    finally:
        engine.close()


def test_a_priority_waiter_is_served_before_earlier_waiters(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=1, max_idle=1, wait_timeout=5)
    first = hold(engine, 0.4, lines=1)
    order: list[str] = []
    lock = threading.Lock()

    def wait(name: str, priority: bool) -> None:
        with engine.pool.checkout(priority=priority):
            stream = hold(engine, 0.05, lines=1)
        with lock:
            order.append(name)
        drain(stream)
        stream.close()

    normal = threading.Thread(target=wait, args=("normal", False))
    normal.start()
    wait_waiting(engine, 1)  # the normal caller waits first
    urgent = threading.Thread(target=wait, args=("urgent", True))
    urgent.start()
    wait_waiting(engine, 2)
    drain(first)
    first.close()
    normal.join(5)
    urgent.join(5)
    try:
        assert order == ["urgent", "normal"]
        assert engine.pool.stats().waiting == 0
    finally:
        engine.close()


def test_a_checkout_may_wait_longer_than_the_pool_default(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=1, max_idle=1, wait_timeout=0.2)
    first = hold(engine, 0.6, lines=1)
    pings: list[bool] = []
    result: list[bool] = []

    def patient() -> None:
        with engine.pool.checkout(wait_timeout=3):
            stream = hold(engine, 0.05, lines=1)
        drain(stream)
        stream.close()
        result.append(True)

    def impatient() -> None:
        pings.append(engine.ping())  # False: no connection within the pool's 0.2 s

    threads = [threading.Thread(target=patient), threading.Thread(target=impatient)]
    for thread in threads:
        thread.start()
    threads[1].join(5)  # the impatient caller gave up after the pool's wait_timeout ...
    assert pings == [False]
    assert engine.pool.stats().waiting == 1  # ... the patient one still waits
    drain(first)
    first.close()
    for thread in threads:
        thread.join(5)
    try:
        assert result == [True]
        assert pings == [False]
        assert engine.pool.stats().wait_timeouts == 1
    finally:
        engine.close()


def test_max_idle_closes_the_surplus(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=5, max_idle=1)
    try:
        streams = [hold(engine, 0.05, lines=1) for _ in range(3)]
        for stream in streams:
            drain(stream)
            stream.close()
        stats = engine.pool.stats()
        assert (stats.open, stats.idle) == (1, 1)
        assert stats.closed.get("max_idle") == 2
    finally:
        engine.close()


def test_max_lifetime_and_max_idle_time(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_lifetime=0.2, max_idle_time=0)
    try:
        assert engine.ping()
        time.sleep(0.25)
        assert engine.ping()
        stats = engine.pool.stats()
        assert stats.new_connections == 2
        assert stats.closed.get("max_lifetime") == 1
    finally:
        engine.close()
    engine = make_engine(fake, max_lifetime=0, max_idle_time=0.1)
    try:
        assert engine.ping()
        time.sleep(0.15)
        engine.pool.maintain()
        stats = engine.pool.stats()
        assert (stats.open, stats.idle) == (0, 0)
        assert stats.closed.get("max_idle_time") == 1
    finally:
        engine.close()


def test_health_check_pings_idle_connections(fake: FakeEngine) -> None:
    engine = make_engine(fake, health_check_interval=0.05)
    try:
        assert engine.ping()
        time.sleep(0.1)
        engine.pool.maintain()
        stats = engine.pool.stats()
        assert stats.health_checks == {"ok": 1}
        assert (stats.open, stats.idle) == (1, 1)
        assert fake.requests.count("_ping") == 2
        assert engine.ping()
        assert engine.pool.stats().new_connections == 1  # still the same connection
    finally:
        engine.close()


def test_a_connection_the_engine_closed_is_not_handed_out(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        stream = hold(engine, 0, lines=1)
        drain(stream)
        stream.close()
        assert engine.pool.stats().idle == 1
        fake.stop()  # the engine goes away: idle sockets see EOF (shut down by then)
        restarted = FakeEngine(Path(fake.path + ".2"))
        os.replace(restarted.path, fake.path)
        try:
            assert engine.ping()
            stats = engine.pool.stats()
            assert stats.closed.get("dropped") == 1
            assert stats.new_connections == 2
        finally:
            restarted.stop()
    finally:
        engine.close()


def test_a_broken_request_frees_its_slot(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=1, max_idle=1, wait_timeout=0.5)
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            engine.get(engine.url("/break"))
        stats = engine.pool.stats()
        assert (stats.open, stats.in_use) == (0, 0)
        assert stats.closed.get("broken") == 1
        assert engine.ping()  # the slot is usable again
    finally:
        engine.close()


def test_stream_cut_at_deadline_closes_its_socket_now(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        stream = hold(engine, 30)
        conn = stream._conn
        assert conn is not None and conn.sock is not None
        fd = conn.sock.fileno()
        inode = os.fstat(fd).st_ino
        drain(stream, deadline=time.monotonic() + 0.2)  # the engine would hold it 30 s
        assert stream.end_reason == "deadline"
        stream.close()
        stream.close()  # closing twice is harmless
        assert not _fd_is(fd, inode)  # freed now, not at the next GC
        stats = engine.pool.stats()
        assert (stats.open, stats.in_use) == (0, 0)
        assert stats.closed.get("closed_in_use") == 1
    finally:
        engine.close()


def test_the_kernel_reports_a_unix_socket_readable_below_its_low_water_mark() -> None:
    """What gathered reads stand on (gather.py): poll says readable at the
    first byte whatever SO_RCVLOWAT says (else a quiet stream's line would wait for
    the window's deadline), and a blocking read then returns what came once
    SO_RCVTIMEO passed, or as soon as SO_RCVLOWAT bytes are there."""
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with sender, receiver:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, GATHER_BYTES)
        receiver.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_RCVTIMEO,
            struct.pack("@ll", 0, int(GATHER_DELAY * 1_000_000)),
        )
        poller = select.poll()
        poller.register(receiver.fileno(), select.POLLIN)
        assert poller.poll(0) == []
        sender.sendall(b"x" * 100)
        assert poller.poll(5000) == [(receiver.fileno(), select.POLLIN)]
        assert receiver.recv(65536) == b"x" * 100  # after SO_RCVTIMEO: what came
        for _ in range(GATHER_BYTES // 100 + 1):  # as the engine writes: a message a write
            sender.sendall(b"y" * 100)
        assert len(receiver.recv(65536)) > GATHER_BYTES  # all of it, in one read


def test_raw_reads_of_a_log_body_over_unix_are_gathered_and_the_socket_handed_back(
    fake: FakeEngine,
) -> None:
    engine = make_engine(fake)
    try:
        stream = hold(engine, 0.3, lines=3)
        conn = stream._conn
        assert conn is not None and conn.sock is not None
        sock = conn.sock
        body, gathered = drain_raw(stream, time.monotonic() + 30)
        assert gathered  # the reads after the first (which takes what came with the headers)
        assert body.count(b" line ") == 3
        assert stream.end_reason is None and not stream.gathers
        # The connection went back to the pool as it was handed out: a later request on
        # it must not inherit a low-water mark or a blocking socket.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) == bytes(16)
        assert sock.gettimeout() is not None  # not blocking (the timeout its reads had set)
        stream.close()
        again = hold(engine, 0, lines=2)
        assert again._conn is conn  # reused
        assert drain_raw(again, time.monotonic() + 30)[0].count(b" line ") == 2
        again.close()
        assert engine.pool.stats().new_connections == 1
    finally:
        engine.close()


def test_a_body_that_ended_in_its_first_read_leaves_its_pooled_socket_alone(
    fake: FakeEngine,
) -> None:
    """LogStream reads once more after the body's last chunk. When the whole body came
    in the first read, nothing was gathered yet, and that read must not start gathering
    on the socket, which is back in the pool by then (maybe another request's)."""
    engine = make_engine(fake)
    try:
        for _ in range(20):  # the body usually comes with the headers: one read
            stream = hold(engine, 0, lines=2)
            body, gathered = drain_raw(stream, time.monotonic() + 30)
            assert body.count(b" line ") == 2
            if not gathered:
                break
            stream.close()
        assert not gathered, "every body ended after a gathered read: the case was not reached"
        conn = stream._conn
        assert conn is not None and conn.sock is not None
        assert stream.read_raw(time.monotonic() + 30) == b""  # as LogStream reads on
        assert stream.end_reason == "eof" and not stream.gathers
        assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert conn.sock.gettimeout() is not None
        stream.close()
    finally:
        engine.close()


def test_a_gathered_read_ends_at_its_deadline(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        stream = hold(engine, 30, lines=1)
        body, gathered = drain_raw(stream, time.monotonic() + 0.2)  # the engine: 30 s
        assert gathered and body.count(b" line ") == 1
        assert stream.end_reason == "deadline"
        stream.close()
        assert engine.pool.stats().open == 0
    finally:
        engine.close()


def test_interrupt_wakes_a_gathered_reader_from_another_thread(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        stream = hold(engine, 30, lines=1)
        assert stream.read_raw(None)  # the line; the next read is gathered, and blocks
        timer = threading.Timer(0.2, stream.interrupt)
        timer.start()
        body, gathered = drain_raw(stream)  # no deadline: only the interrupt ends it
        assert body == b""  # nothing more came
        timer.join()
        assert gathered and stream.end_reason == "interrupted"
        stream.close()
        assert engine.pool.stats().open == 0
    finally:
        engine.close()


def test_interrupt_wakes_a_blocked_reader_from_another_thread(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        stream = hold(engine, 30)
        timer = threading.Timer(0.2, stream.interrupt)
        timer.start()
        drain(stream)  # the engine would hold it 30 s
        stream.close()
        assert stream.end_reason == "interrupted"
        assert engine.pool.stats().open == 0
    finally:
        engine.close()


def test_a_stale_interrupt_never_touches_a_reused_connection(fake: FakeEngine) -> None:
    engine = make_engine(fake)
    try:
        old = hold(engine, 0, lines=1)
        drain(old)  # ended cleanly: its connection went back to the pool
        assert old.end_reason == "eof"
        new = hold(engine, 0.3, lines=3)
        assert engine.pool.stats().new_connections == 1  # same connection, new lease
        old.interrupt()  # must not shut the socket the new stream now reads
        data = b""
        while chunk := new.read(time.monotonic() + 5):
            data += chunk
        assert new.end_reason == "eof"
        assert data.count(b"line") == 3
        old.close()
        new.close()
    finally:
        engine.close()


def test_closing_the_pool_fails_waiters_and_new_callers(fake: FakeEngine) -> None:
    engine = make_engine(fake, max_open=1, max_idle=1, wait_timeout=10)
    held = hold(engine, 30)
    errors: list[BaseException] = []

    def wait_for_connection() -> None:
        try:
            raw_ping(engine)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_connection)
    waiter.start()
    wait_waiting(engine, 1)
    engine.pool.close()
    waiter.join(2)
    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], PoolClosedError)
    with pytest.raises(PoolClosedError):
        raw_ping(engine)
    held.interrupt()
    held.close()
    assert engine.pool.stats().open == 0
    engine.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("/v1.41/containers/abc/logs?since=1.5", "stream"),
        ("/v1.41/events?filters=x", "stream"),
        ("/v1.41/containers/abc/json", "api"),
        ("/_ping", "api"),
        ("/v1.41/containers/json?all=1", "api"),
    ],
)
def test_request_kinds(url: str, kind: str) -> None:
    assert request_kind(url) == kind
