"""The gap check of tail reopens, the checked times that keep a quiet stream cheap, and
when a proof read moves them."""

from __future__ import annotations

from log_capturer.monitor.resume import (
    GAP,
    PENDING,
    PROVEN,
    Checked,
    Received,
    TailCheck,
    ended_before_until,
    needs_proof,
    tail_lines,
)
from log_capturer.positions.marks import Mark

MS = 1_000_000
FIRST_DATA = 1_000 * MS  # when the body's first bytes arrived


def test_a_line_written_after_the_tail_was_taken_proves_a_short_tail() -> None:
    check = TailCheck(limit=10)
    assert check.on_line(FIRST_DATA - 5 * MS, 1, FIRST_DATA) == PENDING
    assert check.on_line(FIRST_DATA - 4 * MS, 2, FIRST_DATA) == PENDING
    assert check.on_line(FIRST_DATA + 1, 3, FIRST_DATA) == PROVEN


def test_a_tail_that_reaches_its_limit_is_a_possible_gap() -> None:
    check = TailCheck(limit=3)
    check.on_line(FIRST_DATA - 3, 1, FIRST_DATA)
    check.on_line(FIRST_DATA - 2, 2, FIRST_DATA)
    assert check.on_line(FIRST_DATA - 1, 3, FIRST_DATA) == GAP
    assert check.on_line(FIRST_DATA + 9, 4, FIRST_DATA) == GAP  # a verdict is final


def test_the_line_after_a_full_tail_is_a_gap_even_if_written_later() -> None:
    # 3 tail messages then a later line: 4 messages so far, the tail (<= 3) was full.
    check = TailCheck(limit=3)
    assert check.on_line(FIRST_DATA + 1, 4, FIRST_DATA) == GAP
    # ... but with room to spare it is proven.
    assert TailCheck(limit=4).on_line(FIRST_DATA + 1, 4, FIRST_DATA) == PROVEN


def test_split_lines_count_every_message() -> None:
    check = TailCheck(limit=10)
    # One joined line of 12 engine messages (a 190 KiB line): the tail may be full.
    assert check.on_line(FIRST_DATA - 1, 12, FIRST_DATA) == GAP


def test_the_end_of_the_body_settles_the_count() -> None:
    ended = TailCheck(limit=5)
    ended.on_line(FIRST_DATA - 1, 4, FIRST_DATA)
    assert ended.at_end(engine_ended=True, messages=4) == PROVEN
    full = TailCheck(limit=4)
    full.on_line(FIRST_DATA - 2, 3, FIRST_DATA)
    assert full.at_end(engine_ended=True, messages=4) == GAP


def test_a_window_cut_before_any_proof_stays_unproven() -> None:
    check = TailCheck(limit=5)
    check.on_line(FIRST_DATA - 1, 1, FIRST_DATA)
    assert check.at_end(engine_ended=False, messages=1) == PENDING


def test_checked_starts_at_the_marks_and_never_goes_back() -> None:
    checked = Checked({"stdout": Mark(50 * MS, 1), "stderr": Mark(0, 0)}, tolerance_ns=10 * MS)
    assert checked.ts == {"stdout": 50 * MS, "stderr": 0}
    checked.after_gap_free_read(("stdout", "stderr"), 40 * MS, {})
    # stderr moves up to (last line - tolerance); stdout keeps its later mark.
    assert checked.ts == {"stdout": 50 * MS, "stderr": 30 * MS}
    checked.after_gap_free_read(("stdout", "stderr"), 35 * MS, {})
    assert checked.ts == {"stdout": 50 * MS, "stderr": 30 * MS}


def test_an_incomplete_line_caps_its_stream() -> None:
    checked = Checked({"stdout": Mark(0, 0), "stderr": Mark(0, 0)}, tolerance_ns=MS)
    checked.after_gap_free_read(("stdout", "stderr"), 100 * MS, {"stderr": 20 * MS})
    assert checked.ts == {"stdout": 99 * MS, "stderr": 20 * MS}


def test_only_the_streams_read_move() -> None:
    checked = Checked({"stdout": Mark(0, 0), "stderr": Mark(0, 0)}, tolerance_ns=0)
    checked.after_gap_free_read(("stdout",), 100, {})
    checked.observe_mark("stderr", Mark(7, 1))
    assert checked.ts == {"stdout": 100, "stderr": 7}


def test_tail_size_grows_with_the_write_rate_up_to_the_maximum() -> None:
    assert tail_lines(1000, 100_000, rate_per_s=0.5, gap_s=0.01, tolerance_s=1) == 1002
    assert tail_lines(1000, 100_000, rate_per_s=5000, gap_s=0.5, tolerance_s=1) == 26_000
    assert tail_lines(1000, 100_000, rate_per_s=1e6, gap_s=0.5, tolerance_s=1) == 100_000


