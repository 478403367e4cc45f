"""The supervisor's own decisions, with the fake engine and stand-in monitors: which
containers get a monitor (events, re-lists, a gap, a restart, a stop while the daemon
was down), when a container's position is forgotten, and the shutdown order.

Discovery, the ledger and the dispatcher are the real ones; the engine is
tests/unit/fake_engine.py and each monitor a :class:`FakeMonitor` that the test ends.
Reading a container to its end is the monitor's and the engine's job: tested against
the real engine in tests/integration (test_capture.py, test_lifecycle.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from prometheus_client import REGISTRY

from log_capturer import supervisor as supervisor_module
from log_capturer.buffers import BufferBudget
from log_capturer.config.loader import Config
from log_capturer.discovery.container import ContainerInfo
from log_capturer.discovery.node import HostConfig
from log_capturer.docker.config import DockerConfig
from log_capturer.docker.engine import DockerEngine
from log_capturer.monitor.config import MonitorConfig
from log_capturer.monitor.container_monitor import ContainerMonitor
from log_capturer.pipeline.batch import Batch
from log_capturer.pipeline.config import PipelineConfig
from log_capturer.pipeline.queue import BatchQueue
from log_capturer.positions.ledger import ContainerPosition, Ledger, MonitorEnd
from log_capturer.positions.marks import Mark
from log_capturer.positions.store import PositionFile, PositionsConfig
from log_capturer.server.http import ServerConfig
from log_capturer.sinks.base import Sink
from log_capturer.supervisor import Supervisor
from log_capturer.timestamps import format_rfc3339_ns

from .batches import line_batch
from .fake_engine import NODE_NAME, FakeEngine

T0 = 1_795_000_000_000_000_000
LONG_AGO = "2020-01-01T00:00:00.000000000Z"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until true; the timeout only keeps a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


class Journal:
    """What happened, in order, across the test's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, Any]] = []

    def add(self, what: str, detail: Any = None) -> None:
        with self._lock:
            self.entries.append((what, detail))

    def index(self, what: str, detail: Any = None) -> int:
        """Where it first happened."""
        with self._lock:
            found = [i for i, e in enumerate(self.entries) if e == (what, detail)]
        assert found, f"{(what, detail)} never happened: {self.entries}"
        return found[0]


class FakeMonitor:
    """Stands in for a ContainerMonitor: queues what the test tells it to, and ends when
    the test says how (:meth:`finish`) or when stopped. ``last_words``: lines it queues
    once stopped, while the supervisor joins it (a read finishing at shutdown)."""

    made: list[FakeMonitor] = []
    journal = Journal()
    streams_for = staticmethod(ContainerMonitor.streams_for)

    def __init__(
        self,
        info: ContainerInfo,
        engine: DockerEngine,
        queue: BatchQueue,
        config: MonitorConfig,
        position: ContainerPosition,
        on_exit: Callable[[FakeMonitor], None],
        ledger: Ledger,
        buffers: BufferBudget | None = None,
    ) -> None:
        self.info = info
        self.queue = queue
        self.position = position
        self.started_from = dict(position.read)
        self.finished_reason: MonitorEnd | None = None
        self.last_words: list[int] = []
        self._on_exit = on_exit
        self._end = threading.Event()
        self._joined = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.made.append(self)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        self._end.wait()
        if self.last_words:
            self._joined.wait(10)
            self.deliver(*self.last_words)
        self.journal.add("monitor_ended", self.info.id)
        self._on_exit(self)

    def deliver(self, *numbers: int) -> None:
        """Queue lines ``numbers`` (line n is stamped T0 + n) as one read."""
        batch = line_batch(self.info, [("stdout", T0 + n, f"line {n}") for n in numbers])
        assert self.queue.put(batch, threading.Event())
        self.position.read.update(batch.ends)

    def finish(self, reason: MonitorEnd) -> None:
        self.finished_reason = reason
        self._end.set()
        self.thread.join(10)
        assert not self.alive

    def stop(self) -> None:
        self.finished_reason = self.finished_reason or MonitorEnd.STOPPED
        self._end.set()

    def join(self, timeout: float | None = None) -> None:
        self._joined.set()
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stream_age(self) -> float | None:
        return None

    def yield_turn(self) -> bool:
        return False

    def update_info(self, info: ContainerInfo) -> None:
        self.info = info


