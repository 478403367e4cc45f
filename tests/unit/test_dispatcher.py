"""The dispatcher's own behaviour, with scripted sinks: retries with capped backoff,
acknowledgement only after every sink accepted a delivery, giving up at shutdown,
checkpoints that fail, and what a positions save holds. (Stages flushed at stop:
test_stages.py; positions on a really full disk: test_full_disk.py.)"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY

from log_capturer.discovery.container import ContainerInfo
from log_capturer.pipeline.batch import Batch
from log_capturer.pipeline.config import PipelineConfig
from log_capturer.pipeline.dispatcher import Dispatcher
from log_capturer.pipeline.queue import BatchQueue
from log_capturer.pipeline.reconfigure import Reconfiguration
from log_capturer.positions.ledger import Ledger
from log_capturer.positions.marks import Mark
from log_capturer.positions.store import PositionFile, SavedPositions
from log_capturer.sinks.base import Sink, SinkError

from .batches import line_batch

WEB = ContainerInfo(id="d" * 64, name="web", image="app:1")
T0 = 1_795_000_000_000_000_000
FOREVER = -1


class ScriptedSink(Sink):
    """Records what it accepts; its next writes or checkpoints fail as the test says
    (a count, or ``FOREVER``). Its checkpoint state is how many lines it accepted."""

    def __init__(
        self,
        name: str,
        fail_writes: int = 0,
        fail_checkpoints: int = 0,
        wants_checkpoint: bool = False,
    ) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.fail_writes = fail_writes
        self.fail_checkpoints = fail_checkpoints
        self.wants = wants_checkpoint
        self.accepted: list[list[str]] = []  # the messages of each delivery it accepted
        self.attempts = 0
        self.events: list[str] = []

    @staticmethod
    def _take(budget: int) -> tuple[bool, int]:
        return budget != 0, budget - 1 if budget > 0 else budget

    def write(self, batches: list[Batch]) -> None:
        with self.lock:
            self.attempts += 1
            fail, self.fail_writes = self._take(self.fail_writes)
            if fail:
                self.events.append("write_failed")
                raise SinkError("connection refused")
            self.accepted.append([text for batch in batches for text in batch.texts()])
            self.events.append("write")

    def lines(self) -> int:
        with self.lock:
            return sum(map(len, self.accepted))

    def wants_checkpoint(self) -> bool:
        return self.wants

    def checkpoint(self) -> Any:
        with self.lock:
            fail, self.fail_checkpoints = self._take(self.fail_checkpoints)
            if fail:
                self.events.append("checkpoint_failed")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.events.append("checkpoint")
            return {"lines": sum(map(len, self.accepted))}

    def count(self, event: str) -> int:
        with self.lock:
            return self.events.count(event)


class StatelessSink(ScriptedSink):
    """A sink with nothing to save (stdout): absent from the positions file's sinks."""

    def checkpoint(self) -> Any:
        super().checkpoint()
        return None


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until true; the timeout only keeps a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def abandoned(sink: str) -> float:
    value = REGISTRY.get_sample_value(
        "log_capturer_sink_records_total", {"sink": sink, "status": "abandoned"}
    )
    return value or 0.0


def gave_up(logs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (e["sink"], e["records"]) for e in logs if e["event"] == "sink_batch_abandoned_at_shutdown"
    ]


def line(n: int) -> tuple[str, int, str]:
    return ("stdout", T0 + n, f"line {n}")


def put(queue: BatchQueue, *numbers: int) -> None:
    """One read (a batch) holding lines ``numbers``."""
    assert queue.put(line_batch(WEB, [line(n) for n in numbers]), threading.Event())


def upto(n: int) -> dict[str, Mark]:
    return {"stdout": Mark(T0 + n, 1)}


def make(
    tmp_path: Path, sinks: list[Sink], flush_interval: float = 0.02
) -> tuple[Dispatcher, BatchQueue, Ledger]:
    queue = BatchQueue(1000, 10**6)
    ledger = Ledger(str(tmp_path / "positions.json"))
    assert ledger.begin_reading(WEB, ("stdout",), start_now=False) is not None
    config = PipelineConfig(batch_wait=0.01)
    return Dispatcher(queue, sinks, ledger, config, flush_interval), queue, ledger


def saved(tmp_path: Path) -> SavedPositions:
    return PositionFile(tmp_path / "positions.json").load()


