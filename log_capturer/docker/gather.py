"""Reads of a log body gathered by the kernel, over a unix socket, instead of a nap in Python.

The engine writes each log message with a write of its own, and a socket holds only about
200 of them before the engine's next write blocks (the send buffer counts each message's
whole kernel buffer: ``net.core.wmem_default``). A reader that returns for every few
messages pays tens of microseconds of Python a read; one that naps to let more arrive
(``COALESCE_*`` in stream.py, still used over TCP and TLS) stalls the engine whenever the
nap outlasts those 200 messages: a profile of a 1 M-line backlog found the monitor 29 %
of its time in that nap.

Here the kernel does the waiting: the socket blocks, with ``SO_RCVLOWAT`` =
``GATHER_BYTES`` and ``SO_RCVTIMEO`` = ``GATHER_DELAY``, so a read returns as soon as
``GATHER_BYTES`` have arrived, or ``GATHER_DELAY`` after it began, with all there is. A
``poll`` before each read keeps the window's deadline: Linux reports a unix socket readable
at its first byte whatever the low-water mark (``tests/unit/test_pool.py`` checks this of
the kernel it runs on; were it otherwise a quiet stream's line would wait for the window's
end). ``GATHER_BYTES`` stays below what the engine's socket holds: 200 messages are at
least 9 KiB even of empty lines (46 bytes each on the wire). Measured on a 1 M-line
backlog (benchmarks/README.md, "Reads gathered by the kernel"): 0.77x of ``docker logs``
at 3.16 CPU-µs a line, against 0.72x at 3.23 with the nap.
"""

from __future__ import annotations

import math
import select
import socket
import ssl
import struct
import time

GATHER_BYTES = 8 * 1024
GATHER_DELAY = 0.002  # seconds: the longest a read waits for GATHER_BYTES once it began
_DELAY = struct.pack("@ll", 0, int(GATHER_DELAY * 1_000_000))  # struct timeval
_NO_DELAY = struct.pack("@ll", 0, 0)


def can_gather(sock: socket.socket) -> bool:
    """A plain unix socket (TCP's poll honours the low-water mark, TLS reads records)."""
    return sock.family == socket.AF_UNIX and not isinstance(sock, ssl.SSLSocket)


class GatheredSocket:
    """A unix socket whose reads the kernel gathers, from construction to :meth:`restore`.

    Only its reader uses it. Meanwhile the socket blocks: call :meth:`wait_readable`
    before each read. :meth:`restore` sets it back (no low-water mark, no receive
    timeout, its former Python timeout) before its connection may serve another request.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._timeout = sock.gettimeout()
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _DELAY)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, GATHER_BYTES)
        sock.settimeout(None)

    def wait_readable(self, deadline: float | None) -> None:
        """Until the socket holds a byte, or its end; TimeoutError at ``deadline``
        (monotonic; None: no deadline)."""
        timeout = -1
        if deadline is not None:
            timeout = max(0, math.ceil((deadline - time.monotonic()) * 1000))
        if not self._poll.poll(timeout):
            raise TimeoutError

    def restore(self) -> bool:
        """Set the socket back; False if it could not be (then it must not be reused)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_DELAY)
            self.sock.settimeout(self._timeout)
        except OSError:
            return False
        return True