class JournalSink(Sink):
    name = "journal"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.closed = False

    def write(self, batches: list[Batch]) -> None:
        assert not self.closed, "written after close"
        self.journal.add("written", tuple(t for b in batches for t in b.texts()))

    def close(self) -> None:
        self.closed = True
        self.journal.add("sink_closed")


class Daemons:
    """Builds supervisors on the fake engine and shuts down whatever the test left running."""

    def __init__(self, tmp_path: Path, fake: FakeEngine) -> None:
        self.tmp_path = tmp_path
        self.fake = fake
        self.running: list[Supervisor] = []
        self.sink = JournalSink(FakeMonitor.journal)

    def start(
        self, relist_interval: float = 3600, host_name: str = "", connect: bool = True,
        **monitor: Any,
    ) -> Supervisor:
        config = Config(
            host=HostConfig(name=host_name),
            docker=DockerConfig(socket_path=self.fake.path, timeout=5, api_version="1.41"),
            container_monitor=MonitorConfig(
                relist_interval=relist_interval,
                retry_initial_backoff=0.01,
                retry_max_backoff=0.05,
                **monitor,
            ),
            positions=PositionsConfig(path=str(self.positions), flush_interval=0.02),
            pipeline=PipelineConfig(batch_wait=0.01),
            server=ServerConfig(listen="127.0.0.1:0"),
        )
        supervisor = Supervisor(config)
        self.running.append(supervisor)
        supervisor.start()
        if connect:
            wait_for(lambda: supervisor.watcher.connected, "discovery connected")
        return supervisor

    @property
    def positions(self) -> Path:
        return self.tmp_path / "positions.json"

    def saved(self) -> dict[str, dict[str, Mark]]:
        return PositionFile(self.positions).load().marks

    def shutdown(self) -> None:
        for supervisor in self.running:
            supervisor.shutdown()
        self.running.clear()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeEngine]:
    engine = FakeEngine(tmp_path / "engine.sock")
    yield engine
    engine.stop()


@pytest.fixture
def daemons(tmp_path: Path, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemons]:
    monkeypatch.setattr(FakeMonitor, "made", [])
    monkeypatch.setattr(FakeMonitor, "journal", Journal())
    monkeypatch.setattr(supervisor_module, "ContainerMonitor", FakeMonitor)
    made = Daemons(tmp_path, fake)
    monkeypatch.setattr(supervisor_module, "build_sinks", lambda config: [made.sink])
    yield made
    made.shutdown()


def monitors_of(container_id: str) -> list[FakeMonitor]:
    return [m for m in FakeMonitor.made if m.info.id == container_id]


def wait_monitor(container_id: str, count: int = 1) -> FakeMonitor:
    """The ``count``-th monitor started for the container."""
    wait_for(lambda: len(monitors_of(container_id)) >= count, f"monitor {count} of {container_id}")
    return monitors_of(container_id)[count - 1]


def relists() -> float:
    return REGISTRY.get_sample_value("log_capturer_discovery_relists_total") or 0.0


def after_a_relist() -> None:
    """Returns once a listing that started after this call has been handled (the
    watcher lists one at a time: the second one starting means the first returned)."""
    before = relists()
    wait_for(lambda: relists() >= before + 2, "a full relist")


def upto(n: int) -> dict[str, Mark]:
    return {"stdout": Mark(T0 + n, 1)}


def now_ts() -> str:
    return format_rfc3339_ns(time.time_ns())


# -- the node's name ----------------------------------------------------------------------


def test_no_container_is_read_before_the_engine_names_the_node(
    fake: FakeEngine, daemons: Daemons
) -> None:
    """/info failing at start: discovery retries with backoff, not ready, nothing read;
    once it answers, every monitor's container carries the engine's name."""
    fake.server.info = (500, {"message": "engine starting"})
    web = fake.add_container("web-1")
    supervisor = daemons.start(connect=False)
    wait_for(lambda: fake.requests.count("info") >= 6, "/info asked again after a backoff")
    assert fake.inspects(web) == 0 and FakeMonitor.made == []
    assert not supervisor.ready()[0] and not supervisor.watcher.connected
    fake.server.info = (200, {"Name": NODE_NAME})
    assert wait_monitor(web).info.host == NODE_NAME
    wait_for(lambda: supervisor.watcher.connected, "discovery connected")
    fake.emit("start", brief := fake.add_container("brief-1", running=False))
    fake.emit("die", brief)
    assert wait_monitor(brief).info.host == NODE_NAME
    first_inspect = fake.requests.index(f"containers/{web}/json")
    assert "info" not in fake.requests[first_inspect:]  # learnt before, once