def test_a_failing_sink_is_retried_with_capped_backoff_and_acknowledged_after_every_sink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, flaky = ScriptedSink("good"), ScriptedSink("flaky", fail_writes=9)
    dispatcher, queue, ledger = make(tmp_path, [good, flaky])
    waits: list[float] = []
    looked = threading.Event()

    def sleep(seconds: float) -> None:  # the retry's wait, recorded instead of slept
        waits.append(seconds)
        if len(waits) == 9:
            looked.wait(30)  # the last wait lasts until the test has looked

    monkeypatch.setattr(dispatcher._writer, "_sleep", sleep)
    put(queue, 1, 2)
    put(queue, 3)
    dispatcher.start()
    try:
        wait_for(lambda: len(waits) == 9, "nine failed writes to the flaky sink")
        assert good.accepted == [["line 1", "line 2", "line 3"]]
        assert flaky.accepted == []
        assert ledger.delivered(WEB.id) == {}  # one sink has it: not acknowledged
        looked.set()
        wait_for(lambda: ledger.delivered(WEB.id) == upto(3), "the delivery acknowledged")
    finally:
        looked.set()
        dispatcher.stop(timeout=10)
    assert flaky.accepted == [["line 1", "line 2", "line 3"]] and flaky.attempts == 10
    assert good.accepted == [["line 1", "line 2", "line 3"]]  # not written again
    for attempt, wait in enumerate(waits, 1):  # doubling from 0.2 s, capped at 10 s, jittered
        nominal = min(10.0, 0.2 * 2 ** (attempt - 1))
        assert nominal / 2 <= wait <= nominal, (attempt, wait)
    assert saved(tmp_path).marks == {WEB.id: upto(3)}


def test_shutdown_gives_up_on_a_sink_that_never_accepts_acknowledging_nothing(
    tmp_path: Path,
) -> None:
    ok, down = ScriptedSink("ok"), ScriptedSink("down", fail_writes=FOREVER)
    dispatcher, queue, ledger = make(tmp_path, [ok, down])
    put(queue, 1, 2)
    put(queue, 3, 4, 5)
    before = {name: abandoned(name) for name in ("ok", "down")}
    with structlog.testing.capture_logs() as logs:
        dispatcher.start()
        wait_for(lambda: down.attempts >= 2, "a retry of the down sink")
        put(queue, 6)  # still queued at the stop
        dispatcher.stop(timeout=0)  # no time to drain: give up at once
    assert not dispatcher.alive
    assert abandoned("down") == before["down"] + 5  # lines, not batches
    assert abandoned("ok") == before["ok"]  # it accepted them
    assert ledger.delivered(WEB.id) == {}
    final = saved(tmp_path)  # the final save ran, without this container
    assert (tmp_path / "positions.json").exists() and WEB.id not in final.marks
    assert gave_up(logs) == [("down", 5)]
    assert [e["records"] for e in logs if e["event"] == "queue_abandoned_at_shutdown"] == [1]


def test_shutdown_gives_up_on_a_checkpoint_that_keeps_failing_writing_nothing(
    tmp_path: Path,
) -> None:
    """A sink that needs positions saved before its next write (the file sink, about to
    rotate) on a full disk: at shutdown nothing is written, acknowledged or saved."""
    rotating = ScriptedSink("rotating", fail_checkpoints=FOREVER, wants_checkpoint=True)
    dispatcher, queue, ledger = make(tmp_path, [rotating])
    put(queue, 1, 2)
    before = abandoned("rotating")
    with structlog.testing.capture_logs() as logs:
        dispatcher.start()
        wait_for(lambda: rotating.count("checkpoint_failed") >= 2, "a retried checkpoint")
        dispatcher.stop(timeout=0)
    assert not dispatcher.alive
    assert rotating.accepted == [] and rotating.attempts == 0
    assert abandoned("rotating") == before + 2
    assert ledger.delivered(WEB.id) == {}
    assert not (tmp_path / "positions.json").exists()
    assert gave_up(logs) == [("rotating", 2)]


def test_a_write_that_needs_a_checkpoint_waits_for_one_that_succeeds(tmp_path: Path) -> None:
    rotating = ScriptedSink("rotating", fail_checkpoints=2, wants_checkpoint=True)
    dispatcher, queue, ledger = make(tmp_path, [rotating])
    put(queue, 1)
    dispatcher.start()
    try:
        wait_for(lambda: ledger.delivered(WEB.id) == upto(1), "the delivery acknowledged")
    finally:
        dispatcher.stop(timeout=10)
    events = rotating.events
    assert events[:4] == ["checkpoint_failed", "checkpoint_failed", "checkpoint", "write"]


