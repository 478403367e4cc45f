"""Incremental decoding of an HTTP/1.1 chunked body.

The engine writes every log message as its own HTTP chunk, and ``http.client`` hands
a chunked body over one chunk per call, a Python call chain per log line before any
work is done (benchmarks/README.md, "Figures behind choices in the code"). Decoding the
framing here lets one socket read yield everything that arrived.
"""

from __future__ import annotations


class ChunkedBodyError(Exception):
    """The body did not follow the chunked encoding."""


class ChunkedDecoder:
    """Feed raw bytes, get the body bytes; ``done`` once the last chunk and trailers passed."""

    __slots__ = ("_buf", "_left", "_state", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._left = 0
        self._state = "size"  # size -> data -> crlf -> size ... -> trailer
        self.done = False

    @property
    def at_chunk_start(self) -> bool:
        """Nothing buffered and the next byte starts a chunk (the bulk decoder may take over)."""
        return self._state == "size" and not self._buf and not self.done

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        pos = 0
        try:
            while not self.done:
                if self._state == "data":
                    take = min(self._left, len(buf) - pos)
                    if take == 0:
                        break
                    out += buf[pos : pos + take]
                    pos += take
                    self._left -= take
                    if self._left == 0:
                        self._state = "crlf"
                elif self._state == "crlf":
                    if len(buf) - pos < 2:
                        break
                    if buf[pos : pos + 2] != b"\r\n":
                        raise ChunkedBodyError("missing CRLF after chunk data")
                    pos += 2
                    self._state = "size"
                else:  # "size" or "trailer": one line at a time
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        if len(buf) - pos > 4096:
                            raise ChunkedBodyError("chunk header line too long")
                        break
                    line = bytes(buf[pos:end])
                    pos = end + 2
                    if self._state == "trailer":
                        if not line:
                            self.done = True
                        continue
                    try:
                        size = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError as exc:
                        raise ChunkedBodyError(f"bad chunk size line {line[:40]!r}") from exc
                    if size == 0:
                        self._state = "trailer"
                    else:
                        self._left = size
                        self._state = "data"
        finally:
            del buf[:pos]
        return bytes(out)