def test_a_configured_node_name_is_used_without_asking_the_engine(
    fake: FakeEngine, daemons: Daemons
) -> None:
    web = fake.add_container("web-1")
    daemons.start(host_name="edge-7")
    assert wait_monitor(web).info.host == "edge-7"
    assert "info" not in fake.requests


# -- events -----------------------------------------------------------------------------


def test_start_and_die_events_start_one_monitor_per_captured_container(
    fake: FakeEngine, daemons: Daemons
) -> None:
    daemons.start(exclude_names=["skip-*"])
    skipped = fake.add_container("skip-1")
    web = fake.add_container("web-1")
    fake.emit("start", skipped)
    fake.emit("start", web)
    fake.emit("start", web)  # again (an event may come twice): one monitor reads it
    brief = fake.add_container("brief-1", running=False)
    fake.emit("die", brief)  # never seen running: what it left is read
    wait_monitor(brief)
    # Events are handled in order: by now every one of them was.
    assert [(m.info.name, m.info.running) for m in FakeMonitor.made] == [
        ("web-1", True),
        ("brief-1", False),
    ]
    assert monitors_of(skipped) == []
    assert fake.inspects(web) == 1  # the second start found its monitor reading


def test_one_container_found_twice_at_once_gets_one_monitor(
    fake: FakeEngine, daemons: Daemons
) -> None:
    """An event and a monitor's end (or a relist) may ask for the same container at the
    same moment; both inspect it before either starts a monitor."""
    supervisor = daemons.start()
    web = fake.add_container("web-1")
    fake.answer_inspects_together(2)
    callers = [threading.Thread(target=supervisor.ensure_monitor, args=(web,)) for _ in "ab"]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    fake.answer_inspects_together(0)
    assert fake.inspects(web) == 2
    assert len(monitors_of(web)) == 1


def test_a_rename_reaches_the_monitor_and_can_bring_a_container_in(
    fake: FakeEngine, daemons: Daemons
) -> None:
    web = fake.add_container("web-1")
    hidden = fake.add_container("skip-1")
    daemons.start(exclude_names=["skip-*"])
    monitor = wait_monitor(web)
    fake.rename(web, "web-2")
    fake.emit("rename", web)
    fake.rename(hidden, "shown-1")
    fake.emit("rename", hidden)
    assert wait_monitor(hidden).info.name == "shown-1"
    assert monitor.info.name == "web-2" and monitor.alive
    assert len(monitors_of(web)) == 1


def test_destroy_forgets_an_idle_container_now_and_a_read_one_when_its_monitor_ends(
    fake: FakeEngine, daemons: Daemons
) -> None:
    done, reading = fake.add_container("done-1"), fake.add_container("reading-1")
    supervisor = daemons.start()
    for n, cid in enumerate((done, reading), 1):
        wait_monitor(cid).deliver(n)
    wait_for(lambda: daemons.saved() == {done: upto(1), reading: upto(2)}, "positions saved")
    fake.set_state(done, running=False)
    monitors_of(done)[0].finish(MonitorEnd.EXITED)
    for cid in (done, reading):  # as the engine does: gone, then the event
        fake.remove(cid)
        fake.emit("destroy", cid)
    wait_for(lambda: done not in daemons.saved(), "the idle container forgotten")
    later = fake.add_container("later-1")
    fake.emit("start", later)
    wait_monitor(later)  # so the destroy before it was handled
    assert reading in supervisor.ledger.container_ids()  # still read: still known
    assert reading in daemons.saved()
    monitors_of(reading)[0].finish(MonitorEnd.EXITED)  # ended by something else than 404
    wait_for(lambda: reading not in daemons.saved(), "the read container forgotten")
    assert reading not in supervisor.ledger.container_ids()
    assert len(monitors_of(reading)) == 1  # gone: not read again


# -- re-lists ---------------------------------------------------------------------------


def test_after_an_event_gap_the_relist_reads_containers_that_started_and_stopped_in_it(
    fake: FakeEngine, daemons: Daemons
) -> None:
    # Listed in this order: "old" is decided before "brief".
    old = fake.add_container("old-1", running=False, started_at=LONG_AGO)
    supervisor = daemons.start()
    fake.end_event_streams(down=True)  # the engine restarts: its events are lost
    wait_for(lambda: not supervisor.watcher.connected, "the gap noticed")
    brief = fake.add_container("brief-1", running=False, started_at=now_ts())
    fake.events_up()
    wait_monitor(brief)
    # Stopped before the gap and unknown: the first start does not read history.
    assert monitors_of(old) == []
    assert [m.info.id for m in FakeMonitor.made] == [brief]


