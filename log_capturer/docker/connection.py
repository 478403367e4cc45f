"""One HTTP connection to the engine (unix socket, TCP or TLS), with the bookkeeping the
pool needs."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import urllib3.connection

from .endpoint import Endpoint, TlsContext


class DockerSocketConnection(urllib3.connection.HTTPConnection):
    """An HTTP/1.1 connection to the engine: ``AF_UNIX``, or TCP, with TLS if configured.

    ``lease`` changes every time the connection is checked out or returned, under
    ``lease_lock``: a holder that remembers its lease can interrupt the socket from
    another thread without ever touching a connection that was already handed to
    someone else. An interrupt that comes before the socket exists (the request not
    sent yet) is remembered for that lease, and :meth:`connect` shuts the new socket
    down at once.

    Over TLS the socket is an ``ssl.SSLSocket``, and :meth:`shutdown_if_leased` shuts
    down the TCP socket under it with ``socket.socket.shutdown``, never
    ``SSLSocket.shutdown``: that one drops the socket's SSL object, and the reader's
    next read would then take the encrypted bytes still in the kernel's buffer as
    plain body bytes. So the SSL object is only ever used by the thread that reads: it
    decrypts what had arrived, then sees the end (an EOF or an ``SSLError``), which the
    reader takes for the cut it asked for. No close-notify is sent from another thread.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        timeout: float | None,
        tls: TlsContext | None = None,
    ) -> None:
        super().__init__(endpoint.host, endpoint.port or None, timeout=timeout)
        self.endpoint = endpoint
        self.socket_path = endpoint.path
        self.tls = tls
        self.created_at = time.monotonic()
        self.idle_since = self.created_at
        self.checked_at = self.created_at
        self.lease = 0
        self.lease_lock = threading.Lock()
        self._cut_lease = -1  # a lease interrupted before its socket existed

    def connect(self) -> None:
        if self.endpoint.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.endpoint.host, self.endpoint.port), self.timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None:
                    # The handshake runs here, under the connect timeout; a refused
                    # certificate either way raises ssl.SSLError (the pool names it).
                    sock = self.tls.get().wrap_socket(sock, server_hostname=self.endpoint.host)
            except BaseException:
                sock.close()
                raise
        with self.lease_lock:
            self.sock = sock
            if self._cut_lease == self.lease:
                # Not connected any more (OSError): the request fails all the same.
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def new_lease(self) -> int:
        with self.lease_lock:
            self.lease += 1
            return self.lease

    def shutdown_if_leased(self, lease: int) -> bool:
        """Shut the socket down (waking a blocked reader) only if ``lease`` is still current."""
        with self.lease_lock:
            if self.lease != lease:
                return False
            if self.sock is None:
                self._cut_lease = lease  # connect() shuts it down as soon as it exists
                return True
            try:
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # see the class docstring
            except OSError:
                return False
            return True
