"""The batch path gives the records the per-line path gives, byte for byte, for hostile input.

Per-line path (the reference): the general decoders (chunked, frames or the TTY's raw
stream, split lines joined and cut), one ``LogRecord`` per line, ``json.dumps`` of its
``to_dict()``. Batch path (what the daemon runs): the bulk decoder's columns, batch
admission, ``LineBatch.jsonl()``. Input: quotes, backslashes, every control character,
DEL, invalid and cut UTF-8, valid multi-byte text, empty lines, lines the engine split
at 16 KiB, lines over ``max_line_bytes``, CRLF endings, on stdout, stderr and a TTY, fed
in socket reads of random sizes.
"""

from __future__ import annotations

import json
import random
import struct

import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.bulk import BulkLineDecoder
from log_capturer.docker.chunked import ChunkedDecoder
from log_capturer.docker.frames import ChunkParseStats, FrameDecoder, RawDecoder
from log_capturer.docker.lines import LineAssembler, Lines, LogLine
from log_capturer.monitor.admit import StreamDedup, admit
from log_capturer.pipeline.jsonl import needs_escaping
from log_capturer.pipeline.record import LogRecord
from log_capturer.positions.marks import ZERO
from log_capturer.timestamps import format_rfc3339_ns

INFO = ContainerInfo(
    id="d" * 64,
    name='we"ird\\name',
    image="img:1",
    labels={
        "com.docker.compose.service": "svc",
        "com.docker.swarm.service.name": "st_svc",
        "com.docker.stack.namespace": "st",
        "k\u00e9y": 'v"\\\x01',
    },
    host='n\u00f6de "1"\\',  # the node's name: escaped once, in the prepared pieces
)
T0 = 1_795_000_000_000_000_000
MAX_LINE = 1 << 20
SPLIT = 16384

HOSTILE = [
    b'say "hi"',
    b"back\\slash \\n not a newline",
    bytes(range(0x00, 0x0A)) + bytes(range(0x0B, 0x20)),  # every control byte but \n
    b"del \x7f and tab\t",
    b"bad \xff\xfe utf-8",
    b"cut \xe2\x82",  # a multi-byte sequence cut short
    "caf\u00e9 \u2028 \U0001f600 \u00fc\u00df".encode(),
    b"",  # an empty line
    b"crlf line\r",  # an app writing CRLF: the \r stays in the message
    b"plain ascii line with, commas and: colons",
    b"x" * (SPLIT - 1),
]


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", kind, len(payload)) + payload


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def stamp(n: int) -> bytes:
    return format_rfc3339_ns(T0 + n * 1000).encode()


def hostile_lines(rng: random.Random, n: int) -> list[tuple[int, bytes]]:
    """``(stream kind, message)``: the hostile set, in a random mix, with long lines."""
    out = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.03:
            size = rng.randint(SPLIT + 1, 50_000)  # split by the engine, joined again
            message = bytes(rng.choice(b"ab\"\\\x01\xff") for _ in range(size))
        elif roll < 0.04:
            message = b"m" * (MAX_LINE + rng.randint(1, 5000))  # over max_line_bytes: cut
        else:
            message = rng.choice(HOSTILE) + b" %d" % i
        out.append((rng.choice((1, 1, 2)), message))
    return out


def multiplexed(lines: list[tuple[int, bytes]]) -> bytes:
    """The engine's chunked body: a chunk per message, lines over 16 KiB split."""
    wire = b""
    for n, (kind, message) in enumerate(lines):
        ts = stamp(n)
        pieces = [message[i : i + SPLIT] for i in range(0, len(message), SPLIT)] or [b""]
        for i, piece in enumerate(pieces):
            end = b"\n" if i == len(pieces) - 1 else b""
            wire += chunk(frame(kind, ts + b" " + piece + end))
    return wire + b"0\r\n\r\n"


def tty(lines: list[tuple[int, bytes]]) -> bytes:
    """A TTY container's raw body: no frames, CRLF line ends, split lines stamped again."""
    wire = b""
    for n, (_, message) in enumerate(lines):
        ts = stamp(n)
        message = message.replace(b"\n", b"").replace(b"\r", b"")
        pieces = [message[i : i + SPLIT] for i in range(0, len(message), SPLIT)] or [b""]
        for i, piece in enumerate(pieces):
            wire += ts + b" " + piece + (b"\r\n" if i == len(pieces) - 1 else b"")
    return wire