def test_a_container_that_stopped_while_the_daemon_was_down_is_read_from_its_position(
    fake: FakeEngine, daemons: Daemons
) -> None:
    # Listed in this order: "unknown" is decided before "web".
    unknown = fake.add_container("unknown-1", running=False, started_at=LONG_AGO)
    web = fake.add_container("web-1")
    daemons.start()
    wait_monitor(web).deliver(1, 2)
    wait_for(lambda: daemons.saved() == {web: upto(2)}, "positions saved")
    daemons.shutdown()
    fake.set_state(web, running=False)  # while no daemon runs

    daemons.start()
    again = wait_monitor(web, 2)
    assert again.started_from == {**upto(2), "stderr": Mark()} and not again.info.running
    assert monitors_of(unknown) == []


def test_a_container_read_to_its_end_is_read_again_only_when_it_restarts(
    fake: FakeEngine, daemons: Daemons
) -> None:
    first_run = "2026-01-01T00:00:00.000000000Z"
    web = fake.add_container("web-1", started_at=first_run)
    daemons.start(relist_interval=0.05)
    monitor = wait_monitor(web)
    monitor.deliver(1)
    fake.set_state(web, running=False)
    monitor.finish(MonitorEnd.EXITED)
    fake.emit("die", web)  # late, or replayed after a gap
    after_a_relist()
    after_a_relist()
    assert len(monitors_of(web)) == 1  # this run was read to its end
    fake.set_state(web, running=True, started_at=now_ts())
    fake.emit("start", web)
    again = wait_monitor(web, 2)
    assert again.started_from == {**upto(1), "stderr": Mark()}  # where the last run ended


def test_a_restart_while_the_monitor_drained_is_picked_up_when_it_ends(
    fake: FakeEngine, daemons: Daemons
) -> None:
    web = fake.add_container("web-1")
    daemons.start()  # relists: hourly, so only the monitor's end can catch the restart
    monitor = wait_monitor(web)
    fake.set_state(web, running=True, started_at=now_ts())  # exited and restarted at once
    fake.emit("start", web)
    other = fake.add_container("other-1")
    fake.emit("start", other)
    wait_monitor(other)  # so the start before it was handled: the monitor still ran
    assert len(monitors_of(web)) == 1
    monitor.finish(MonitorEnd.EXITED)  # the old run read to its end
    wait_monitor(web, 2)


# -- shutdown ---------------------------------------------------------------------------