def test_positions_wait_for_a_sink_checkpoint_that_fails_and_are_saved_once_it_works(
    tmp_path: Path,
) -> None:
    sink = ScriptedSink("flaky", fail_checkpoints=FOREVER)
    dispatcher, queue, _ = make(tmp_path, [sink])
    put(queue, 1, 2, 3)
    with structlog.testing.capture_logs() as logs:
        dispatcher.start()
        try:
            wait_for(lambda: sink.lines() == 3, "the lines written")
            wait_for(lambda: sink.count("checkpoint_failed") >= 3, "checkpoints retried")
            # The sink's records are not durable: positions must not move past them.
            assert not (tmp_path / "positions.json").exists()
            with sink.lock:
                sink.fail_checkpoints = 0
            wait_for(lambda: saved(tmp_path).marks == {WEB.id: upto(3)}, "positions saved")
        finally:
            dispatcher.stop(timeout=10)
    assert saved(tmp_path).sinks == {"flaky": {"lines": 3}}
    events = [e["event"] for e in logs]
    assert events.count("checkpoint_failed") == 1  # one warning per episode
    assert "checkpoint_recovered" in events


def test_every_positions_save_holds_the_marks_and_sink_states_of_one_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = ScriptedSink("first"), ScriptedSink("second")
    dispatcher, queue, ledger = make(tmp_path, [first, second, StatelessSink("stdout")])
    saves: list[SavedPositions] = []
    real_save = ledger.file.save

    def save(positions: SavedPositions) -> None:
        saves.append(positions)
        real_save(positions)

    monkeypatch.setattr(ledger.file, "save", save)
    dispatcher.start()
    try:
        for n in range(1, 41):
            put(queue, n)
            if n % 10 == 0:  # let a save happen between groups of lines
                wait_for(lambda n=n: saves and saves[-1].marks.get(WEB.id) == upto(n), "a save")
    finally:
        dispatcher.stop(timeout=10)
    assert len({str(s.marks) for s in saves}) >= 4
    for positions in saves:
        marks = positions.marks.get(WEB.id)
        lines = marks["stdout"].ts_ns - T0 if marks else 0
        assert positions.sinks == {"first": {"lines": lines}, "second": {"lines": lines}}
    assert saved(tmp_path).marks == {WEB.id: upto(40)}
    assert saved(tmp_path).sinks == {"first": {"lines": 40}, "second": {"lines": 40}}


# -- reconfiguration (a reload) ---------------------------------------------------------


class Journalled(ScriptedSink):
    """A ScriptedSink whose writes (of the first line of each delivery), close and
    creation go to a journal shared with the other sinks."""

    def __init__(self, name: str, journal: list[str], *, gate: threading.Event | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.journal = journal
        self.gate = gate
        journal.append(f"built {name}")

    def write(self, batches: list[Batch]) -> None:
        if self.gate is not None:
            self.gate.wait(30)
        super().write(batches)
        self.journal.append(f"{self.name} got {batches[0].texts()[0]}")

    def close(self) -> None:
        self.journal.append(f"closed {self.name}")


def reconfigure(
    dispatcher: Dispatcher, sinks: list[str], build: dict[str, Callable[[], Sink]]
) -> tuple[threading.Thread, Reconfiguration]:
    """Ask for a reconfiguration from another thread (the supervisor's main loop)."""
    change = Reconfiguration(dispatcher.config, dispatcher.flush_interval, sinks, build)
    caller = threading.Thread(
        target=dispatcher.reconfigure, args=(change, threading.Event()), daemon=True
    )
    caller.start()
    wait_for(lambda: dispatcher._pending is change or change.done.is_set(), "handed over")
    return caller, change


def test_a_reload_drains_what_is_queued_to_the_old_sinks_then_swaps_them(
    tmp_path: Path,
) -> None:
    """The lines queued when the reload is asked for reach the sink being removed and the
    one being replaced; both are closed before the replacement is built; the new sinks
    receive what comes after; positions follow every sink of each moment."""
    journal: list[str] = []
    gate = threading.Event()
    keep = Journalled("keep", journal, gate=gate)
    removed, changed = Journalled("removed", journal), Journalled("changed", journal)
    dispatcher, queue, ledger = make(tmp_path, [keep, removed, changed])
    dispatcher.start()
    try:
        put(queue, 1)
        wait_for(lambda: keep.attempts == 0 and not queue, "a delivery in progress")
        put(queue, 2)
        put(queue, 3)  # queued while the delivery of line 1 is held by "keep"
        caller, change = reconfigure(
            dispatcher,
            ["keep", "changed", "added"],
            {
                "changed": lambda: Journalled("changed", journal),
                "added": lambda: Journalled("added", journal),
            },
        )
        gate.set()
        caller.join(10)
        assert change.done.is_set() and change.errors == []
        assert [s.name for s in dispatcher.sinks] == ["keep", "changed", "added"]
        put(queue, 4)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(4), "line 4 acknowledged")
    finally:
        gate.set()
        dispatcher.stop(timeout=10)
    for old in (removed, changed):
        assert [m for d in old.accepted for m in d] == ["line 1", "line 2", "line 3"]
    assert [m for d in keep.accepted for m in d] == ["line 1", "line 2", "line 3", "line 4"]
    swap = journal.index("built changed", journal.index("closed changed"))
    assert journal.index("closed removed") < swap < journal.index("built added")
    assert journal.index("removed got line 2") < journal.index("closed removed")
    new = [s for s in dispatcher.sinks if s.name != "keep"]
    assert [[m for d in s.accepted for m in d] for s in new] == [["line 4"], ["line 4"]]
    assert set(saved(tmp_path).sinks) == {"keep", "changed", "added"}


