"""Per-stream dedup: the inclusive ``since`` boundary, json-file rotation repeats, clock steps."""

from __future__ import annotations

import ctypes
import tracemalloc

from log_capturer.monitor.admit import RECENT_LINE_COST, RecentLines, StreamDedup
from log_capturer.monitor.plan import ReadPlan, plan_window
from log_capturer.positions.marks import ZERO, Mark
from log_capturer.timestamps import format_rfc3339_ns

S = 1_000_000_000
BASE = 1_700_000_000 * S


def ts(n: int) -> bytes:
    return format_rfc3339_ns(BASE + n).encode()


def admit_all(
    dedup: StreamDedup, stamps: list[int], messages: list[bytes] | None = None
) -> list[tuple[int, int]]:
    """(timestamp, seq) of the lines admitted, fed one line at a time."""
    messages = messages or [b"m%d" % i for i in range(len(stamps))]
    out = []
    for stamp, message in zip(stamps, messages, strict=True):
        result = dedup.admit([ts(stamp)], [message], len(message))
        if result is None:
            out.append((stamp, 1))
        elif result[0][0]:
            out.append((stamp, result[1][0]))
    return out


def mark(n: int, count: int) -> Mark:
    return Mark(BASE + n, count)


def test_lines_at_the_mark_timestamp_are_dropped_only_as_often_as_delivered() -> None:
    # Three lines share timestamp 5; two were delivered before the window closed.
    dedup = StreamDedup(mark(5, 2))
    assert admit_all(dedup, [5, 5, 5, 6, 6]) == [(5, 3), (6, 1), (6, 2)]
    assert dedup.mark == mark(6, 2)
    assert dedup.dropped == 2


def test_everything_before_the_mark_is_dropped() -> None:
    dedup = StreamDedup(mark(10, 1))
    assert admit_all(dedup, [3, 7, 10, 11]) == [(11, 1)]


def test_from_zero_everything_is_new_and_numbered_per_timestamp() -> None:
    dedup = StreamDedup(ZERO)
    assert admit_all(dedup, [1, 1, 2, 2, 2, 3]) == [(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 1)]


def test_windows_chained_deliver_each_line_once() -> None:
    """Replaying a window boundary anywhere yields every line exactly once."""
    log = [1, 1, 1, 2, 3, 3, 4, 4, 4, 4, 5]
    for cut in range(len(log) + 1):
        first = StreamDedup(ZERO)
        delivered = admit_all(first, log[:cut])
        since = first.mark.ts_ns - BASE
        second = StreamDedup(first.mark)
        delivered += admit_all(second, [t for t in log if t >= since])  # inclusive since
        assert [t for t, _ in delivered] == log, cut


def test_clock_stepping_back_inside_a_window_keeps_the_lines() -> None:
    dedup = StreamDedup(mark(5, 1))
    assert admit_all(dedup, [5, 6, 4, 7]) == [(6, 1), (4, 1), (7, 1)]
    assert dedup.clock_backwards == 1
    assert dedup.resent == 0
    assert dedup.mark == mark(7, 1)


def test_a_rotation_repeat_is_dropped_and_counted() -> None:
    """The engine re-sends lines just delivered, same bytes and timestamps, then goes on."""
    dedup = StreamDedup(ZERO)
    stamps = [1, 2, 3, 4, 5, 6]
    messages = [b"line %d" % t for t in stamps]
    assert admit_all(dedup, stamps, messages) == [(t, 1) for t in stamps]
    # Rotation: back to 3, the same lines 3..6 again, then new ones.
    again = admit_all(dedup, [3, 4, 5, 6, 7, 8], [b"line %d" % t for t in (3, 4, 5, 6, 7, 8)])
    assert again == [(7, 1), (8, 1)]
    assert dedup.resent == 4
    assert dedup.clock_backwards == 0
    assert dedup.mark == mark(8, 1)