def per_line(wire: bytes, is_tty: bool) -> list[bytes]:
    """The reference: general decoders, a record per line, json.dumps of to_dict()."""
    stats = ChunkParseStats()
    assembler = LineAssembler(MAX_LINE)
    lines: list[LogLine] = []
    if is_tty:
        raw = RawDecoder(stats)
        for piece in raw.feed(wire):
            lines.extend(assembler.add(piece))
        for piece in raw.flush():
            lines.extend(assembler.add(piece))
    else:
        for piece in FrameDecoder(stats).feed(ChunkedDecoder().feed(wire)):
            lines.extend(assembler.add(piece))
    lines.extend(assembler.flush())
    seen: dict[tuple[str, int], int] = {}
    out = []
    for line in lines:
        key = (line.stream, line.ts_ns)
        seen[key] = seen.get(key, 0) + 1
        record = LogRecord(
            INFO,
            line.stream,
            line.ts_ns,
            seen[key],
            line.ts_text.decode("ascii"),
            line.message.decode("utf-8", "replace"),
            line.truncated,
        )
        text = json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))
        out.append(text.encode("utf-8"))
    return out


def batched(wire: bytes, is_tty: bool, rng: random.Random) -> list[bytes]:
    """What the daemon does: reads of random sizes, columns, admission, LineBatch.jsonl()."""
    stats = ChunkParseStats()
    assembler = LineAssembler(MAX_LINE)
    raw = RawDecoder(stats) if is_tty else None
    bulk = None if is_tty else BulkLineDecoder(FrameDecoder(stats), assembler)
    dedups = {s: StreamDedup(ZERO) for s in ("stdout", "stderr", "tty")}
    out = b""
    pos = 0
    reads: list[Lines] = []
    while pos < len(wire):
        step = rng.choice((1, 13, 4096, 65536, 262144))
        data = wire[pos : pos + step]
        pos += step
        if bulk is not None:
            reads.append(bulk.feed(data))
        else:
            assert raw is not None
            reads.append(Lines.of(line for p in raw.feed(data) for line in assembler.add(p)))
    tail = Lines.empty()
    if raw is not None:
        tail.add_loglines(line for p in raw.flush() for line in assembler.add(p))
    tail.add_loglines(assembler.flush())
    reads.append(tail)
    for lines in reads:
        if lines:
            batch = admit(lines, dedups, INFO).batch
            assert batch is not None  # nothing is a repeat here
            out += batch.jsonl()
    return out.splitlines()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("is_tty", [False, True])
def test_batch_path_equals_per_line_path_for_hostile_input(seed: int, is_tty: bool) -> None:
    rng = random.Random(seed)
    lines = hostile_lines(rng, 300)
    wire = tty(lines) if is_tty else multiplexed(lines)
    want = per_line(wire, is_tty)
    got = batched(wire, is_tty, rng)
    assert len(got) == len(want) == len(lines)
    for n, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, (n, a[:300], b[:300])
    docs = [json.loads(x) for x in got]  # and each line is one valid JSON record
    assert sum(1 for d in docs if d.get("truncated")) == sum(
        1 for _, m in lines if len(m.replace(b"\r", b"") if is_tty else m) > MAX_LINE
    )


def test_plain_lines_are_copied_and_hostile_ones_escaped() -> None:
    """The batch check that decides between copying and escaping: what needs escaping."""
    assert not needs_escaping(b" ".join([b"plain", "caf\u00e9".encode(), b"del \x7f"]))
    for message in (b'"', b"\\", b"\x00", b"\x1f", b"\t", b"\xff", b"cut \xe2\x82"):
        assert needs_escaping(b" ".join([b"ok", message])), message
    # a multi-byte sequence cut at one message's end is not completed by the next one
    assert needs_escaping(b" ".join([b"\xe2\x82", b"\xac"]))


def test_json_pieces_of_a_container_go_with_it() -> None:
    """The cached JSON pieces of a container are dropped when nothing holds the container
    any more (a churn of short-lived containers must not grow the cache), and a new
    container at a reused address gets its own pieces."""
    from log_capturer.pipeline import jsonl

    def record(info: ContainerInfo) -> bytes:
        return jsonl.lines_jsonl(
            info, ["stdout"], [b"2026-01-01T00:00:00.000000000Z"], [b"x"], None
        )

    before = len(jsonl._cache)
    first = ContainerInfo(id="a" * 64, name="first", image="img")
    assert b'"container_name":"first"' in record(first)
    assert len(jsonl._cache) == before + 1
    del first
    assert len(jsonl._cache) == before
    for n in range(50):  # new objects, some at the addresses of dropped ones
        info = ContainerInfo(id=f"{n:064x}", name=f"c{n}", image="img")
        assert f'"container_name":"c{n}"'.encode() in record(info)
    del info
    assert len(jsonl._cache) == before
