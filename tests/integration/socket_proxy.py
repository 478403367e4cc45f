"""A unix-socket proxy in front of the engine, for faults the real engine does not make on
demand.

* :meth:`EngineProxy.down` / :meth:`EngineProxy.up`: down = every connection reset and
  new ones refused, as while the engine restarts; the containers keep running and
  logging meanwhile, so a test can check nothing is lost.
* ``hold``: a :class:`HoldPastUntil` delays chosen requests before the engine sees them,
  as a request that waited long for a pooled connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path


class HoldPastUntil:
    """Holds the first ``limit`` log requests that carry both ``tail`` and ``until`` until
    ``margin`` seconds after their ``until``: the engine then takes the tail with
    ``until`` already passed, as for a reopen that waited past it for a connection."""

    def __init__(self, limit: int, margin: float) -> None:
        self.limit = limit
        self.margin = margin
        self.held = 0
        self._lock = threading.Lock()

    def release_at(self, target: str) -> float | None:
        """The ``time.time()`` at which to forward a request for ``target`` (the request
        line's path and query), or None to forward it now."""
        url = urllib.parse.urlsplit(target)
        if not url.path.endswith("/logs"):
            return None
        query = urllib.parse.parse_qs(url.query)
        if "tail" not in query or "until" not in query:
            return None
        with self._lock:
            if self.held >= self.limit:
                return None
            self.held += 1
        return float(query["until"][0]) + self.margin


class EngineProxy:
    def __init__(
        self,
        path: Path,
        target: str = "/var/run/docker.sock",
        hold: HoldPastUntil | None = None,
    ) -> None:
        self.path = str(path)
        self.target = target
        self.hold = hold
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.target)
            with self._lock:
                self._conns.update((client, upstream))
            done = threading.Barrier(2, action=lambda c=client, u=upstream: self._close(c, u))
            threading.Thread(
                target=self._requests, args=(client, upstream, done), daemon=True
            ).start()
            threading.Thread(
                target=self._responses, args=(upstream, client, done), daemon=True
            ).start()

    def _close(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._conns.discard(client)
            self._conns.discard(upstream)
        client.close()
        upstream.close()

    def _live(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._conns

    def _requests(
        self, client: socket.socket, upstream: socket.socket, done: threading.Barrier
    ) -> None:
        """Client to engine, one HTTP request at a time (the daemon does not pipeline), so
        a request can be held before the engine sees it."""
        buf = b""
        try:
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                head = buf[: end + 4]
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < end + 4 + length:
                    data = client.recv(65536)
                    if not data:
                        return
                    buf += data
                request, buf = buf[: end + 4 + length], buf[end + 4 + length :]
                if self.hold is not None:
                    target = head.split(b" ", 2)[1].decode()
                    release = self.hold.release_at(target)
                    while release is not None and time.time() < release and self._live(client):
                        time.sleep(0.01)
                upstream.sendall(request)
        except OSError:
            return  # reset by down(), or closed
        finally:
            with contextlib.suppress(OSError):  # the client went: so does its engine side
                upstream.shutdown(socket.SHUT_RDWR)
            done.wait()

    def _responses(
        self, upstream: socket.socket, client: socket.socket, done: threading.Barrier
    ) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            done.wait()