def test_a_removed_sink_that_is_down_no_longer_holds_positions_back(tmp_path: Path) -> None:
    """It gets drain_timeout for what is queued, then is given up on (counted); the
    lines are acknowledged for the sinks that stay."""
    journal: list[str] = []
    keep, down = Journalled("keep", journal), Journalled("down", journal, fail_writes=FOREVER)
    dispatcher, queue, ledger = make(tmp_path, [keep, down])
    dispatcher.config = PipelineConfig(batch_wait=0.01, drain_timeout=0.3)
    before = abandoned("down")
    with structlog.testing.capture_logs() as logs:
        dispatcher.start()
        try:
            put(queue, 1)
            wait_for(lambda: down.attempts >= 1, "a failed write")
            put(queue, 2)
            caller, change = reconfigure(dispatcher, ["keep"], {})
            caller.join(30)
            assert change.done.is_set()
            assert "closed down" in journal
            wait_for(lambda: ledger.delivered(WEB.id) == upto(2), "both lines acknowledged")
        finally:
            dispatcher.stop(timeout=10)
    assert [m for d in keep.accepted for m in d] == ["line 1", "line 2"]
    assert abandoned("down") == before + 2
    assert [e["event"] for e in logs].count("sink_batch_abandoned_at_reload") == 1


def test_what_a_replaced_sink_does_not_take_goes_to_its_replacement(tmp_path: Path) -> None:
    """A sink replaced because its settings changed (Loki's URL fixed) and down: the
    deliveries it gives up on go to its replacement before they are acknowledged."""
    journal: list[str] = []
    keep, broken = Journalled("keep", journal), Journalled("loki", journal, fail_writes=FOREVER)
    dispatcher, queue, ledger = make(tmp_path, [keep, broken])
    dispatcher.config = PipelineConfig(batch_wait=0.01, drain_timeout=0.3)
    dispatcher.start()
    fixed: list[Journalled] = []

    def build() -> Sink:
        fixed.append(Journalled("loki", journal))
        return fixed[-1]

    try:
        put(queue, 1)
        wait_for(lambda: broken.attempts >= 1, "a failed write")
        put(queue, 2)
        caller, _ = reconfigure(dispatcher, ["keep", "loki"], {"loki": build})
        caller.join(30)
        put(queue, 3)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(3), "every line acknowledged")
    finally:
        dispatcher.stop(timeout=10)
    assert broken.accepted == []
    assert [m for d in fixed[0].accepted for m in d] == ["line 1", "line 2", "line 3"]
    assert [m for d in keep.accepted for m in d] == ["line 1", "line 2", "line 3"]


def test_a_sink_that_cannot_start_leaves_the_old_one_running(tmp_path: Path) -> None:
    journal: list[str] = []
    old = Journalled("loki", journal)
    dispatcher, queue, ledger = make(tmp_path, [old])
    restored: list[Journalled] = []

    def broken() -> Sink:
        raise OSError("spool directory not writable")

    def restore() -> Sink:
        restored.append(Journalled("loki", journal))
        return restored[-1]

    change = Reconfiguration(dispatcher.config, 0.02, ["loki"], {"loki": broken},
                             {"loki": restore})
    dispatcher.start()
    try:
        assert dispatcher.reconfigure(change, threading.Event())
        put(queue, 1)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(1), "line 1 acknowledged")
    finally:
        dispatcher.stop(timeout=10)
    assert change.failed == ["loki"] and "spool directory not writable" in change.errors[0]
    assert [m for d in restored[0].accepted for m in d] == ["line 1"]


