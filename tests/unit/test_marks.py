"""Resume positions: the inclusive ``since`` boundary is deduplicated per stream, exactly."""

from __future__ import annotations

from log_capturer.monitor.marks import ZERO, Mark, ReadPlan, StreamDedup, plan_window

S = 1_000_000_000


def admit_all(dedup: StreamDedup, timestamps: list[int]) -> list[tuple[int, int]]:
    out = []
    for ts in timestamps:
        seq = dedup.admit(ts)
        if seq is not None:
            out.append((ts, seq))
    return out


def test_lines_at_the_mark_timestamp_are_dropped_only_as_often_as_delivered() -> None:
    # Three lines share timestamp 5; two were delivered before the window closed.
    dedup = StreamDedup(Mark(5, 2))
    assert admit_all(dedup, [5, 5, 5, 6, 6]) == [(5, 3), (6, 1), (6, 2)]
    assert dedup.mark == Mark(6, 2)
    assert dedup.dropped == 2


def test_everything_before_the_mark_is_dropped() -> None:
    dedup = StreamDedup(Mark(10, 1))
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
        since = first.mark.ts_ns
        second = StreamDedup(first.mark)
        delivered += admit_all(second, [ts for ts in log if ts >= since])  # inclusive since
        assert [ts for ts, _ in delivered] == log, cut


def test_clock_stepping_back_inside_a_window_keeps_the_lines() -> None:
    dedup = StreamDedup(Mark(5, 1))
    assert admit_all(dedup, [5, 6, 4, 7]) == [(6, 1), (4, 1), (7, 1)]
    assert dedup.clock_backwards == 1
    assert dedup.mark == Mark(7, 1)


def test_plan_reads_close_streams_together_from_the_older_mark() -> None:
    marks = {"stdout": Mark(100 * S, 1), "stderr": Mark(99 * S, 3)}
    assert plan_window(marks, 30 * S, follow=True) == [
        ReadPlan(("stdout", "stderr"), 99 * S, follow=True)
    ]


def test_plan_reads_a_lagging_stream_alone_without_follow() -> None:
    marks = {"stdout": Mark(1000 * S, 1), "stderr": Mark(0, 0)}
    assert plan_window(marks, 30 * S, follow=True) == [
        ReadPlan(("stderr",), 0, follow=False),
        ReadPlan(("stdout",), 1000 * S, follow=True),
    ]


def test_plan_for_a_single_tty_stream() -> None:
    assert plan_window({"tty": Mark(7, 1)}, S, follow=False) == [ReadPlan(("tty",), 7, False)]
