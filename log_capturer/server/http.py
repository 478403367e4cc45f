"""``/metrics`` (Prometheus text format), ``/health`` and ``/ready`` on ``server.listen``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import Field, field_validator

from ..config.types import Section

_log = structlog.get_logger(__name__)

Probe = Callable[[], tuple[bool, dict[str, Any]]]


class ServerConfig(Section):
    listen: str = Field("127.0.0.1:8001", description="host:port for /metrics, /health, /ready.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port, got {value!r}")
        return value


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class StatusServer:
    """Owns the HTTP server and its thread; requests are served on short-lived threads."""

    def __init__(
        self, listen: str, health: Probe, ready: Probe, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.listen = listen
        self._registry = registry
        self._health = health
        self._ready = ready
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        host, port = split_listen(self.listen)
        probes = {"/health": self._health, "/ready": self._ready}
        registry = self._registry

        def respond(path: str) -> tuple[int, str, bytes]:
            if path == "/metrics":
                return 200, CONTENT_TYPE_LATEST, generate_latest(registry)
            if path in probes:
                ok, detail = probes[path]()
                body = json.dumps({"status": "ok" if ok else "fail", **detail}).encode()
                return (200 if ok else 503), "application/json", body
            return 404, "text/plain", b"not found\n"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    status, content_type, body = respond(path)
                except Exception as exc:
                    # A failing probe or collector is a bug to see, not a dropped connection.
                    _log.exception("http_handler_failed", path=path)
                    status, content_type = 500, "text/plain"
                    body = f"internal error: {exc!r}\n".encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except ConnectionError as exc:  # the client hung up: its loss, not ours
                    _log.debug("http_client_gone", path=path, error=repr(exc))
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would flood the log

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="http-server", daemon=True
        )
        self._thread.start()
        _log.info("http_server_listening", address=f"{host}:{self.port}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
