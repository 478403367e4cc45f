"""A TCP proxy on 127.0.0.1 in front of a real server, to take it away and bring it back.

``down()`` closes the listener and resets every open connection (clients see connection
refused, as when the server's process is gone); ``up()`` listens again on the same port.
``delay(seconds)`` holds each request's first bytes that long (a slow server);
``hold()`` keeps every response from the client until ``release()``, and ``in_flight()``
counts the connections whose request has had no response yet: a test can kill a client
while it is sure a push is in flight. The real server behind it keeps running, so a test
can take "Loki" down without restarting it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.connections = 0
        self._delay = 0.0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._awaiting: dict[int, bool] = {}  # connection -> request sent, no response yet
        self._released = threading.Event()
        self._released.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    def hold(self) -> None:
        """Keep responses from the clients until :meth:`release` (or :meth:`down`)."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def in_flight(self) -> int:
        """Connections whose last request has not had (the start of) a response."""
        with self._lock:
            return sum(self._awaiting.values())

    def up(self) -> TcpProxy:
        if self._listener is not None:
            return self
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accepter = threading.Thread(target=self._accept, args=(listener,),
                                          name=f"tcp-proxy-{self.port}", daemon=True)
        self._accepter.start()
        return self

    def down(self) -> None:
        """Stop listening and reset every connection; joins the proxy's threads."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._released.set()
        if self._accepter is not None:
            self._accepter.join(5)
        listener.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
            threads, self._threads = list(self._threads), []
        for sock in sockets:  # RST, like a process that died
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
        for sock in sockets:
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            conn = self.connections
            with self._lock:
                self._sockets.update((client, server))
                self._awaiting[conn] = False
                for src, dst, slow in ((client, server, True), (server, client, False)):
                    thread = threading.Thread(target=self._pipe, args=(src, dst, slow, conn),
                                              daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool, conn: int) -> None:
        """``slow``: client -> server (requests); else server -> client (responses)."""
        src.settimeout(None)
        fresh = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if slow:
                    with self._lock:
                        self._awaiting[conn] = True
                    if fresh and self._delay:
                        time.sleep(self._delay)
                else:
                    self._released.wait()
                fresh = len(data) == 65536  # the next recv is likely the same request
                dst.sendall(data)
                if not slow:
                    with self._lock:
                        self._awaiting[conn] = False
        except OSError:
            pass
        finally:
            with self._lock:
                self._awaiting[conn] = False
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
