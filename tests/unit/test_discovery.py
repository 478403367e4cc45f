"""Discovery against the fake engine: what the selector asks and inspects, and how the
EventWatcher follows /events (start, die, destroy, rename), replays after a gap and
re-lists. The real engine's filter semantics: tests/integration/test_discovery.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from log_capturer.discovery.events import EventWatcher
from log_capturer.discovery.filters import ContainerFilter
from log_capturer.discovery.node import HostConfig, NodeIdentity
from log_capturer.discovery.selector import ContainerSelector
from log_capturer.docker.config import DockerConfig, RetryConfig
from log_capturer.docker.engine import DockerEngine
from log_capturer.docker.errors import EngineUnavailableError
from log_capturer.monitor.config import MonitorConfig
from log_capturer.timestamps import format_api_ts

from .fake_engine import NODE_NAME, FakeEngine


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until true; the timeout only keeps a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeEngine]:
    engine = FakeEngine(tmp_path / "engine.sock")
    yield engine
    engine.stop()


@pytest.fixture
def engine(fake: FakeEngine) -> Iterator[DockerEngine]:
    config = DockerConfig(
        socket_path=fake.path,
        timeout=5,
        api_version="1.41",
        retry=RetryConfig(attempts=2, initial_backoff=0.01, max_backoff=0.01),
    )
    made = DockerEngine(config)
    yield made
    made.close()


def selector_for(engine: DockerEngine, self_id: str = "", **config: Any) -> ContainerSelector:
    node = NodeIdentity(HostConfig(), engine)
    return ContainerSelector(engine, ContainerFilter(MonitorConfig(**config), self_id), node)


# -- the node's name --------------------------------------------------------------------------


def test_the_node_is_named_by_the_engine_once_and_every_container_carries_it(
    fake: FakeEngine, engine: DockerEngine
) -> None:
    web, db = fake.add_container("web-1"), fake.add_container("db-1")
    selector = selector_for(engine)
    infos = [selector.inspect(web), selector.inspect(db)]
    assert [i.host if i else None for i in infos] == [NODE_NAME, NODE_NAME]
    assert fake.requests.count("info") == 1
    assert fake.requests.index("info") < fake.requests.index(f"containers/{web}/json")


def test_a_configured_name_wins_and_the_engine_is_not_asked(
    fake: FakeEngine, engine: DockerEngine
) -> None:
    web = fake.add_container("web-1")
    node = NodeIdentity(HostConfig(name="edge-7"), engine)
    selector = ContainerSelector(engine, ContainerFilter(MonitorConfig(), ""), node)
    info = selector.inspect(web)
    assert info is not None and info.host == "edge-7"
    assert "info" not in fake.requests


def test_an_engine_that_cannot_answer_yet_is_asked_again_and_one_without_a_name_falls_back(
    fake: FakeEngine, engine: DockerEngine
) -> None:
    node = NodeIdentity(HostConfig(), engine)
    fake.server.info = (503, {"message": "starting"})
    with pytest.raises(EngineUnavailableError):
        node.resolve()  # discovery's retry loop asks again, with backoff
    assert fake.requests.count("info") == 2  # the engine's own retries
    fake.server.info = (200, {"Name": "node-2"})
    assert node.resolve() == "node-2"
    assert node.resolve() == "node-2" and fake.requests.count("info") == 3
    # An engine whose /info is refused for good (or has no Name): this machine's hostname.
    for answer in [(404, {"message": "page not found"}), (200, {"Name": ""})]:
        fake.server.info = answer
        assert NodeIdentity(HostConfig(), engine).resolve() == socket.gethostname()


# -- the selector ---------------------------------------------------------------------------


def test_filtered_out_containers_are_judged_from_the_listing_and_never_inspected(
    fake: FakeEngine, engine: DockerEngine
) -> None:
    keep = fake.add_container("web-1", labels={"app": "web"})
    skipped = fake.add_container("skip-1", labels={"app": "web"})
    labelled = fake.add_container("web-2", labels={"app": "web", "io.exclude": "true"})
    stranger = fake.add_container("web-3", labels={"app": "other"})
    me = fake.add_container("web-me", labels={"app": "web"})
    selector = selector_for(
        engine,
        self_id=me[:12],
        include_labels={"app": "web"},
        include_names=["web-*", "skip-*"],
        exclude_names=["skip-*"],
        exclude_labels={"io.exclude": "true"},
    )
    for _ in range(3):  # three relists
        assert [c["Id"] for c in selector.list()] == [keep]
    listings = [q for path, q in fake.queries if path == "containers/json"]
    assert len(listings) == 3
    assert listings[0]["filters"] == '{"label": ["app=web"], "name": ["^skip-.*$", "^web-.*$"]}'
    for cid in (keep, skipped, labelled, stranger, me):
        assert fake.inspects(cid) == 0
    # An event about a container judged out (under its current name) costs nothing ...
    assert selector.inspect(skipped, name="skip-1") is None
    assert selector.inspect(me, name="web-me") is None
    assert fake.inspects(skipped) == fake.inspects(me) == 0
    # ... and the one captured is inspected when asked for.
    info = selector.inspect(keep, name="web-1")
    assert info is not None and info.name == "web-1" and fake.inspects(keep) == 1


def test_a_container_only_inspect_can_judge_is_inspected_once_then_remembered(
    fake: FakeEngine, engine: DockerEngine
) -> None:
    """The listing shows the image id when the image name moved on: an image filter then
    needs the inspect, once; a rename judges again, from the listing."""
    moved = fake.add_container("api-1", image="shop/api:1", image_untagged=True)
    other = fake.add_container("db-1", image="postgres:16", image_untagged=True)
    selector = selector_for(engine, include_images=["postgres:*"])
    assert {c["Id"] for c in selector.list()} == {moved, other}  # undecided: both listed
    assert selector.inspect(moved) is None  # filtered out by its image
    assert selector.inspect(other) is not None
    for _ in range(3):
        assert [c["Id"] for c in selector.list()] == [other]
    assert fake.inspects(moved) == 1
    assert selector.inspect(moved, name="api-1") is None
    assert fake.inspects(moved) == 1
    fake.rename(moved, "api-2")
    assert moved in {c["Id"] for c in selector.list()}  # a new name: undecided again
    assert selector.inspect(moved, name="api-2") is None
    assert fake.inspects(moved) == 2


def test_a_rename_judges_the_container_again(fake: FakeEngine, engine: DockerEngine) -> None:
    cid = fake.add_container("skip-1")
    selector = selector_for(engine, exclude_names=["skip-*"])
    assert selector.list() == []
    fake.rename(cid, "keep-1")
    assert [c["Id"] for c in selector.list()] == [cid]
    assert fake.inspects(cid) == 0


def test_gone_containers_and_the_unfiltered_check_for_pruning(
    fake: FakeEngine, engine: DockerEngine
) -> None:
    kept = fake.add_container("a", labels={"app": "web"})
    excluded = fake.add_container("b", labels={"app": "db"}, running=False)
    selector = selector_for(engine, include_labels={"app": "web"})
    assert selector.inspect("f" * 64) is None  # 404 from the engine: gone
    gone = "e" * 64
    # Filtered out is not gone: pruning asks the engine without filters.
    assert selector.missing([kept, excluded, gone]) == {gone}
    listings = [q for path, q in fake.queries if path == "containers/json"]
    assert listings == [{"all": "1"}]
    assert selector.missing([]) == set()
    assert len([p for p in fake.requests if p == "containers/json"]) == 1  # no request


def test_event_filters_carry_the_include_labels(engine: DockerEngine) -> None:
    selector = selector_for(engine, include_labels={"app": "web", "name": "x"})
    assert selector.event_filters() == {
        "type": ["container"],
        "event": ["start", "die", "destroy", "rename"],
        "label": ["app=web"],
    }


# -- the event watcher ------------------------------------------------------------------------


class Recorder:
    """A DiscoveryHandler that records; ``fail_next`` makes the next on_event raise."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.relists: list[int | None] = []
        self.fail_next = False

    def on_event(self, action: str, container_id: str, attributes: dict[str, Any]) -> None:
        with self.lock:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("handler failed")
            self.events.append((action, container_id, attributes))

    def relist(self, gap_started_ns: int | None) -> None:
        with self.lock:
            self.relists.append(gap_started_ns)

    def actions(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(a, cid) for a, cid, _ in self.events]


