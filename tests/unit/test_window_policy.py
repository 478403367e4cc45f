"""The window / tail / proof sequences that matter, driven through a real monitor (its
window reader and tail policy) on a scripted engine that follows the engine's tail, since
and until rules (tests/unit/scripted_engine.py): every line once, and the requests the
policy makes, with their reasons (docs/capture.md, "Tails", "Checked times")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from log_capturer.discovery.container import ContainerInfo
from log_capturer.docker.stream import StreamEnd
from log_capturer.metrics.registry import LINES_RESENT, PROOF_READS, TAIL_FALLBACKS
from log_capturer.monitor.config import MonitorConfig
from log_capturer.monitor.container_monitor import ContainerMonitor
from log_capturer.monitor.policy import (
    DueProof,
    Gap,
    GapReason,
    ProofReason,
    TailPolicy,
)
from log_capturer.pipeline.batch import Batch
from log_capturer.pipeline.queue import BatchQueue
from log_capturer.positions.ledger import Ledger
from log_capturer.positions.marks import Mark
from tests.unit.scripted_engine import MS, Later, S, ScriptedEngine

INFO = ContainerInfo(id="5c" * 32, name="scripted", image="img:1", running=True)
CONFIG = MonitorConfig(
    stream_window=0.4,  # grace 0.1 s
    reorder_tolerance=0.1,
    resume_tail_lines=100,
    resume_tail_max_lines=5000,
)


def monitor(
    tmp_path: Path, engine: ScriptedEngine, marks: dict[str, Mark] | None = None,
    checked: dict[str, int] | None = None,
) -> tuple[ContainerMonitor, BatchQueue]:
    ledger = Ledger(str(tmp_path / "positions.json"))
    ledger.load([])
    position = ledger.begin_reading(INFO, ("stdout", "stderr"), start_now=False)
    assert position is not None
    position.read.update(marks or {})
    position.delivered.update(marks or {})
    position.checked.update(checked or {})  # saved with the positions (delivered)
    queue = BatchQueue(1_000_000, 1 << 30)
    mon = ContainerMonitor(
        INFO, cast(Any, None), queue, CONFIG, position, lambda m: None, ledger, source=engine
    )
    return mon, queue


def delivered(queue: BatchQueue) -> list[str]:
    out: list[str] = []
    while True:
        batches: list[Batch] = queue.get(1_000_000, 0.0, 0.0)
        if not batches:
            return out
        for batch in batches:
            out += batch.texts()


def count(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def both(stdout: Mark) -> dict[str, Mark]:
    """Read up to ``stdout`` on stdout; stderr (which wrote nothing) as far."""
    return {"stdout": stdout, "stderr": Mark(stdout.ts_ns, 0)}


def burst(engine: ScriptedEngine, n: int, age_s: float, stream: str = "stdout") -> int:
    """``n`` lines written ``age_s`` ago, 1 ms apart; the timestamp of the last."""
    start = time.time_ns() - int(age_s * S)
    for i in range(n):
        engine.write(stream, start + i * MS, f"{stream} {i}")
    return start + (n - 1) * MS


def test_a_burst_then_quiet_is_proven_once_and_not_sent_again(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    burst(engine, 600, age_s=3)
    mon, queue = monitor(tmp_path, engine)
    resend_before = count(PROOF_READS, "resend")

    mon._window(follow=True)  # the first read: plain since, the burst, then quiet
    assert [(s.tail, s.follow, s.lines) for s in engine.sent] == [(0, True, 600)]
    assert mon.policy.due == DueProof(ProofReason.RESEND)  # a reopen would send it again

    mon._window(follow=True)  # a proof read (not follow, a tail), then the follow read
    proof, follow = engine.sent[1:]
    # From the checked time (the last line) less twice the tolerance: 200 ms of the burst.
    assert (proof.follow, proof.end, proof.lines) == (False, StreamEnd.EOF, 201)
    assert proof.tail > 201  # sized to what it sends again: proven by the engine's end
    assert count(PROOF_READS, "resend") == resend_before + 1
    assert mon.policy.due is None
    assert follow.follow and follow.lines == 0  # past the burst: nothing known comes again

    mon._window(follow=True)  # quiet: no proof, a small tail, nothing sent again
    assert [(s.follow, s.lines) for s in engine.sent[3:]] == [(True, 0)]
    assert engine.sent[3].tail <= CONFIG.resume_tail_lines + 32
    assert delivered(queue) == [f"stdout {i}" for i in range(600)]


def test_lines_a_rotation_sends_again_are_delivered_once(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    written = [("stdout", f"line {i}") for i in range(6)]
    engine.later.append(Later(written, repeat=3))  # rotated: the last 3 come again
    mon, queue = monitor(tmp_path, engine)
    resent_before = count(LINES_RESENT, "stdout")
    mon._window(follow=True)
    assert engine.sent[0].lines == 9
    assert delivered(queue) == [f"line {i}" for i in range(6)]
    assert count(LINES_RESENT, "stdout") == resent_before + 3


def test_an_end_after_until_settles_nothing_and_is_read_again_plain(tmp_path: Path) -> None:
    """The request waited for its connection past ``until``; a line written meanwhile,
    stamped after ``until``, ends the body short of the tail: that end proves nothing."""
    engine = ScriptedEngine(wait_past_until=True)
    last = burst(engine, 50, age_s=1)
    mon, queue = monitor(tmp_path, engine, marks=both(Mark(last - 40 * MS, 1)))
    mon.policy.rate = 50.0  # a busy container: a tail of more than 50
    until_before = count(TAIL_FALLBACKS, "until")
    assert mon._window(follow=True) is False  # the engine's end came after until
    tail_read, plain = engine.sent
    assert tail_read.tail > 50 and tail_read.end is StreamEnd.EOF
    assert count(TAIL_FALLBACKS, "until") == until_before + 1
    assert (plain.tail, plain.follow, plain.until_ns) == (0, True, tail_read.until_ns)
    assert delivered(queue) == [f"stdout {i}" for i in range(10, 50)]
    # The next window's tail read gets the line written after ``until``, but the quiet
    # stream is ended by our deadline, not the engine: the tail is not proven, the line
    # is held, and a proof read is due for it.
    mon._window(follow=True)
    assert delivered(queue) == []
    assert engine.sent[2].lines == 1 and engine.sent[2].end is StreamEnd.DEADLINE
    assert mon.policy.due == DueProof(ProofReason.UNPROVEN, engine.sent[2].tail)
    mon._window(follow=True)  # its end settles it: delivered once
    assert (engine.sent[3].follow, engine.sent[3].end) == (False, StreamEnd.EOF)
    assert delivered(queue) == ["written while the request waited"]
    assert mon.policy.due is None


def test_a_tail_too_short_for_a_quiet_backlog_is_escalated_by_proof_reads(
    tmp_path: Path,
) -> None:
    engine = ScriptedEngine()
    first = burst(engine, 1000, age_s=3) - 999 * MS
    mon, queue = monitor(tmp_path, engine, marks=both(Mark(first + 99 * MS, 1)))
    quiet_before = count(PROOF_READS, "quiet_gap")
    full_before = count(TAIL_FALLBACKS, "full")
    mon._window(follow=True)
    tails = [(s.tail, s.follow) for s in engine.sent]
    # A quiet stream's tail (32) is full; the log is quiet, so proof reads settle it by
    # the engine's end, 10x larger each time; then the window's follow read.
    assert tails[:3] == [(32, True), (320, False), (3200, False)]
    assert tails[3][1] is True and len(tails) == 4
    assert count(PROOF_READS, "quiet_gap") == quiet_before + 1
    assert count(TAIL_FALLBACKS, "full") == full_before + 2
    assert delivered(queue) == [f"stdout {i}" for i in range(100, 1000)]
    assert engine.sent[3].lines == 0  # proven past the backlog: nothing sent again


def test_a_restart_from_a_saved_checked_time_sends_nothing_known(tmp_path: Path) -> None:
    engine = ScriptedEngine()
    last = burst(engine, 50, age_s=3)
    checked_ns = time.time_ns() - 2 * S  # proven after the burst, saved with the positions
    engine.later.append(Later([("stdout", "after the restart")]))
    mon, queue = monitor(
        tmp_path, engine, marks=both(Mark(last, 1)),
        checked={"stdout": checked_ns, "stderr": checked_ns},
    )
    mon._window(follow=True)
    [reopen] = engine.sent
    assert reopen.tail == 32  # a silent stream's tail
    assert reopen.since_ns == checked_ns - int(CONFIG.reorder_tolerance * S)
    assert reopen.lines == 1  # nothing of the history, the new line
    assert delivered(queue) == ["after the restart"]


# -- the policy alone -------------------------------------------------------------------------


def policy() -> TailPolicy:
    return TailPolicy(100, 5000, 0.1, 0.1, 10 * S, now=0.0)


def test_escalation_is_tenfold_for_a_full_tail_and_plain_otherwise() -> None:
    p = policy()
    assert p.escalate(32, Gap(GapReason.FULL)) == 320
    assert p.escalate(3200, Gap(GapReason.FULL)) == 5000
    assert p.escalate(5000, Gap(GapReason.FULL)) == 0
    for reason in (GapReason.HELD_BYTES, GapReason.BUDGET, GapReason.UNTIL):
        assert p.escalate(32, Gap(reason)) == 0
    assert p.gap(GapReason.FULL, newest_age_ns=S).quiet
    assert not p.gap(GapReason.FULL, newest_age_ns=MS).quiet
    assert not p.gap(GapReason.HELD_BYTES, newest_age_ns=S).quiet


def test_an_unproven_tail_is_proven_with_at_least_what_it_held() -> None:
    p = policy()
    p.unproven(700)
    assert p.proof_tail(40) == 700
    assert p.proof_tail(0) == 0  # no tail to ask for: a plain proof read, still due
    p.proof_ended(ProofReason.UNPROVEN, settled=False)
    assert p.due == DueProof(ProofReason.UNPROVEN, 700)  # cut: proven next window
    p.proof_ended(ProofReason.UNPROVEN, settled=True)
    assert p.due is None


def test_a_resend_proof_without_a_tail_is_dropped() -> None:
    p = policy()
    p.due = DueProof(ProofReason.RESEND)
    assert p.proof_tail(0) is None and p.due is None
