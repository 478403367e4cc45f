"""Push bodies written by numpy (sinks/loki/wire.py) are the bytes upb writes; Docker's
timestamps of a delivery read at once (sinks/network/numeric.py) are what the per-batch
reader gives; lines reach the Loki sink as valid UTF-8 bytes."""

from __future__ import annotations

import random
import time

import cramjam
import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.lines import Lines, ts_ns_of
from log_capturer.pipeline.batch import LineBatch, RecordBatch
from log_capturer.pipeline.record import LogRecord
from log_capturer.positions.marks import Mark
from log_capturer.sinks.loki import LokiSinkConfig
from log_capturer.sinks.loki.encode import Encoder
from log_capturer.sinks.loki.push import decode_protobuf, protobuf_body, upb_request
from log_capturer.sinks.loki.wire import Group, NotEncodable, push_request
from log_capturer.sinks.network.columns import cut_utf8, gather_utf8
from log_capturer.sinks.network.numeric import stamps_ns
from log_capturer.timestamps import format_rfc3339_ns

NS = 1_000_000_000
CUT = (("truncated", "true"),)
MANY = (("container_id", "c" * 64), ("image", "shop/wëb:2"), ("empty", ""))


def _lines(rng: random.Random, n: int) -> list[bytes]:
    pieces = ["out", "err", "é", "€", "𝄞", " ", "x" * 130, "\x00", "\t"]
    out = []
    for _ in range(n):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 12)))
        out.append(text.encode())
    return out


def _groups(seed: int) -> list[Group]:
    """Streams of every shape the framing has: empty lines, lines of 1- to 3-byte lengths
    (and one over 2 MiB: 4 bytes), nanos of 0 and of every varint size, metadata or none."""
    rng = random.Random(seed)
    now = time.time_ns()
    groups: list[Group] = []
    for s in range(rng.randrange(1, 5)):
        n = rng.randrange(1, 300)
        ts = sorted(now + rng.randrange(0, 10 * NS) for _ in range(n))
        ts[0] = ts[0] // NS * NS  # nanos 0: left out
        ts[-1] = ts[-1] // NS * NS + rng.choice([1, 127, 128, 16_383, 16_384, 999_999_999])
        lines = _lines(rng, n)
        lines[0] = b""
        if s == 0:
            lines[-1] = b"y" * rng.choice([127, 128, 16_384, 2_100_000])
        metas = [rng.choice([(), CUT, MANY]) for _ in range(n)] if s % 2 else [()] * n
        groups.append((f'{{app="a{s}", name="wëird \\"{s}\\""}}', ts, lines, metas))
    return groups


@pytest.mark.parametrize("seed", range(12))
def test_numpy_writes_the_bytes_upb_writes(seed: int) -> None:
    groups = _groups(seed)
    assert push_request(groups) == upb_request(groups)


def test_one_entry_many_entries_of_no_text_and_streams_of_none() -> None:
    now = time.time_ns()
    odd = (("", "no name"), ("no value", ""))
    for groups in ([("{a=\"1\"}", [now], [b""], [odd])],
                   [("{a=\"1\"}", [now + i for i in range(5000)], [b""] * 5000, [()] * 5000)],
                   [("{a=\"1\"}", [], [], []), ("{b=\"2\"}", [now], [b"x"], [()])]):
        assert push_request(groups) == upb_request(groups)


def test_streams_across_the_passes_of_4096_entries() -> None:
    rng = random.Random(3)
    now = time.time_ns()
    groups: list[Group] = []
    for s, n in enumerate((3000, 5000, 1, 4096)):
        metas = [rng.choice([(), CUT]) for _ in range(n)] if s == 1 else [()] * n
        groups.append((f'{{s="{s}"}}', [now + i for i in range(n)], _lines(rng, n), metas))
    assert push_request(groups) == upb_request(groups)


