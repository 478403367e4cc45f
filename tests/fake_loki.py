"""A Loki push endpoint for the faults the real Loki cannot be made to produce on demand.

Everything Loki itself decides (which entries it stores, its 400s, limits, tenants,
structured metadata) is tested against the real Loki v3.4.6 (log_capturer_testkit/loki.py). This
fake only stores what it is sent (protobuf + snappy or JSON, plain or gzip; exact
duplicates dropped, as Loki does) and answers with faults switched from the test thread:
fixed statuses in sequence (429 without ``Retry-After`` as Loki sends it, 500, 503, or a
``Retry-After``), delays, dropped connections (before or after storing), down (listener
and every connection closed) and up again on the same port, a required
``Authorization``, and :meth:`FakeLoki.refuse`: a 400 in a format this Loki version does
not write, for entries chosen by a predicate (the others are stored, as Loki does).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from log_capturer.sinks.loki.push import decode_protobuf

PUSH_PATH = "/loki/api/v1/push"
_RATE_LIMITED = (
    "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting "
    "to ingest '1' lines totaling '100' bytes, reduce log volume or contact your Loki "
    "administrator to see if the limit can be increased"
)

Labels = tuple[tuple[str, str], ...]
"""A stream's label set, sorted by name."""


@dataclass
class Entry:
    ts_ns: int
    line: str
    metadata: dict[str, str] | None = None


