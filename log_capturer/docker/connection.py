"""One HTTP connection to the engine's unix socket, with the bookkeeping the pool needs."""

from __future__ import annotations

import socket
import threading
import time

import urllib3.connection


class DockerSocketConnection(urllib3.connection.HTTPConnection):
    """An HTTP/1.1 connection over ``AF_UNIX``.

    ``lease`` changes every time the connection is checked out or returned, under
    ``lease_lock``: a holder that remembers its lease can interrupt the socket from
    another thread without ever touching a connection that was already handed to
    someone else.
    """

    def __init__(self, socket_path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path
        self.created_at = time.monotonic()
        self.idle_since = self.created_at
        self.checked_at = self.created_at
        self.lease = 0
        self.lease_lock = threading.Lock()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def new_lease(self) -> int:
        with self.lease_lock:
            self.lease += 1
            return self.lease

    def shutdown_if_leased(self, lease: int) -> bool:
        """Shut the socket down (waking a blocked reader) only if ``lease`` is still current."""
        with self.lease_lock:
            if self.lease != lease or self.sock is None:
                return False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                return False
            return True