def test_a_repeat_is_recognised_across_windows() -> None:
    """The recent lines outlive a window: a repeat right after a reopen is dropped too."""
    recent = RecentLines()
    first = StreamDedup(ZERO, recent)
    admit_all(first, [1, 2, 3], [b"a", b"b", b"c"])
    second = StreamDedup(first.mark, recent)
    # the reopen re-sends 3 (inclusive since), then 4, then a rotation repeats 2..4
    got = admit_all(second, [3, 4, 2, 3, 4, 5], [b"c", b"d", b"b", b"c", b"d", b"e"])
    assert got == [(4, 1), (5, 1)]
    assert (second.dropped, second.resent, second.clock_backwards) == (1, 3, 0)


def test_new_lines_among_a_repeat_are_kept() -> None:
    """At or behind the newest timestamp, only lines equal to recent ones are repeats, as
    often as they were delivered; the others are new (a clock step, a second line at the
    newest nanosecond) and delivered once."""
    dedup = StreamDedup(ZERO)
    admit_all(dedup, [1, 2, 2, 3], [b"x", b"y1", b"y2", b"z"])
    got = admit_all(dedup, [2, 2, 2, 3, 3], [b"y1", b"y2", b"w", b"z", b"new at 3"])
    # y1, y2 and z repeat; "w" is new (stamped in the past); "new at 3" is new
    assert got == [(2, 3), (3, 2)]
    assert dedup.resent == 3
    assert dedup.clock_backwards == 1
    assert dedup.mark == mark(3, 2)


def test_a_repeat_of_the_last_line_alone_is_dropped() -> None:
    """The engine's most frequent repeat: the last line again, with its own timestamp (no
    step back). The same bytes at the same nanosecond are taken for a repeat."""
    dedup = StreamDedup(ZERO)
    assert admit_all(dedup, [1, 2, 2, 3], [b"a", b"b", b"b", b"c"]) == [(1, 1), (2, 1), (3, 1)]
    assert dedup.resent == 1


def test_the_fast_path_gives_what_line_by_line_gives() -> None:
    """A read admitted at once equals the same lines admitted one by one."""
    stamps = [1, 1, 2, 3, 3, 3, 4]
    messages = [b"m%d" % i for i in range(len(stamps))]
    one = StreamDedup(mark(1, 1))
    many = StreamDedup(mark(1, 1))
    want = admit_all(one, [*stamps, 5, 6, 7], [*messages, b"a", b"b", b"c"])
    result = many.admit([ts(t) for t in stamps], messages, 0)  # first read: line by line
    assert result is not None
    got = [(t, seq) for t, keep, seq in zip(stamps, *result, strict=True) if keep]
    # strictly increasing and new: taken at once
    assert many.admit([ts(5), ts(6), ts(7)], [b"a", b"b", b"c"], 3) is None
    got += [(5, 1), (6, 1), (7, 1)]
    assert got == want
    assert many.mark == one.mark == mark(7, 1)


def test_recent_lines_keep_the_newest_line_whatever_its_size() -> None:
    recent = RecentLines(budget=10)
    recent.add([ts(1)], [b"x" * 8], 8)
    recent.add([ts(2)], [b"y" * 8], 8)
    recent.add([ts(3)], [b"z" * 30], 30)
    assert set(recent.counts()) == {(ts(3), b"z" * 30)}
    assert recent.size == 30


def test_recent_lines_of_a_read_longer_than_the_bound_keep_its_newest() -> None:
    recent = RecentLines(max_lines=100)
    recent.add([ts(0)], [b"old"], 3)
    recent.add([ts(n) for n in range(1, 1001)], [b"%d" % n for n in range(1, 1001)], 2893)
    kept = recent.counts()  # the older line stays: within the bound's quarter
    newest = {(ts(n), b"%d" % n) for n in range(901, 1001)}
    assert len(recent) == 101 and set(kept) == {(ts(0), b"old")} | newest
    assert recent.size == 3 + sum(len(b"%d" % n) for n in range(901, 1001))