def test_times_it_does_not_take_go_to_upb() -> None:
    old = [("{a=\"1\"}", [-5 * NS, 3], [b"before 1970", b"1970"], [(), ()])]
    with pytest.raises(NotEncodable):
        push_request(old)
    body = protobuf_body(old)
    assert body == bytes(cramjam.snappy.compress_raw(upb_request(old)))
    assert decode_protobuf(body).ts_ns == [-5 * NS, 3]


def test_stamps_read_at_once_are_what_the_reader_of_one_batch_gives() -> None:
    rng = random.Random(7)
    times = [rng.randrange(0, 4_000_000_000) * NS + rng.randrange(0, NS) for _ in range(5000)]
    times += [951_782_400 * NS, 1_709_164_799 * NS + 999_999_999, 0, 1]  # 2000-02-29, 2024
    stamps = [format_rfc3339_ns(t).encode() for t in times]
    assert stamps_ns(stamps) == ts_ns_of(stamps) == times
    assert stamps_ns([]) == []
    with pytest.raises(ValueError):
        stamps_ns([b"2026-12-05T06:00:00Z"])


def test_invalid_utf8_is_replaced_even_across_a_line_break() -> None:
    """A line ending in half a character and a line starting with its other half are each
    invalid (joined without a break they would pass for one valid character)."""
    container = ContainerInfo(id="c" * 64, name="web", image="i")
    now = time.time_ns()
    messages = [b"price \xe2\x82", b"\xac 5", b"ok \xc3\xa9", b"bad \xff"]
    stamps = [format_rfc3339_ns(now + i).encode() for i in range(4)]
    batch = LineBatch(container, Lines(["stdout"] * 4, stamps, messages),
                      {"stdout": Mark(now + 3, 1)})
    assert batch.utf8() == [t.encode() for t in batch.texts()]
    assert batch.utf8() == [b"price \xef\xbf\xbd", b"\xef\xbf\xbd 5", b"ok \xc3\xa9",
                            b"bad \xef\xbf\xbd"]
    clean = LineBatch(container, Lines(["stdout"] * 2, stamps[:2], [b"a", b"\xc3\xa9"]),
                      {"stdout": Mark(now + 1, 1)})
    assert clean.utf8() is clean.lines.messages  # valid: passed on, not copied
    [part] = gather_utf8([batch])
    assert part.ts_ns == [now + i for i in range(4)] and part.texts == batch.utf8()
    [push] = Encoder(LokiSinkConfig()).build([batch])
    assert decode_protobuf(push.body()).lines == batch.utf8()


def test_lines_are_cut_at_a_character_boundary() -> None:
    lines = ["a" * 10, "é" * 10, "€" * 10, "𝄞" * 10, "short"]
    cut, flags = cut_utf8([line.encode() for line in lines], 9)
    assert [c.decode() for c in cut] == ["a" * 9, "é" * 4, "€" * 3, "𝄞" * 2, "short"]
    assert flags == [True, True, True, True, False]
    assert cut_utf8([b"abc"], 0) == ([b"abc"], None)


def test_a_delivery_of_stamped_and_timed_batches_keeps_its_order() -> None:
    """Batches of a socket read carry Docker's stamps, batches from the stages nanoseconds:
    one stream fed by both, in turns, comes out in the order fed."""
    container = ContainerInfo(id="c" * 64, name="web", image="i")
    now = time.time_ns()

    def read(first: int) -> LineBatch:
        ids = range(first, first + 3)
        return LineBatch(container, Lines(["stdout"] * 3,
                                          [format_rfc3339_ns(now + i).encode() for i in ids],
                                          [f"l{i}".encode() for i in ids]),
                         {"stdout": Mark(now + ids[-1], 1)})

    def staged(first: int) -> RecordBatch:
        return RecordBatch(container, [
            LogRecord(container, "stdout", now + i, 0, format_rfc3339_ns(now + i), f"l{i}")
            for i in range(first, first + 3)])

    [part] = gather_utf8([read(0), staged(3), read(6), read(9), staged(12)])
    assert part.ts_ns == [now + i for i in range(15)]
    assert part.texts == [f"l{i}".encode() for i in range(15)]
