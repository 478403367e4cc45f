"""A minimal HTTP/1.1 server on a unix socket, standing in for the engine in unit tests.

For the pool it only has to behave like an HTTP server with keep-alive. For discovery
it also keeps containers (``add_container``) and an event buffer (``emit``), and
answers ``/info``, ``/containers/json``, ``/containers/{id}/json`` and ``/events`` with
the engine's shapes and filter rules (label: all must hold; name: regular expressions on
the name with or without its ``/``; ``since`` inclusive). Capture correctness and the
real engine's filter semantics are tested against the real engine (tests/integration).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import select
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

NODE_NAME = "fake-node"
"""The engine's ``Name`` in ``/info`` (not this machine's hostname)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.split("/", 2)[-1] if url.path.startswith("/v1.") else url.path.lstrip("/")
        self.server.requests.append(path)
        self.server.queries.append((path, query))
        if path == "containers/json":
            self._send_json(200, self.server.list_containers(query))
        elif path.startswith("containers/") and path.endswith("/json"):
            cid = path.split("/")[1]
            barrier = self.server.inspect_barrier
            if barrier is not None:
                barrier.wait(10)
            found = self.server.containers.get(cid)
            if found is None:
                self._send_json(404, {"message": f"No such container: {cid}"})
            else:
                self._send_json(200, found)
        elif path == "events":
            self._events(query)
        elif path == "_ping":
            self._send(b"OK")
        elif path == "version":
            self._send(b'{"ApiVersion": "1.41"}', "application/json")
        elif path == "info":
            self._send_json(*self.server.info)
        elif path == "break":
            self.connection.shutdown(socket.SHUT_RDWR)  # no response at all
            self.close_connection = True
        elif path.endswith("/logs") or path == "hold":
            self._stream(float(query.get("seconds", "0")), int(query.get("lines", "0")))
        else:
            self.send_error(404)

    def _send(self, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self, query: dict[str, str]) -> None:
        """The engine's buffered events from ``since`` on, then new ones as they come,
        until ``FakeEngine.end_event_streams`` (EOF), the client leaves, or the stop."""
        server = self.server
        if server.events_down:
            self._send_json(503, {"message": "engine restarting"})
            return
        secs, _, frac = query.get("since", "0").partition(".")
        since_ns = int(secs) * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])
        filters = json.loads(query.get("filters", "{}"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        sent = 0
        generation = server.event_generation
        try:
            while True:
                with server.changed:
                    server.changed.wait(0.05)
                    batch = server.events[sent:]
                    sent = len(server.events)
                    ended = server.stopping.is_set() or server.event_generation != generation
                for event in batch:
                    if event["timeNano"] >= since_ns and _event_matches(event, filters):
                        data = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if ended:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return
                if _peer_closed(self.connection):
                    self.close_connection = True
                    return
        except OSError:
            self.close_connection = True

    def _stream(self, seconds: float, lines: int) -> None:
        """Chunked body: ``lines`` frames, then silence for ``seconds``, then the end."""
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(lines):
                payload = b"2026-11-23T12:00:00.000000000Z line %d\n" % i
                data = b"\x01\x00\x00\x00" + len(payload).to_bytes(4, "big") + payload
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self.server.stopping.is_set():
                if _peer_closed(self.connection):  # the client left: so does the engine
                    self.close_connection = True
                    return
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _peer_closed(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _labels_match(filters: dict[str, list[str]], labels: dict[str, str]) -> bool:
    for wanted in filters.get("label", []):
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _event_matches(event: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    if "type" in filters and event["Type"] not in filters["type"]:
        return False
    if "event" in filters and event["Action"] not in filters["event"]:
        return False
    return _labels_match(filters, event["Actor"]["Attributes"])


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str) -> None:
        self.requests: list[str] = []
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.stopping = threading.Event()
        self.live: set[socket.socket] = set()
        self.containers: dict[str, dict[str, Any]] = {}  # id -> inspect
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.event_generation = 0  # bumped to end every open /events stream
        self.events_down = False
        self.inspect_barrier: threading.Barrier | None = None
        self.info: tuple[int, Any] = (200, {"Name": NODE_NAME, "Swarm": {"NodeID": ""}})
        super().__init__(path, _Handler)

    def list_containers(self, query: dict[str, str]) -> list[dict[str, Any]]:
        filters = json.loads(query.get("filters", "{}"))
        out = []
        for data in list(self.containers.values()):
            name = data["Name"]
            labels = data["Config"]["Labels"]
            names = filters.get("name", [])
            if names and not any(
                re.search(p, name) or re.search(p, name.lstrip("/")) for p in names
            ):
                continue
            if not _labels_match(filters, labels):
                continue
            if query.get("all") not in ("1", "true") and not data["State"]["Running"]:
                continue
            out.append(
                {
                    "Id": data["Id"],
                    "Names": [name],
                    "Image": data["ListedImage"],
                    "ImageID": data["Image"],
                    "Labels": labels,
                    "State": data["State"]["Status"],
                }
            )
        return out

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _ = self.socket.accept()
        self.live.add(conn)
        return conn, ("fake", 0)

    def shutdown_request(self, request: Any) -> None:
        self.live.discard(request)
        super().shutdown_request(request)


class FakeEngine:
    """Owns the server thread; ``drop_connections`` simulates an engine restart."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.server = _Server(self.path)
        self._made = 0
        self._removed: dict[str, dict[str, Any]] = {}  # id -> inspect, for a destroy event
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    @property
    def queries(self) -> list[tuple[str, dict[str, str]]]:
        """(path without the version, query) of every request, in order."""
        return self.server.queries

    def inspects(self, container_id: str) -> int:
        return self.requests.count(f"containers/{container_id}/json")

    def add_container(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        image: str = "app:1",
        image_untagged: bool = False,
        running: bool = True,
        started_at: str = "2026-01-01T00:00:00.000000000Z",
    ) -> str:
        """A container; ``image_untagged``: its image name no longer points to its image, so
        the listing shows the image id (as the engine does)."""
        self._made += 1
        cid = hashlib.sha256(b"container %d" % self._made).hexdigest()
        image_id = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
        self.server.containers[cid] = {
            "Id": cid,
            "Name": "/" + name,
            "Image": image_id,
            "ListedImage": image_id if image_untagged else image,
            "Config": {"Image": image, "Labels": dict(labels or {}), "Tty": False},
            "State": {
                "Running": running,
                "Status": "running" if running else "exited",
                "StartedAt": started_at,
            },
        }
        return cid

    def answer_inspects_together(self, count: int) -> None:
        """Hold every inspect until ``count`` of them wait, then answer them all at once
        (callers that race each other); 0 answers at once again."""
        self.server.inspect_barrier = threading.Barrier(count) if count else None

    def rename(self, container_id: str, name: str) -> None:
        self.server.containers[container_id]["Name"] = "/" + name

    def set_state(self, container_id: str, running: bool, started_at: str | None = None) -> None:
        """The container stopped (``running`` False) or (re)started at ``started_at``."""
        state = self.server.containers[container_id]["State"]
        state["Running"] = running
        state["Status"] = "running" if running else "exited"
        if started_at is not None:
            state["StartedAt"] = started_at

    def remove(self, container_id: str) -> None:
        """The engine no longer has the container (404 on inspect, not listed)."""
        self._removed[container_id] = self.server.containers.pop(container_id)

    def emit(self, action: str, container_id: str, time_ns: int | None = None) -> int:
        """Record a container event (streamed to open /events readers); its timeNano."""
        data = self.server.containers.get(container_id) or self._removed[container_id]
        attributes = {**data["Config"]["Labels"], "image": data["Config"]["Image"]}
        attributes["name"] = data["Name"].lstrip("/")
        ts = time_ns if time_ns is not None else time.time_ns()
        event = {
            "Type": "container",
            "Action": action,
            "status": action,
            "id": container_id,
            "Actor": {"ID": container_id, "Attributes": attributes},
            "time": ts // 1_000_000_000,
            "timeNano": ts,
        }
        with self.server.changed:
            self.server.events.append(event)
            self.server.changed.notify_all()
        return ts

    def end_event_streams(self, down: bool = False) -> None:
        """End every open /events body (EOF, as a stopping engine does); ``down``: and
        answer new ones 503 until ``events_up``."""
        with self.server.changed:
            self.server.events_down = down
            self.server.event_generation += 1
            self.server.changed.notify_all()

    def events_up(self) -> None:
        self.server.events_down = False

    def stop(self) -> None:
        """Stop like a restarting engine: every connection, idle or busy, is dropped."""
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self.server.live):
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
