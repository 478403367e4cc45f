"""Discovery against the real engine: its filter semantics, /events, replay after a gap.

In-process (ContainerSelector, EventWatcher, DockerEngine), not through the daemon:
what is checked here is what the engine does with what discovery asks. The daemon's
side (nothing excluded is inspected at a relist, only the kept container captured) is
test_lifecycle.py::test_filters_and_never_capturing_itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import docker
import pytest

from log_capturer.discovery.container import ContainerInfo
from log_capturer.discovery.events import EventWatcher
from log_capturer.discovery.filters import ContainerFilter, engine_name_pattern, listed_name
from log_capturer.discovery.selector import ContainerSelector
from log_capturer.docker.config import DockerConfig
from log_capturer.docker.engine import DockerEngine
from log_capturer.docker.errors import ContainerGoneError
from log_capturer.monitor.config import MonitorConfig
from log_capturer_testkit import TEST_IMAGE, TEST_LABEL, Fleet, wait_for

from .socket_proxy import EngineProxy


class CountingEngine(DockerEngine):
    """Counts inspects per container id (a wrapper around the real calls)."""

    def __init__(self, config: DockerConfig) -> None:
        super().__init__(config)
        self.inspected: dict[str, int] = {}
        self._count_lock = threading.Lock()

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        with self._count_lock:
            self.inspected[container_id] = self.inspected.get(container_id, 0) + 1
        return super().inspect_container(container_id)


@pytest.fixture
def engine() -> Iterator[CountingEngine]:
    made = CountingEngine(DockerConfig(retry={"attempts": 2}))
    yield made
    made.close()


# name suffix -> extra labels, and whether it is made from an image name that is then
# removed (the listing then shows the image id: only an inspect tells the name).
FLEET: dict[str, tuple[dict[str, str], bool]] = {
    "web-1": ({"tier": "front"}, False),
    "web.2": ({"tier": "front", "skip": "true"}, False),
    "webx2": ({}, False),
    "xweb-3": ({"tier": "back"}, True),
    "api-1": ({"tier": "back"}, False),
    "api-22": ({}, True),
    "skip-1": ({"tier": "front"}, False),
    "db_1": ({"skip": "false"}, False),
}

CONFIGS: list[dict[str, Any]] = [
    {},
    {"include_names": ["web-*"]},
    {"include_names": ["web.?-*", "api-??-*"]},  # a literal dot, single characters
    {"include_names": ["*web*"], "exclude_names": ["x*"]},
    {"include_names": ["[ax]*"]},  # a class: decided by the client alone
    {"exclude_names": ["skip-*", "db_*"]},
    {"include_labels": {"tier": "*"}},
    {"include_labels": {"tier": "front"}, "exclude_labels": {"skip": "true"}},
    {"exclude_labels": {"skip": ""}},
    {"include_images": ["log-capturer-test/busybox*"]},
    {"exclude_images": ["log-capturer-test/alias-*"], "include_names": ["*-?-*"]},
    {"self": "api-1"},
]


def engine_lists(info: ContainerInfo, config: dict[str, Any]) -> bool:
    """What the engine should list for ``ContainerFilter.list_filters()``: names matching a
    glob (when every glob could be sent), and every include label present (any value for
    '' and '*')."""
    globs = config.get("include_names", [])
    sent = all(engine_name_pattern(g) is not None for g in globs)
    if globs and sent and not any(fnmatchcase(info.name, g) for g in globs):
        return False
    return all(
        key in info.labels and (value in ("", "*") or info.labels[key] == value)
        for key, value in config["include_labels"].items()
    )


def test_the_engine_filters_select_exactly_what_the_filters_say(
    engine: CountingEngine, containers: Fleet, docker_client: docker.DockerClient
) -> None:
    run_id = containers.run_id
    alias = f"log-capturer-test/alias-{run_id}:1"
    docker_client.images.get(TEST_IMAGE).tag(alias)
    ids: dict[str, str] = {}
    try:
        for suffix, (labels, aliased) in FLEET.items():
            made = docker_client.containers.create(
                alias if aliased else TEST_IMAGE,
                ["true"],
                name=f"{suffix}-{run_id}",
                labels={TEST_LABEL: run_id, **labels},
            )
            ids[f"{suffix}-{run_id}"] = made.id
    finally:
        docker_client.images.remove(alias)  # the name is gone; the image stays (TEST_IMAGE)
    everyone = {
        n: ContainerInfo.from_inspect(engine.inspect_container(c), "node") for n, c in ids.items()
    }
    assert everyone[f"xweb-3-{run_id}"].image == alias  # inspect still tells the name

    reached_inspect = 0
    for overrides in CONFIGS:
        config = dict(overrides)
        self_name = config.pop("self", None)
        config["include_labels"] = {TEST_LABEL: run_id, **config.get("include_labels", {})}
        self_id = ids[f"{self_name}-{run_id}"][:12] if self_name else ""
        cfilter = ContainerFilter(MonitorConfig(**config), self_id)
        selector = ContainerSelector(engine, cfilter)
        expected = {name for name, info in everyone.items() if cfilter.matches(info)}
        assert expected and (not overrides or expected != set(everyone)), overrides

        engine.inspected.clear()
        listed = selector.list()
        listed_names = {listed_name(s) for s in listed}
        captured = {
            listed_name(s)
            for s in listed
            if cfilter.judge_listed(s) or selector.inspect(s["Id"], listed_name(s)) is not None
        }
        assert captured == expected, overrides
        inspected = {name for name, cid in ids.items() if engine.inspected.get(cid)}
        # Only the containers the listing cannot judge (an image filter, and the image
        # name gone) are inspected, once.
        assert all(engine.inspected[ids[n]] == 1 for n in inspected), overrides
        assert inspected <= {f"xweb-3-{run_id}", f"api-22-{run_id}"}, overrides
        reached_inspect += len(inspected)

        # The engine applied the name and label filters, exactly.
        engine_side = {n for n, info in everyone.items() if engine_lists(info, config)}
        by_engine = engine.list_containers(all=True, filters=cfilter.list_filters())
        assert {listed_name(s) for s in by_engine} == engine_side, overrides
        assert expected <= listed_names <= engine_side, overrides

        # At the next relist, nothing is inspected again.
        engine.inspected.clear()
        for summary in selector.list():
            if cfilter.judge_listed(summary) is None:
                selector.inspect(summary["Id"], listed_name(summary))
        assert engine.inspected == {}, overrides
    assert reached_inspect > 0, "no config reached the inspect path"


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str]] = []
        self.relists: list[int | None] = []

    def on_event(self, action: str, container_id: str, attributes: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((action, container_id, str(attributes.get("name"))))

    def relist(self, gap_started_ns: int | None) -> None:
        with self.lock:
            self.relists.append(gap_started_ns)

    def of(self, container_id: str) -> list[tuple[str, str]]:
        with self.lock:
            return [(a, n) for a, cid, n in self.events if cid == container_id]


@contextlib.contextmanager
def watching(
    engine: DockerEngine, selector: ContainerSelector
) -> Iterator[tuple[EventWatcher, Recorder]]:
    recorder = Recorder()
    watcher = EventWatcher(
        engine, recorder, 3600, 0.05, 0.2, event_filters=selector.event_filters()
    )
    watcher.start()
    try:
        wait_for(lambda: watcher.connected, 20, what="the event stream")
        yield watcher, recorder
    finally:
        watcher.stop()
        watcher.join(10)
        assert not watcher.alive


def test_events_follow_the_label_filter_start_rename_die_destroy(
    engine: CountingEngine, containers: Fleet, docker_client: docker.DockerClient
) -> None:
    run_id = containers.run_id
    selector = ContainerSelector(
        engine,
        ContainerFilter(MonitorConfig(include_labels={TEST_LABEL: run_id})),
    )
    with watching(engine, selector) as (_, recorder):
        stranger = docker_client.containers.run(
            TEST_IMAGE,
            ["true"],
            name=f"stranger-{run_id}",
            detach=True,
            labels={TEST_LABEL: f"other-{run_id}"},
        )
        stranger.wait(timeout=60)
        stranger.remove()
        ours = containers.run("sleep 60", name=f"ev-{run_id}")
        ours.rename(f"ev2-{run_id}")
        ours.stop(timeout=0)
        ours.remove()
        wait_for(lambda: ("destroy", f"ev2-{run_id}") in recorder.of(ours.id), 30, what="destroy")
        assert recorder.of(ours.id) == [
            ("start", f"ev-{run_id}"),
            ("rename", f"ev2-{run_id}"),
            ("die", f"ev2-{run_id}"),
            ("destroy", f"ev2-{run_id}"),
        ]
        # The stranger's events came earlier on the same stream, had the engine sent them.
        assert recorder.of(stranger.id) == []
        with pytest.raises(ContainerGoneError):
            engine.inspect_container(ours.id)


def test_events_missed_while_the_engine_was_away_are_replayed(
    containers: Fleet, tmp_path: Path
) -> None:
    proxy = EngineProxy(tmp_path / "engine.sock")
    proxy.up()
    engine = DockerEngine(DockerConfig(socket_path=proxy.path, retry={"attempts": 1}))
    run_id = containers.run_id
    selector = ContainerSelector(
        engine,
        ContainerFilter(MonitorConfig(include_labels={TEST_LABEL: run_id})),
    )
    try:
        with watching(engine, selector) as (watcher, recorder):
            before = containers.run("true", name=f"before-{run_id}")
            wait_for(lambda: ("die", f"before-{run_id}") in recorder.of(before.id), 30, what="die")
            proxy.down()
            wait_for(lambda: not watcher.connected, 20, what="the watcher to notice")
            missed = containers.run("true", name=f"missed-{run_id}")  # straight to the engine
            containers.wait_exit(missed)
            proxy.up()
            wait_for(
                lambda: ("die", f"missed-{run_id}") in recorder.of(missed.id), 30, what="replay"
            )
            assert recorder.of(missed.id) == [
                ("start", f"missed-{run_id}"),
                ("die", f"missed-{run_id}"),
            ]
            # A gap: the containers are listed again from where the events stopped.
            wait_for(lambda: len(recorder.relists) >= 2, 20, what="the relist after the gap")
            assert recorder.relists[0] is None and recorder.relists[1] is not None
    finally:
        engine.close()
        proxy.down()
