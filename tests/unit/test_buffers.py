"""What the daemon holds besides the queue is counted by kind, and held tails get a total."""

from __future__ import annotations

import tracemalloc

from prometheus_client import CollectorRegistry

from log_capturer.buffers import LINE_OVERHEAD, BufferBudget, Kind, lines_cost
from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.frames import Chunk
from log_capturer.docker.lines import LineAssembler, Lines
from log_capturer.metrics.collectors import BufferCollector
from log_capturer.monitor.admit import RECENT_LINE_COST, RecentLines
from log_capturer.pipeline.record import LogRecord
from log_capturer.pipeline.stages.config import MultilineConfig
from log_capturer.pipeline.stages.multiline import Multiline
from log_capturer.timestamps import format_rfc3339_ns

T0 = 1_795_000_000_000_000_000


def ts(n: int) -> bytes:
    return format_rfc3339_ns(T0 + n).encode()


def test_held_tails_get_at_most_the_total_and_the_other_kinds_are_only_counted() -> None:
    budget = BufferBudget(1000)
    assert budget.try_reserve(Kind.TAIL_HOLD, 600)
    assert not budget.try_reserve(Kind.TAIL_HOLD, 401)  # refused: nothing taken
    assert budget.held()[Kind.TAIL_HOLD] == 600 and budget.refused == 1
    assert budget.try_reserve(Kind.TAIL_HOLD, 400)  # exactly the total
    budget.release(Kind.TAIL_HOLD, 1000)
    # Recent lines, split lines and multiline groups are bounded per stream elsewhere:
    # counted, never refused, and they leave the held tails their whole total.
    budget.add(Kind.RECENT, 5000)
    budget.add(Kind.PARTIAL, 70)
    assert budget.try_reserve(Kind.TAIL_HOLD, 1000)
    assert budget.held() == {
        Kind.TAIL_HOLD: 1000,
        Kind.RECENT: 5000,
        Kind.PARTIAL: 70,
        Kind.MULTILINE: 0,
    }


def test_line_overhead_is_what_a_held_line_costs_besides_its_message() -> None:
    # The columns of 10,000 short lines as a socket read has them: a timestamp and a
    # message object each, three list slots.
    n = 10_000
    tracemalloc.start()
    try:
        held = Lines(
            ["stdout"] * n,
            [bytes(bytearray(ts(i))) for i in range(n)],
            [b"line %d" % i for i in range(n)],
        )
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    overhead = (used - held.size) / n
    assert LINE_OVERHEAD - 20 <= overhead <= LINE_OVERHEAD + 5, overhead
    assert lines_cost(len(held), held.size) == held.size + LINE_OVERHEAD * n


def test_recent_lines_count_what_they_keep_and_give_it_back() -> None:
    budget = BufferBudget(0)
    recent = RecentLines(budget=2000, max_lines=40, buffers=budget)
    for n in range(0, 600, 3):
        messages = [b"m" * (n % 50), b"x", b"y" * 7]
        recent.add([ts(n), ts(n + 1), ts(n + 2)], messages, sum(map(len, messages)))
        assert budget.held()[Kind.RECENT] == recent.cost > 0
    assert recent.cost == recent.size + RECENT_LINE_COST * len(recent)
    recent.release()
    assert budget.held()[Kind.RECENT] == 0 and len(recent) == 0


def chunk(data: bytes, complete: bool, n: int = 0, stream: str = "stdout") -> Chunk:
    return Chunk(stream, T0 + n, ts(n), data, complete)


def test_split_lines_are_counted_while_joined() -> None:
    budget = BufferBudget(0)
    assembler = LineAssembler(max_line_bytes=100, buffers=budget)
    assert list(assembler.add(chunk(b"a" * 60, False))) == []
    assert list(assembler.add(chunk(b"b" * 60, False))) == []  # cut at 100 bytes
    assert budget.held()[Kind.PARTIAL] == 100 + LINE_OVERHEAD
    assert list(assembler.add(chunk(b"e" * 5, False, stream="stderr"))) == []
    assert budget.held()[Kind.PARTIAL] == 105 + 2 * LINE_OVERHEAD
    (line,) = assembler.add(chunk(b"c\n", True))
    assert line.truncated and len(line.message) == 100
    assert budget.held()[Kind.PARTIAL] == 5 + LINE_OVERHEAD
    assert assembler.discard() == 1  # a window ended inside it: read again whole
    assert budget.held()[Kind.PARTIAL] == 0
    assert list(assembler.add(chunk(b"d" * 10, False, n=1))) == []
    first, second = assembler.add(chunk(b"next\n", True, n=2))  # a new line ends it
    assert (first.message, second.message) == (b"d" * 10, b"next\n")
    assert budget.held()[Kind.PARTIAL] == 0
    assert list(assembler.add(chunk(b"f" * 10, False, n=3))) == []
    (last,) = assembler.flush()  # the container stopped: the unterminated line is whole
    assert last.message == b"f" * 10 and budget.held()[Kind.PARTIAL] == 0


def test_multiline_groups_are_counted_until_released() -> None:
    budget = BufferBudget(0)
    stage = Multiline(MultilineConfig(enabled=True), budget)
    web = ContainerInfo(id="a" * 64, name="web-1", image="web:1")
    messages = ["ERROR request failed", "  at handler", "  at server", "  at main"]
    records = [
        LogRecord(web, "stdout", T0 + i, 1, format_rfc3339_ns(T0 + i), m)
        for i, m in enumerate(messages)
    ]
    assert stage.process(records, now=0.0) == []
    held = sum(len(m) for m in messages) + len(messages) - 1  # joined by newlines
    assert budget.held()[Kind.MULTILINE] == held + LINE_OVERHEAD * len(messages)
    (merged,) = stage.flush()
    assert merged.message == "\n".join(messages)
    assert budget.held()[Kind.MULTILINE] == 0


def test_the_gauges_show_every_kind_and_the_total() -> None:
    budget = BufferBudget(4096)
    budget.add(Kind.RECENT, 300)
    assert budget.try_reserve(Kind.TAIL_HOLD, 200)
    registry = CollectorRegistry()
    registry.register(BufferCollector(budget))
    got = {
        kind: registry.get_sample_value("log_capturer_buffered_bytes", {"kind": kind.value})
        for kind in Kind
    }
    assert got == {Kind.TAIL_HOLD: 200, Kind.RECENT: 300, Kind.PARTIAL: 0, Kind.MULTILINE: 0}
    assert registry.get_sample_value("log_capturer_buffer_budget_bytes") == 4096