def test_an_end_after_until_settles_nothing() -> None:
    # The request waited for a connection past its until: the engine cut the tail.
    assert not ended_before_until(eof=True, until_ns=100, now_ns=150)
    assert ended_before_until(eof=True, until_ns=100, now_ns=99)
    assert ended_before_until(eof=True, until_ns=0, now_ns=150)  # no until (non-follow)
    assert not ended_before_until(eof=False, until_ns=100, now_ns=50)


def test_checked_starts_at_a_saved_time_when_it_is_later_than_the_mark() -> None:
    checked = Checked(
        {"stdout": Mark(50 * MS, 1), "stderr": Mark(0, 0)},
        tolerance_ns=MS,
        saved={"stdout": 40 * MS, "stderr": 90 * MS},
    )
    assert checked.ts == {"stdout": 50 * MS, "stderr": 90 * MS}
    assert checked.since(("stdout", "stderr")) == 50 * MS


def test_a_read_reports_whether_a_checked_time_moved() -> None:
    checked = Checked({"stdout": Mark(50 * MS, 1)}, tolerance_ns=MS)
    assert not checked.after_gap_free_read(("stdout",), 40 * MS, {})
    assert checked.after_gap_free_read(("stdout",), 100 * MS, {})
    assert checked.ts == {"stdout": 99 * MS}


def test_the_end_of_a_proof_read_moves_a_quiet_stream_past_its_burst() -> None:
    # A burst ended at 10 s; the follow read only proves up to its last line. A proof
    # read requested at 12 s that the engine ended proves everything before 12 s - tol.
    tol = 200 * MS
    checked = Checked({"stdout": Mark(10_000 * MS, 1), "stderr": Mark(9_990 * MS, 1)}, tol)
    # The last line received (stdout, 10 s): only up to it minus the tolerance.
    assert not checked.after_gap_free_read(("stdout", "stderr"), 10_000 * MS, {})
    assert checked.since(("stdout", "stderr")) == 9_990 * MS  # inside the burst
    checked.after_gap_free_read(("stdout", "stderr"), 12_000 * MS, {})
    assert checked.ts == {"stdout": 11_800 * MS, "stderr": 11_800 * MS}
    # A split line still being written at the end of the proof read caps its stream.
    checked.after_gap_free_read(("stdout", "stderr"), 14_000 * MS, {"stderr": 12_500 * MS})
    assert checked.ts == {"stdout": 13_800 * MS, "stderr": 12_500 * MS}


def test_received_counts_what_a_reopen_would_send_again() -> None:
    received = Received(keep_ns=1_000 * MS)
    received.add(100 * MS, 10)  # a read whose newest line is at 100 ms: 10 lines
    received.add(200 * MS, 30)
    received.add(300 * MS, 5)
    assert received.since(150 * MS) == 35
    assert received.since(200 * MS) == 35  # a read counts whole when its newest does
    assert received.since(301 * MS) == 0
    received.add(1_250 * MS, 1)  # the reads more than keep_ns behind the newest go
    assert received.since(0) == 6


def test_received_is_bounded() -> None:
    received = Received(keep_ns=10**18, max_reads=3)
    for i in range(10):
        received.add(i, 1)
    assert received.since(0) == 3


def test_a_proof_read_is_made_for_a_quiet_stream_with_a_burst_to_send_again() -> None:
    assert needs_proof(quiet=True, resend=500, base=1000)
    assert not needs_proof(quiet=True, resend=499, base=1000)  # a few lines cost less
    assert not needs_proof(quiet=False, resend=10**6, base=1000)  # busy: a new line proves
    assert not needs_proof(quiet=True, resend=10**6, base=0)  # tails are off


def test_the_tail_covers_the_known_lines_a_reopen_sends_again() -> None:
    # Quiet now (rate 0), but 30,000 lines of a burst lie just behind since.
    assert tail_lines(1000, 100_000, 0, 0.5, 1, resend=30_000) == 61_000
    # Busy: the rate term is the larger and is kept.
    assert tail_lines(1000, 100_000, 5000, 0.5, 1, resend=100) == 26_000
    assert tail_lines(1000, 100_000, 0, 0.5, 1, resend=10**6) == 100_000


def test_a_silent_stream_reopens_with_a_small_tail() -> None:
    # Nothing written in the last read and nothing known to send again (a quiet log, a
    # restart from a saved checked time): the engine decodes every tail line, so a
    # small tail costs it what an empty log's reopen does.
    assert tail_lines(1000, 100_000, rate_per_s=0, gap_s=0.01, tolerance_s=1) == 32
    assert tail_lines(20, 100_000, rate_per_s=0, gap_s=0.01, tolerance_s=1) == 20
    assert tail_lines(1000, 100_000, rate_per_s=0, gap_s=0.01, tolerance_s=1, resend=1) == 1002