@pytest.fixture
def watch(engine: DockerEngine) -> Iterator[Callable[..., tuple[EventWatcher, Recorder]]]:
    made: list[EventWatcher] = []

    def start(relist_interval: float = 3600, **kwargs: Any) -> tuple[EventWatcher, Recorder]:
        recorder = Recorder()
        watcher = EventWatcher(
            engine, recorder, relist_interval, initial_backoff=0.01, max_backoff=0.05, **kwargs
        )
        made.append(watcher)
        watcher.start()
        wait_for(lambda: watcher.connected, "the event stream connected")
        return watcher, recorder

    yield start
    for watcher in made:
        watcher.stop()
        watcher.join(10)
        assert not watcher.alive


def test_lifecycle_events_reach_the_handler_in_order(
    fake: FakeEngine, watch: Callable[..., tuple[EventWatcher, Recorder]]
) -> None:
    _, recorder = watch()
    assert recorder.relists == [None]  # the first listing, before any event
    cid = fake.add_container("web-1", labels={"app": "web"})
    fake.emit("start", cid)
    fake.rename(cid, "web-2")
    fake.emit("rename", cid)
    fake.emit("die", cid)
    fake.emit("destroy", cid)
    wait_for(lambda: len(recorder.events) == 4, "four events")
    assert recorder.actions() == [("start", cid), ("rename", cid), ("die", cid), ("destroy", cid)]
    assert recorder.events[0][2] == {"app": "web", "image": "app:1", "name": "web-1"}
    assert recorder.events[1][2]["name"] == "web-2"


