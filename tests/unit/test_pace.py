"""The read rate bound (monitor/pace.py): a monitor over it waits, on average it reads the
rate, a quiet one may read a second's worth at once."""

from __future__ import annotations

import pytest

from log_capturer.monitor.pace import ReadPace


def paced_reads(pace: ReadPace, lines_per_read: int, size_per_read: int, seconds: float) -> int:
    """A monitor reading as fast as the bound lets it (the engine always has more):
    how many lines it read in ``seconds`` of a simulated clock."""
    now = 0.0
    read = 0
    while now < seconds:
        read += lines_per_read
        now += pace.delay(lines_per_read, size_per_read, now)
    return read


def test_no_bound_never_waits() -> None:
    pace = ReadPace(0, 0)
    assert not pace.bounded
    assert all(pace.delay(10_000, 10 << 20, 0.0) == 0 for _ in range(100))


@pytest.mark.parametrize("per_read", [1, 37, 500, 1700])
def test_a_flood_is_read_at_the_line_rate(per_read: int) -> None:
    pace = ReadPace(lines_per_s=1000, bytes_per_s=0)
    read = paced_reads(pace, per_read, per_read * 100, seconds=60)
    # 60 s at 1000/s, plus the one-second burst and the read that crossed the end.
    assert 60_000 <= read <= 61_000 + 2 * per_read


def test_the_byte_bound_applies_when_it_is_the_tighter() -> None:
    pace = ReadPace(lines_per_s=1_000_000, bytes_per_s=100_000)
    read = paced_reads(pace, 100, 10_000, seconds=30)  # 100 B lines: 1000 lines/s
    assert 30_000 <= read <= 31_000 + 200


def test_a_burst_after_quiet_is_free_up_to_a_second_of_the_rate() -> None:
    pace = ReadPace(lines_per_s=100, bytes_per_s=0)
    assert pace.delay(100, 0, 10.0) == 0  # a second's worth: no wait
    assert pace.delay(50, 0, 10.0) == pytest.approx(0.5)  # past it: paid at the rate
    # Quiet for a minute: the allowance is back, but it does not pile up beyond a second.
    assert pace.delay(100, 0, 70.0) == 0
    assert pace.delay(100, 0, 70.0) == pytest.approx(1.0)