# -- pipelined sinks (the network sinks: deliveries taken ahead, accepted later) -------------


class PipelinedSink(Sink):
    """Takes deliveries ahead (``submit``: a ticket each) and accepts them when the test
    releases them; ``fail()`` drops what is not accepted, as a network sink's pipeline
    does when its spool is full. ``write`` (the way back after a failure) accepts at
    once."""

    pipelined = True

    def __init__(self, name: str, accept_on_flush: bool = False) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.taken: list[list[str]] = []  # per ticket, in order: what each delivery held
        self.written: list[list[str]] = []  # deliveries written synchronously
        self.through = 0
        self.lost = 0
        self.broken = False
        self.flushes = 0
        self.accept_on_flush = accept_on_flush

    def submit(self, batches: list[Batch], timeout: float | None) -> int | None:
        with self.cond:
            if self.broken:
                raise SinkError("spool full")
            self.taken.append([text for batch in batches for text in batch.texts()])
            self.cond.notify_all()
            return len(self.taken)

    def wait_room(self, timeout: float | None) -> bool:
        return True

    def accepted(self) -> int:
        with self.cond:
            return self.through

    def wait(self, ticket: int, timeout: float | None) -> bool:
        deadline = time.monotonic() + (timeout or 0.0)
        with self.cond:
            while ticket > self.through:
                if ticket <= self.lost or self.broken:
                    raise SinkError("dropped")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    @property
    def failed(self) -> bool:
        with self.cond:
            return self.broken

    def flush(self) -> None:
        with self.cond:
            self.flushes += 1
            if self.accept_on_flush:
                self.through = len(self.taken)
                self.cond.notify_all()

    def release(self, ticket: int) -> None:
        with self.cond:
            self.through = max(self.through, ticket)
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            self.broken = True
            self.lost = len(self.taken)
            self.cond.notify_all()

    def write(self, batches: list[Batch]) -> None:
        with self.cond:
            self.broken = False
            self.written.append([text for batch in batches for text in batch.texts()])
            self.taken.append(self.written[-1])
            self.through = len(self.taken)
            self.cond.notify_all()

    def tickets(self) -> int:
        with self.cond:
            return len(self.taken)


def deliver_one_by_one(queue: BatchQueue, sink: PipelinedSink, *numbers: int) -> None:
    """Each line its own delivery: the next is queued once the sink took the previous."""
    for n in numbers:
        taken = sink.tickets()
        put(queue, n)
        wait_for(lambda taken=taken: sink.tickets() > taken, f"line {n} taken")


def test_a_pipelined_sink_takes_deliveries_ahead_acknowledged_in_order_once_accepted(
    tmp_path: Path,
) -> None:
    file, loki = ScriptedSink("file"), PipelinedSink("loki")
    dispatcher, queue, ledger = make(tmp_path, [file, loki])
    before = REGISTRY.get_sample_value(
        "log_capturer_sink_records_total", {"sink": "loki", "status": "accepted"}) or 0.0
    dispatcher.start()
    try:
        deliver_one_by_one(queue, loki, 1, 2, 3)  # taken while none is accepted
        assert loki.taken == [["line 1"], ["line 2"], ["line 3"]]
        assert ledger.delivered(WEB.id) == {}
        loki.release(2)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(2), "the first two acknowledged")
        dispatcher.checkpoint(force=True)  # from the test: the dispatcher only waits now
        assert saved(tmp_path).marks == {WEB.id: upto(2)}
        loki.release(3)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(3), "the third acknowledged")
    finally:
        dispatcher.stop(timeout=10)
    assert file.accepted == [["line 1"], ["line 2"], ["line 3"]]
    assert loki.written == []  # nothing was written twice
    after = REGISTRY.get_sample_value(
        "log_capturer_sink_records_total", {"sink": "loki", "status": "accepted"})
    assert after == before + 3  # counted as accepted writes are