def test_events_are_replayed_from_the_last_one_after_a_gap(
    fake: FakeEngine, watch: Callable[..., tuple[EventWatcher, Recorder]]
) -> None:
    watcher, recorder = watch()
    first = fake.add_container("a")
    seen = fake.emit("start", first)
    wait_for(lambda: recorder.actions() == [("start", first)], "the first start")
    fake.end_event_streams(down=True)  # the engine goes away: EOF, then 503s
    wait_for(lambda: not watcher.connected, "the watcher noticed")
    wait_for(lambda: sum(1 for p, q in fake.queries if p == "events") >= 3, "retries")
    missed = fake.add_container("b")
    fake.emit("start", missed)  # while nobody follows /events
    fake.emit("die", missed)
    fake.events_up()
    wait_for(lambda: ("die", missed) in recorder.actions(), "the missed events, replayed")
    # Replayed from the last event seen (since is inclusive: it may come twice).
    reopened = [q for p, q in fake.queries if p == "events"][-1]
    assert reopened["since"] == format_api_ts(seen)
    assert recorder.actions()[-2:] == [("start", missed), ("die", missed)]
    assert set(recorder.actions()) == {("start", first), ("start", missed), ("die", missed)}
    # And the containers are listed again for what happened in the gap.
    assert recorder.relists == [None, seen]
    assert watcher.connected


def test_a_handler_that_fails_gets_the_event_again(
    fake: FakeEngine, watch: Callable[..., tuple[EventWatcher, Recorder]]
) -> None:
    _, recorder = watch()
    cid = fake.add_container("a")
    recorder.fail_next = True
    fake.emit("start", cid)
    wait_for(lambda: recorder.actions() == [("start", cid)], "the start, after a reconnect")
    assert recorder.relists[-1] is not None  # a gap: listed again from the failed event on


def test_containers_are_listed_again_every_relist_interval(
    fake: FakeEngine, watch: Callable[..., tuple[EventWatcher, Recorder]]
) -> None:
    _, recorder = watch(relist_interval=0.05)
    wait_for(lambda: len(recorder.relists) >= 4, "three more listings")
    assert set(recorder.relists) == {None}  # no gap: nothing was lost
    # The first listing comes before any window; each later one ends a window of /events.
    assert sum(1 for p, _ in fake.queries if p == "events") >= 3


def test_the_watcher_asks_the_engine_for_its_filters(
    fake: FakeEngine, watch: Callable[..., tuple[EventWatcher, Recorder]]
) -> None:
    filters = {"type": ["container"], "event": ["start"], "label": ["app=web"]}
    _, recorder = watch(event_filters=filters)
    wanted = fake.add_container("a", labels={"app": "web"})
    other = fake.add_container("b", labels={"app": "db"})
    fake.emit("start", other)
    fake.emit("die", wanted)
    fake.emit("start", wanted)
    wait_for(lambda: recorder.actions(), "an event")
    assert recorder.actions() == [("start", wanted)]
    assert [q["filters"] for p, q in fake.queries if p == "events"] == [
        '{"type": ["container"], "event": ["start"], "label": ["app=web"]}'
    ]


def test_stop_ends_a_quiet_event_stream(
    fake: FakeEngine, watch: Callable[..., tuple[EventWatcher, Recorder]]
) -> None:
    watcher, _ = watch()
    watcher.stop()
    watcher.join(10)
    assert not watcher.alive and not watcher.connected