def test_shutdown_stops_monitors_then_drains_saves_closes_sinks_then_the_engine(
    fake: FakeEngine, daemons: Daemons, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = fake.add_container("web-1")
    supervisor = daemons.start()
    monitor = wait_monitor(web)
    monitor.deliver(1, 2)
    wait_for(lambda: daemons.saved() == {web: upto(2)}, "positions saved")
    monitor.last_words = [3, 4]  # queued as it is stopped
    journal = FakeMonitor.journal
    real_save = supervisor.ledger.file.save
    real_close = supervisor.engine.close

    def save(positions: Any) -> None:
        real_save(positions)
        journal.add("positions_saved", str(positions.marks.get(web)))

    def close() -> None:
        journal.add("engine_closed")
        real_close()

    monkeypatch.setattr(supervisor.ledger.file, "save", save)
    monkeypatch.setattr(supervisor.engine, "close", close)
    supervisor.shutdown()

    ended = journal.index("monitor_ended", web)
    written = journal.index("written", ("line 3", "line 4"))
    saved = journal.index("positions_saved", str(upto(4)))
    assert ended < written < saved < journal.index("sink_closed") < journal.index("engine_closed")
    assert daemons.saved() == {web: upto(4)}
    assert not (monitor.alive or supervisor.dispatcher.alive or supervisor.watcher.alive)
    assert supervisor.engine.pool.stats().open == 0


# -- reload (SIGHUP) --------------------------------------------------------------------


def reload_with(
    supervisor: Supervisor, tmp_path: Path, **changes: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """Write the running config with ``changes`` (whole sections' keys) to a file, have
    the supervisor reload it; the result and the log events."""
    data = supervisor.config.model_dump(mode="json")
    for section, keys in changes.items():
        data[section] = {**data[section], **keys}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    supervisor.config_path = str(path)
    with structlog.testing.capture_logs() as logs:
        result = supervisor.reload()
    return result, logs


def test_a_reload_starts_the_newly_selected_and_stops_the_deselected(
    fake: FakeEngine, daemons: Daemons, tmp_path: Path
) -> None:
    """A running container newly selected is read as start_from says (its whole log by
    default); a deselected one's monitor stops, and when selected again it resumes from
    where it was read to."""
    web = fake.add_container("web-1")
    db = fake.add_container("db-1")
    supervisor = daemons.start(exclude_names=["db-*"])
    wait_monitor(web).deliver(1, 2)
    result, _ = reload_with(supervisor, tmp_path, container_monitor={"exclude_names": ["web-*"]})
    assert result == "applied"
    assert wait_monitor(db).started_from == {"stdout": Mark(), "stderr": Mark()}
    assert not monitors_of(web)[0].alive and len(monitors_of(web)) == 1
    wait_monitor(db).deliver(7)

    assert reload_with(supervisor, tmp_path, container_monitor={"exclude_names": []})[0] == (
        "applied"
    )
    assert wait_monitor(web, 2).started_from == {**upto(2), "stderr": Mark()}
    assert monitors_of(db)[0].alive and len(monitors_of(db)) == 1


def test_a_newly_selected_container_starts_now_with_start_from_now(
    fake: FakeEngine, daemons: Daemons, tmp_path: Path
) -> None:
    db = fake.add_container("db-1")
    supervisor = daemons.start(exclude_names=["db-*"], start_from="now")
    before = time.time_ns()
    changes = {"exclude_names": []}
    assert reload_with(supervisor, tmp_path, container_monitor=changes)[0] == "applied"
    started = wait_monitor(db).started_from
    assert all(mark.ts_ns >= before for mark in started.values()), started
    # A container that starts after the reload is read whole, as always.
    late = fake.add_container("late-1")
    fake.emit("start", late)
    assert wait_monitor(late).started_from == {"stdout": Mark(), "stderr": Mark()}


def test_an_invalid_file_changes_nothing_and_names_every_bad_key(
    fake: FakeEngine, daemons: Daemons, tmp_path: Path
) -> None:
    supervisor = daemons.start()
    running = supervisor.config
    result, logs = reload_with(
        supervisor,
        tmp_path,
        container_monitor={"stream_window": "5x", "exclude_names": "web"},
        pipeline={"batch_size": 0},
    )
    assert result == "invalid" and supervisor.config is running
    [event] = [e for e in logs if e["event"] == "config_reload_invalid"]
    assert event["keys"] == [
        "container_monitor.stream_window",
        "container_monitor.exclude_names",
        "pipeline.batch_size",
    ]
    assert all(error["message"] for error in event["errors"])


def test_restart_keys_are_named_and_kept_the_live_ones_apply(
    fake: FakeEngine, daemons: Daemons, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels: list[str] = []
    monkeypatch.setattr(supervisor_module, "set_level", levels.append)
    supervisor = daemons.start()
    listen = supervisor.config.server.listen
    result, logs = reload_with(
        supervisor,
        tmp_path,
        server={"listen": "127.0.0.1:1"},
        docker={"timeout": 9},
        logging={"level": "warning"},
        pipeline={"batch_size": 7},
    )
    assert result == "applied"
    [warning] = [e for e in logs if e["event"] == "config_reload_needs_restart"]
    assert warning["keys"] == ["docker.timeout", "server.listen"]
    assert supervisor.config.server.listen == listen
    assert supervisor.config.docker.timeout == 5
    assert supervisor.dispatcher.config.batch_size == 7
    assert supervisor.config.logging.level == "warning" and levels == ["warning"]
    # The same file again: the restart keys are still named, nothing else to do.
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    with structlog.testing.capture_logs() as logs:
        assert supervisor.reload() == "unchanged"
    assert [e["keys"] for e in logs if e["event"] == "config_reload_needs_restart"] == [
        ["docker.timeout", "server.listen"]
    ]


def test_new_read_settings_restart_the_monitors_from_their_read_positions(
    fake: FakeEngine, daemons: Daemons, tmp_path: Path
) -> None:
    web = fake.add_container("web-1")
    supervisor = daemons.start()
    wait_monitor(web).deliver(1, 2, 3)
    changes = {"stream_window": 5.0}
    assert reload_with(supervisor, tmp_path, container_monitor=changes)[0] == "applied"
    again = wait_monitor(web, 2)
    assert again.started_from == {**upto(3), "stderr": Mark()}
    assert not monitors_of(web)[0].alive