def test_a_pipelined_sink_that_fails_gets_what_it_dropped_written_again_in_order(
    tmp_path: Path,
) -> None:
    loki = PipelinedSink("loki")
    dispatcher, queue, ledger = make(tmp_path, [loki])
    dispatcher.start()
    try:
        deliver_one_by_one(queue, loki, 1, 2, 3)
        loki.release(1)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(1), "the first acknowledged")
        loki.fail()  # 2 and 3 dropped: the dispatcher writes them again, in order
        wait_for(lambda: ledger.delivered(WEB.id) == upto(3), "all acknowledged")
        deliver_one_by_one(queue, loki, 4)  # and takes the next ones ahead again
    finally:
        dispatcher.stop(timeout=10)
    assert loki.written == [["line 2"], ["line 3"]]
    assert loki.taken[-1] == ["line 4"] and loki.flushes >= 1  # the stop flushed it


def test_stop_flushes_a_pipelined_sink_and_acknowledges_what_it_accepts(tmp_path: Path) -> None:
    loki = PipelinedSink("loki", accept_on_flush=True)
    dispatcher, queue, ledger = make(tmp_path, [loki])
    dispatcher.start()
    deliver_one_by_one(queue, loki, 1, 2)
    assert ledger.delivered(WEB.id) == {}
    dispatcher.stop(timeout=10)
    assert saved(tmp_path).marks == {WEB.id: upto(2)}


def test_shutdown_gives_up_on_a_pipelined_sink_that_never_accepts(tmp_path: Path) -> None:
    file, loki = ScriptedSink("file"), PipelinedSink("loki")
    dispatcher, queue, ledger = make(tmp_path, [file, loki])
    dispatcher.start()
    deliver_one_by_one(queue, loki, 1, 2)
    before = abandoned("loki")
    dispatcher.stop(timeout=0.2)
    assert not dispatcher.alive
    assert ledger.delivered(WEB.id) == {}  # the file sink has them, Loki does not
    assert abandoned("loki") == before + 1  # the first held one, then the wait ends
    assert WEB.id not in saved(tmp_path).marks


def test_a_removed_pipelined_sink_that_never_accepts_no_longer_holds_positions_back(
    tmp_path: Path,
) -> None:
    journal: list[str] = []
    keep, loki = Journalled("keep", journal), PipelinedSink("loki")
    dispatcher, queue, ledger = make(tmp_path, [keep, loki])
    dispatcher.config = PipelineConfig(batch_wait=0.01, drain_timeout=0.3)
    before = abandoned("loki")
    dispatcher.start()
    try:
        deliver_one_by_one(queue, loki, 1, 2)
        caller, change = reconfigure(dispatcher, ["keep"], {})
        caller.join(30)
        assert change.done.is_set()
        wait_for(lambda: ledger.delivered(WEB.id) == upto(2), "both lines acknowledged")
    finally:
        dispatcher.stop(timeout=10)
    assert abandoned("loki") == before + 2  # given up after drain_timeout, counted


def test_a_file_sink_beside_a_held_delivery_recovers_it_after_a_crash_not_twice(
    tmp_path: Path,
) -> None:
    """A positions save while Loki has not accepted deliveries the file already holds:
    the file's saved state must not run ahead of the saved positions, or the restart
    re-reads the delivery from the engine and the file gets it twice (seen in
    test_loki_delivery's SIGKILL test: 150 duplicates)."""
    from log_capturer.sinks.file import FileSink, FileSinkConfig

    def file_sink() -> FileSink:
        return FileSink(FileSinkConfig(path=str(tmp_path / "logs.jsonl")))

    file, loki = file_sink(), PipelinedSink("loki")
    dispatcher, queue, ledger = make(tmp_path, [file, loki])
    file.recover({}, None)
    dispatcher.start()
    try:
        deliver_one_by_one(queue, loki, 1, 2)
        loki.release(1)
        wait_for(lambda: ledger.delivered(WEB.id) == upto(1), "the first acknowledged")
        deliver_one_by_one(queue, loki, 3)
        dispatcher.checkpoint(force=True)  # 2 and 3 in the file, held for Loki
        crashed = saved(tmp_path)
    finally:
        dispatcher._abandon.set()  # the crash: nothing more is settled or saved
        dispatcher.stop(timeout=5)
    assert crashed.marks == {WEB.id: upto(1)}
    restarted = file_sink()
    held = restarted.recover(crashed.marks, crashed.sinks["file"])
    assert held[WEB.id] == upto(3)  # the file knows it holds 2 and 3 ...
    restarted.write([line_batch(WEB, [line(n) for n in (2, 3, 4)])])  # ... read again
    restarted.close()
    rows = (tmp_path / "logs.jsonl").read_text().splitlines()
    texts = [json.loads(row)["message"] for row in rows]
    assert texts == ["line 1", "line 2", "line 3", "line 4"]