def test_recent_lines_cost_about_40_bytes_a_short_line() -> None:
    """Packed: a stream that writes a line a second fills its recent lines over 17
    minutes, and what a line costs there is what RSS grows by meanwhile."""
    stamps = [bytes(bytearray(ts(n))) for n in range(1024)]
    messages = [b"e %d" % n for n in range(1024)]
    tracemalloc.start()
    try:
        recent = RecentLines()
        for stamp, message in zip(stamps, messages, strict=True):
            recent.add([stamp], [message], len(message))
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    per_line = used / 1024
    assert per_line < 50, per_line  # two bytes objects a line cost 120
    assert recent.cost == recent.size + RECENT_LINE_COST * 1024
    assert abs(recent.cost - used) < 0.2 * used, (recent.cost, used)


def buffer_address(buffer: bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


def test_recent_lines_are_trimmed_in_place_without_a_new_buffer() -> None:
    """A full stream's trims move the kept lines within their buffers. (``del buffer[:n]``
    moves the buffer's start instead, and its next growth copies it to a new allocation:
    a malloc and a free of the whole buffer at every trim, which fragments the C heap.)"""
    recent = RecentLines()
    for n in range(3000):  # full, and trimmed a few times already
        recent.add([ts(n)], [b"e %d" % n], len(b"e %d" % n))
    stamps, messages = buffer_address(recent._stamps), buffer_address(recent._messages)
    for n in range(3000, 8000):  # 20 more trims
        recent.add([ts(n)], [b"e %d" % n], len(b"e %d" % n))
    assert buffer_address(recent._stamps) == stamps
    assert buffer_address(recent._messages) == messages


def test_recent_lines_are_bounded_in_lines_when_read_one_at_a_time() -> None:
    """A slow stream is read a line per socket read: what is kept stays within the line
    bound (plus the quarter it may overrun before a trim), and is the newest lines."""
    recent = RecentLines(budget=1 << 30, max_lines=100)
    for n in range(10_000):
        recent.add([ts(n)], [b"%d" % n], len(b"%d" % n))
        assert len(recent) <= 125
    kept = recent.counts()
    assert len(recent) >= 100 and len(kept) == len(recent)
    assert (ts(9_999), b"9999") in kept and (ts(9_899), b"9899") in kept
    assert recent.size == sum(len(m) for _, m in kept)


def test_recent_lines_are_bounded_in_bytes() -> None:
    recent = RecentLines(budget=1000, max_lines=10_000)
    for n in range(1000):
        recent.add([ts(2 * n), ts(2 * n + 1)], [b"a" * 50, b"b" * 50], 100)
        assert recent.size <= 1250
    assert 1000 - 100 < recent.size <= 1250
    assert (ts(1999), b"b" * 50) in recent.counts()


def test_a_repeat_is_recognised_after_many_single_line_reads() -> None:
    """The rotation repeat the bound is for: after thousands of one-line reads, the
    engine re-sends the last lines (up to the bound) and every one is dropped."""
    dedup = StreamDedup(ZERO, RecentLines(max_lines=400))
    for n in range(1, 5001):
        admit_all(dedup, [n], [b"line %d" % n])
    back = list(range(5001 - 356, 5001))  # the worst repeat measured: 356 lines
    got = admit_all(dedup, [*back, 5001], [*(b"line %d" % n for n in back), b"line 5001"])
    assert got == [(5001, 1)]
    assert dedup.resent == 356 and dedup.clock_backwards == 0


def test_plan_reads_close_streams_together_from_the_older_mark() -> None:
    checked = {"stdout": 100 * S, "stderr": 99 * S}
    assert plan_window(checked, 30 * S, follow=True) == [
        ReadPlan(("stdout", "stderr"), 99 * S, follow=True)
    ]


def test_plan_reads_a_lagging_stream_alone_without_follow() -> None:
    checked = {"stdout": 1000 * S, "stderr": 0}
    assert plan_window(checked, 30 * S, follow=True) == [
        ReadPlan(("stderr",), 0, follow=False),
        ReadPlan(("stdout",), 1000 * S, follow=True),
    ]


def test_plan_for_a_single_tty_stream() -> None:
    assert plan_window({"tty": 7}, S, follow=False) == [ReadPlan(("tty",), 7, False)]
