"""The dispatcher's own behaviour, with scripted sinks: retries with capped backoff,
acknowledgement only after every sink accepted a delivery, giving up at shutdown,
checkpoints that fail, and what a positions save holds. (Stages flushed at stop:
test_stages.py; positions on a really full disk: test_full_disk.py.)"""

from __future__ import annotations

import errno
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
    assert ledger.open(WEB, ("stdout",), start_now=False) is not None
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

    monkeypatch.setattr(dispatcher, "_sleep", sleep)
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