@dataclass
class RawRequest:
    """One request as received, and what the fake answered (status None: dropped)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    streams: list[tuple[Labels, list[Entry]]] | None = None
    status: int | None = None
    response: str = ""
    received_at: float = field(default_factory=time.monotonic)

    def entries(self) -> list[tuple[Labels, Entry]]:
        assert self.streams is not None, "body was not decoded"
        return [(labels, entry) for labels, entries in self.streams for entry in entries]


@dataclass
class _Fault:
    status: int
    remaining: int | None  # None: until cleared
    body: str
    retry_after: str | None


class FakeLoki:
    """A Loki push endpoint on 127.0.0.1 (ephemeral port) with faults; a context manager."""

    def __init__(self, *, authorization: str | None = None) -> None:
        self.authorization = authorization
        self.port = 0
        self.errors: list[BaseException] = []  # exceptions in handler threads
        self._lock = threading.Lock()
        self._streams: dict[Labels, list[Entry]] = {}
        self._seen: dict[Labels, set[tuple[int, str]]] = {}
        self._requests: list[RawRequest] = []
        self._fault: _Fault | None = None
        self._refuse: tuple[Callable[[Labels, Entry], bool], str] | None = None
        self._delay = 0.0
        self._drop: tuple[int | None, bool] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeLoki:
        self._listen()
        return self

    def stop(self) -> None:
        self._close_server()

    def __enter__(self) -> FakeLoki:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def go_down(self) -> None:
        """Close the listener and every open connection: clients get connection refused."""
        self._close_server()

    def come_up(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            self._listen()

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler, self)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fake-loki-{self.port}", daemon=True)
        thread.start()
        self._server, self._thread = server, thread

    def _close_server(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.down.set()  # wakes delayed handlers
        server.shutdown()  # serve_forever returns: no new connections are accepted
        server.drop_connections()  # like a dead process: every connection is reset
        server.server_close()  # closes the listener and joins the handler threads
        thread.join(5)

    # -- faults ----------------------------------------------------------------------

    def fail(self, status: int, times: int | None = None, body: str | None = None,
             retry_after: str | None = None) -> None:
        """Answer the next ``times`` pushes (None: all, until cleared) with ``status``."""
        text = body if body is not None else (
            _RATE_LIMITED if status == 429 else f"fake loki: injected {status}"
        )
        with self._lock:
            self._fault = _Fault(status, times, text, retry_after)

    def rate_limit(self, times: int | None = None, retry_after: str | None = None) -> None:
        """429 like Loki's rate limiter: by default without ``Retry-After``, as Loki does."""
        self.fail(429, times, retry_after=retry_after)

    def refuse(self, predicate: Callable[[Labels, Entry], bool], text: str) -> None:
        """Refuse the entries ``predicate`` picks with a 400 saying ``text`` (a format the
        sink cannot match), storing the others: a per-entry error of a future Loki."""
        with self._lock:
            self._refuse = (predicate, text)

    def delay(self, seconds: float) -> None:
        """Wait this long before processing each push (0: no delay)."""
        with self._lock:
            self._delay = seconds

    def drop_connections(self, times: int | None = None, after_ingest: bool = False) -> None:
        """Read the request, then close the connection without a response.

        ``after_ingest``: store the entries first (the response is what gets lost).
        """
        with self._lock:
            self._drop = (times, after_ingest)

    def clear_faults(self) -> None:
        with self._lock:
            self._fault = None
            self._refuse = None
            self._delay = 0.0
            self._drop = None

    # -- queries ---------------------------------------------------------------------

    @property
    def requests(self) -> list[RawRequest]:
        with self._lock:
            return list(self._requests)

    def pushes(self) -> list[RawRequest]:
        """The push requests that got a response (any status), in arrival order."""
        return [r for r in self.requests if r.path == PUSH_PATH and r.status is not None]

    def streams(self) -> dict[Labels, list[Entry]]:
        """Stored entries per stream, in the order they were stored."""
        with self._lock:
            return {labels: list(entries) for labels, entries in self._streams.items()}

    def entries(self, **match: str) -> list[Entry]:
        """Entries of every stream whose labels include ``match``, stream by stream."""
        out: list[Entry] = []
        for labels, entries in self.streams().items():
            if all((k, v) in labels for k, v in match.items()):
                out.extend(entries)
        return out

    def lines(self, **match: str) -> list[str]:
        return [e.line for e in self.entries(**match)]

    def count(self) -> int:
        with self._lock:
            return sum(len(e) for e in self._streams.values())

    def wait_for_count(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count:
                return True
            time.sleep(0.01)
        return self.count() >= count

    # -- the push contract -----------------------------------------------------------

    def _take_fault(self) -> tuple[float, tuple[bool, bool] | None, _Fault | None]:
        """(delay, (drop, after_ingest) or None, fault) for one request, consuming counts."""
        with self._lock:
            drop = None
            if self._drop is not None:
                times, after_ingest = self._drop
                drop = (True, after_ingest)
                if times is not None:
                    self._drop = (times - 1, after_ingest) if times > 1 else None
            fault = self._fault
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
            return self._delay, drop, fault

    def _record(self, request: RawRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def handle_push(self, headers: Mapping[str, str], body: bytes,
                    request: RawRequest) -> tuple[int, str]:
        """Status and text for a push, storing what it holds."""
        if self.authorization is not None and headers.get("authorization") != self.authorization:
            return 401, "unauthorized\n"
        try:
            streams = decode_push(headers, body)
        except ValueError as exc:
            return 400, f"{exc}\n"
        request.streams = streams
        refused = 0
        with self._lock:
            refuse = self._refuse
            for labels, entries in streams:
                stored = self._streams.setdefault(labels, [])
                seen = self._seen.setdefault(labels, set())
                for entry in entries:
                    if refuse is not None and refuse[0](labels, entry):
                        refused += 1
                        continue
                    key = (entry.ts_ns, entry.line)
                    if key not in seen:  # exact duplicates are dropped without a word
                        stored.append(entry)
                        seen.add(key)
        if refused and refuse is not None:
            return 400, refuse[1] + "\n"
        return 204, ""


def decode_push(headers: Mapping[str, str], body: bytes) -> list[tuple[Labels, list[Entry]]]:
    """The streams of a push, decoded as Loki would (ValueError if it cannot)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if headers.get("content-encoding", "").strip().lower() == "gzip":
        body = gzip.decompress(body)
    if content_type == "application/json":
        doc = json.loads(body)
        return [
            (
                tuple(sorted(stream["stream"].items())),
                [Entry(int(v[0]), v[1], v[2] if len(v) > 2 else None) for v in stream["values"]],
            )
            for stream in doc["streams"]
        ]
    decoded = decode_protobuf(body)
    out = []
    for index, labels in enumerate(decoded.labels):
        positions = [i for i, s in enumerate(decoded.stream_of) if s == index]
        out.append((
            tuple(sorted(labels.items())),
            [Entry(decoded.ts_ns[i], decoded.lines[i].decode(), dict(decoded.meta[i]) or None)
             for i in positions],
        ))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 fake: FakeLoki) -> None:
        self.fake = fake
        self.down = threading.Event()
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def drop_connections(self) -> None:
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):  # already closed by the peer
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):  # resets are expected here
            self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection is closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the connection was dropped on purpose
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read fake.requests instead."""

    def do_GET(self) -> None:
        if self.path == "/ready":
            self._respond(200, "ready\n")
        else:
            self._respond(404, "404 page not found\n")

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = RawRequest("POST", self.path, headers, body)
        fake._record(request)
        if self.path != PUSH_PATH:
            self._answer(request, 404, "404 page not found\n")
            return
        delay, drop, fault = fake._take_fault()
        if delay and self.server.down.wait(delay):
            return  # went down while waiting
        if drop is not None:
            if drop[1]:
                fake.handle_push(headers, body, request)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._answer(request, fault.status, fault.body + "\n", extra)
            return
        status, text = fake.handle_push(headers, body, request)
        self._answer(request, status, text)

    def _answer(self, request: RawRequest, status: int, text: str,
                extra: Mapping[str, str] | None = None) -> None:
        request.status, request.response = status, text
        self._respond(status, text, extra)

    def _respond(self, status: int, text: str, extra: Mapping[str, str] | None = None) -> None:
        data = text.encode()
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if status != 204:
            self.wfile.write(data)
