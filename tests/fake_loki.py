"""An in-process Loki push endpoint that answers like a real Loki 3.4 (single binary).

The behaviour reproduced is the one recorded in /work/shared/README.md ("Grafana
Loki push API"): JSON bodies, plain or gzip; string timestamps only; ``204`` with an
empty body on success; ``text/plain`` errors; invalid label names reject the whole
request, while per-entry problems (too old, too new, too long, too many labels,
structured metadata disallowed) drop only those entries and still store the rest;
entries too far behind their stream are reported only when they concern the last
stream of the request (Loki's ingester keeps only the last stream's error); exact
duplicates are dropped silently; a decoded body over 4 MB is a ``500``.

Faults can be switched at any time from the test thread: down (listener and every
connection closed: connection refused, then back on the same port), fixed statuses
(500/503/429, with or without ``Retry-After``), delays, dropped connections.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import socket
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PUSH_PATH = "/loki/api/v1/push"
MAX_LINE_BYTES = 262_144
MAX_LABELS = 15
MAX_BODY_BYTES = 4 * 1024 * 1024
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
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
    decoded: bytes | None = None
    status: int | None = None
    response: str = ""
    received_at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        assert self.decoded is not None, "body was not decoded"
        return json.loads(self.decoded)


class _PushError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Fault:
    status: int
    remaining: int | None  # None: until cleared
    body: str
    retry_after: str | None


def labels_text(labels: Labels | Mapping[str, str]) -> str:
    """Loki's spelling of a label set in messages: ``{a="1", b="2"}``."""
    items = sorted(labels.items()) if isinstance(labels, Mapping) else labels
    return "{" + ", ".join(f'{k}="{v}"' for k, v in items) + "}"


