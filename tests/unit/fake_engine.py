"""A minimal HTTP/1.1 server on a unix socket, standing in for the engine in pool tests.

It only has to behave like an HTTP server with keep-alive; capture correctness is
tested against the real engine (tests/integration).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path.split("/", 2)[-1] if url.path.startswith("/v1.") else url.path.lstrip("/")
        self.server.requests.append(path)
        if path == "_ping":
            self._send(b"OK")
        elif path == "version":
            self._send(b'{"ApiVersion": "1.41"}', "application/json")
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
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, path: str) -> None:
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self.live: set[socket.socket] = set()
        super().__init__(path, _Handler)

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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.server.requests

    def stop(self) -> None:
        """Stop like a restarting engine: every connection, idle or busy, is dropped."""
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        for conn in list(self.server.live):
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
