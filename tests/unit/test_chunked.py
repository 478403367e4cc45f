"""HTTP/1.1 chunked decoding at any read boundary."""

from __future__ import annotations

import random

import pytest

from log_capturer.docker.chunked import ChunkedBodyError, ChunkedDecoder


def encode(chunks: list[bytes], trailers: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return body + b"0\r\n" + trailers + b"\r\n"


@pytest.mark.parametrize("seed", range(20))
def test_decodes_at_random_read_boundaries(seed: int) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(rng.randint(1, 3000)) for _ in range(50)]
    wire = encode(chunks, b"X-Trailer: 1\r\n" if seed % 2 else b"")
    decoder = ChunkedDecoder()
    out = b""
    pos = 0
    while pos < len(wire):
        step = rng.randint(1, 700)
        out += decoder.feed(wire[pos : pos + step])
        pos += step
    assert out == b"".join(chunks)
    assert decoder.done


def test_not_done_until_the_trailer_ends_and_extensions_are_ignored() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"5;name=value\r\nhello\r\n0\r\n") == b"hello"
    assert not decoder.done
    assert decoder.feed(b"\r\n") == b""
    assert decoder.done


@pytest.mark.parametrize("wire", [b"zz\r\nabc", b"3\r\nabcXX", b"1" * 5000])
def test_malformed_bodies_are_errors(wire: bytes) -> None:
    with pytest.raises(ChunkedBodyError):
        ChunkedDecoder().feed(wire)