def _rfc3339(ts_ns: int) -> str:
    secs, frac = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class FakeLoki:
    """A Loki push endpoint on 127.0.0.1 (ephemeral port) for tests; use as a context manager."""

    def __init__(
        self,
        *,
        require_tenant: bool = False,
        authorization: str | None = None,
        reject_old_max_age: float | None = 7 * 24 * 3600.0,
        creation_grace: float = 600.0,
        out_of_order_window: float = 3600.0,
        allow_structured_metadata: bool = True,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_labels: int = MAX_LABELS,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.require_tenant = require_tenant
        self.authorization = authorization
        self.reject_old_max_age = reject_old_max_age
        self.creation_grace = creation_grace
        self.out_of_order_window = out_of_order_window
        self.allow_structured_metadata = allow_structured_metadata
        self.max_line_bytes = max_line_bytes
        self.max_labels = max_labels
        self.max_body_bytes = max_body_bytes
        self.port = 0
        self.errors: list[BaseException] = []  # exceptions in handler threads
        self._lock = threading.Lock()
        self._streams: dict[Labels, list[Entry]] = {}
        self._seen: dict[Labels, set[tuple[int, str]]] = {}
        self._newest: dict[Labels, int] = {}
        self._requests: list[RawRequest] = []
        self._fault: _Fault | None = None
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
        """Status and text for a push, storing what Loki would store."""
        if self.require_tenant and not headers.get("x-scope-orgid"):
            return 401, "no org id\n"
        try:
            decoded = _decode_body(headers, body)
            request.decoded = decoded
            if len(decoded) > self.max_body_bytes:
                raise _PushError(500, "rpc error: code = ResourceExhausted desc = grpc: received "
                                 f"message larger than max ({len(decoded)} vs. "
                                 f"{self.max_body_bytes})")
            streams = _parse_push(decoded)
            if not streams:
                raise _PushError(422, "no streams in push request")
            return self._ingest(streams)
        except _PushError as exc:
            return exc.status, exc.message + "\n"

    def _ingest(self, streams: list[tuple[Labels, list[Entry]]]) -> tuple[int, str]:
        now = time.time_ns()
        oldest = None
        if self.reject_old_max_age is not None:
            oldest = now - int(self.reject_old_max_age * 1e9)
        newest_ok = now + int(self.creation_grace * 1e9)
        validation: list[str] = []
        append_error: str | None = None
        with self._lock:
            for labels, entries in streams:
                name = labels_text(labels)
                # distributor: per stream, then per entry; invalid ones are dropped
                if len(labels) > self.max_labels:
                    validation.append(f"entry for stream '{name}' has {len(labels)} label "
                                      f"names; limit {self.max_labels}")
                    continue
                valid: list[Entry] = []
                for entry in entries:
                    problem = self._validate(name, entry, oldest, newest_ok)
                    if problem:
                        validation.append(problem)
                    else:
                        valid.append(entry)
                if not valid:
                    continue
                # ingester: the error of each stream overwrites the previous one
                append_error = self._append(labels, name, valid)
        if append_error:
            return 400, append_error + "\n"
        if validation:
            return 400, "\n".join(validation) + "\n"
        return 204, ""

    def _validate(self, name: str, entry: Entry, oldest: int | None, newest_ok: int) -> str:
        if oldest is not None and entry.ts_ns < oldest:
            return (f"entry for stream '{name}' has timestamp too old: {_rfc3339(entry.ts_ns)}, "
                    f"oldest acceptable timestamp is: {_rfc3339(oldest)}")
        if entry.ts_ns > newest_ok:
            return f"entry for stream '{name}' has timestamp too new: {_rfc3339(entry.ts_ns)}"
        size = len(entry.line.encode("utf-8"))
        if self.max_line_bytes and size > self.max_line_bytes:
            return (f"Max entry size '{self.max_line_bytes}' bytes exceeded for stream '{name}' "
                    f"while adding an entry with length '{size}' bytes")
        if entry.metadata and not self.allow_structured_metadata:
            return (f"stream '{name}' includes structured metadata, but this feature is "
                    "disallowed. Please see `limits_config.structured_metadata` or contact "
                    "your Loki administrator to enable it.")
        return ""

    def _append(self, labels: Labels, name: str, entries: list[Entry]) -> str | None:
        stored = self._streams.setdefault(labels, [])
        seen = self._seen.setdefault(labels, set())
        window = int(self.out_of_order_window * 1e9)
        failed: list[str] = []
        for entry in entries:
            key = (entry.ts_ns, entry.line)
            if key in seen:
                continue  # exact duplicate: dropped without a word
            newest = self._newest.get(labels)
            if newest is not None and entry.ts_ns < newest - window:
                failed.append(
                    f"entry with timestamp {_rfc3339(entry.ts_ns)} ignored, reason: 'entry too "
                    f"far behind, entry timestamp is: {_rfc3339(entry.ts_ns)}, oldest "
                    f"acceptable timestamp is: {_rfc3339(newest - window)}',"
                )
                continue
            stored.append(entry)
            seen.add(key)
            if newest is None or entry.ts_ns > newest:
                self._newest[labels] = entry.ts_ns
        if not failed:
            return None
        return "\n".join(failed) + (f"\nuser 'fake', total ignored: {len(failed)} out of "
                                    f"{len(entries)} for stream: {name}")


def _decode_body(headers: Mapping[str, str], body: bytes) -> bytes:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        # Loki decodes anything else as protobuf+snappy, and fails on JSON.
        raise _PushError(400, f"failed to decode protobuf push request (Content-Type "
                         f"{content_type!r}): snappy: corrupt input")
    encoding = headers.get("content-encoding", "").strip().lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise _PushError(400, f"{encoding}: invalid body: {exc}") from exc
    if encoding:
        raise _PushError(415, f"Content-Encoding {encoding!r} not supported")
    return body


def _parse_push(decoded: bytes) -> list[tuple[Labels, list[Entry]]]:
    """The streams of a JSON push; anything malformed rejects the whole request (400)."""
    try:
        doc = json.loads(decoded)
    except ValueError as exc:
        raise _PushError(400, f"loghttp.PushRequest: {exc}") from exc
    streams = doc.get("streams") if isinstance(doc, dict) else None
    if streams is None:
        return []
    if not isinstance(streams, list):
        raise _PushError(400, "loghttp.PushRequest.Streams: expected an array")
    out: list[tuple[Labels, list[Entry]]] = []
    for stream in streams:
        labels_doc = stream.get("stream") if isinstance(stream, dict) else None
        values = stream.get("values") if isinstance(stream, dict) else None
        if not isinstance(labels_doc, dict) or not isinstance(values, list):
            raise _PushError(400, "loghttp.PushRequest.Streams: stream and values expected")
        for name, value in labels_doc.items():
            if not _LABEL_NAME.match(name) or not isinstance(value, str):
                raise _PushError(400, f"error parsing labels {labels_text(labels_doc)}: "
                                 f"1:2: parse error: invalid label name {name!r}")
        if not labels_doc:
            raise _PushError(400, "error at least one label pair is required per stream")
        labels: Labels = tuple(sorted(labels_doc.items()))
        out.append((labels, [_parse_value(v) for v in values]))
    return out


def _parse_value(value: Any) -> Entry:
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise _PushError(400, "loghttp.Entry: expected [timestamp, line] or "
                         "[timestamp, line, metadata]")
    ts, line = value[0], value[1]
    if not isinstance(ts, str):
        raise _PushError(400, f"loghttp.Entry: timestamp must be a string, got {ts!r}")
    try:
        ts_ns = int(ts)
    except ValueError as exc:
        raise _PushError(400, f"loghttp.Entry: invalid timestamp {ts!r}") from exc
    if not isinstance(line, str):
        raise _PushError(400, "loghttp.Entry: line must be a string")
    metadata = None
    if len(value) == 3:
        metadata = value[2]
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise _PushError(400, "loghttp.Entry: structured metadata must map strings to "
                             "strings")
    return Entry(ts_ns, line, metadata or None)


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
