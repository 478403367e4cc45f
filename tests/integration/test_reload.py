"""SIGHUP reloads the config in place (README, "Reload"): against the real engine, every
line exactly once across reloads, the same process throughout."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from log_capturer_testkit import Daemon, Fleet
from log_capturer_testkit.audit import assert_exactly_once, by_stream
from log_capturer_testkit.daemon import read_records
from log_capturer_testkit.env import TEST_LABEL
from log_capturer_testkit.fleet import engine_lines
from log_capturer_testkit.waiting import wait_for
from tests.fake_loki import FakeLoki


def until_stopped(prefix: str) -> str:
    """``prefix 1``, ``prefix 2``, ... on stdout, about 100 a second, until the test
    creates ``/ctl/stop`` (see :func:`writer`): the container writes through every
    reload however slow the machine is."""
    return (
        f'i=0; while [ ! -e /ctl/stop ]; do i=$((i+1)); echo "{prefix} $i"; '
        "if [ $((i % 10)) -eq 0 ]; then sleep 0.1; fi; done"
    )


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    """A folder the test's containers see at /ctl (read-only); ``stop`` in it ends them."""
    path = tmp_path / "ctl"
    path.mkdir()
    return path


def writer(containers: Fleet, ctl: Path, name: str, prefix: str, **labels: str) -> object:
    return containers.run(
        until_stopped(prefix),
        name=name,
        labels=labels,
        volumes={str(ctl): {"bind": "/ctl", "mode": "ro"}},
    )


def messages(records: list[dict[str, object]], name: str) -> list[str]:
    return by_stream(records).get((name, "stdout"), [])


@pytest.fixture
def fake_loki() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server


def test_a_reload_selects_a_running_container_whole_and_a_bad_one_changes_nothing(
    make_daemon: Callable[..., Daemon], containers: Fleet, ctl: Path
) -> None:
    """(a) The first container is captured; a reload whose filters also select a second,
    already running one captures that one whole (start_from: beginning) while the first
    goes on exactly once, in the same process. (b) Then a reload of an invalid file
    (stream_window: 5x) keeps it running and ready, names the key and is counted."""
    client, run_id = containers.client, containers.run_id
    first, second = f"first-{run_id}", f"second-{run_id}"
    writer(containers, ctl, second, "b", group="second")
    writer(containers, ctl, first, "a", group="first")
    daemon = make_daemon(
        {"container_monitor": {"include_labels": {TEST_LABEL: run_id, "group": "first"}}}
    ).start()
    pid = daemon.pid
    wait_for(lambda: len(messages(daemon.records(), first)) >= 20, 30, what="first's lines")
    assert messages(daemon.records(), second) == []
    wait_for(lambda: len(engine_lines(client, second)["stdout"]) >= 50, 30, what="second")

    daemon.config["container_monitor"]["include_labels"] = {TEST_LABEL: run_id}
    daemon.reload()
    wait_for(lambda: daemon.reloads("applied") == 1, 20, what="the reload applied")
    wait_for(lambda: messages(daemon.records(), second), 20, what="second's lines")

    good = copy.deepcopy(daemon.config)
    daemon.config["container_monitor"]["stream_window"] = "5x"
    daemon.reload()
    wait_for(lambda: daemon.reloads("invalid") == 1, 20, what="the invalid reload counted")
    assert daemon.running and daemon.pid == pid
    assert daemon.http_status("/ready") == 200
    [invalid] = [e for e in daemon.log_events() if e.get("event") == "config_reload_invalid"]
    assert invalid["keys"] == ["container_monitor.stream_window"], invalid
    assert "5x" in invalid["errors"][0]["message"]
    daemon.config = good

    (ctl / "stop").touch()
    daemon.wait_monitors_done()
    assert daemon.pid == pid and daemon.running
    assert [e["event"] for e in daemon.log_events()].count("starting") == 1
    records = daemon.stop_and_read()
    for name in (first, second):
        assert_exactly_once(records, name, "stdout", engine_lines(client, name)["stdout"])


def test_sinks_and_stages_change_without_a_line_lost_or_repeated(
    make_daemon: Callable[..., Daemon],
    containers: Fleet,
    fake_loki: FakeLoki,
    tmp_path: Path,
    ctl: Path,
) -> None:
    """(c) A reload adds a Loki sink and turns the multiline stage on: the file sink, which
    stays, holds every line once; the Loki sink receives every line from when it started.
    A second reload removes the Loki sink, turns the stage off and moves the file sink to
    a new path: the old sinks drain first (Loki received exactly what the old file did
    after it started), and the two files together hold every line once, in order."""
    name = f"sinks-{containers.run_id}"
    writer(containers, ctl, name, "line")
    daemon = make_daemon().start()
    wait_for(lambda: len(messages(daemon.records(), name)) >= 30, 30, what="the first lines")

    daemon.config["sinks"]["loki"] = {
        "enabled": True,
        "url": fake_loki.url,
        "spool_dir": str(tmp_path / "spool"),
        "dead_letter_path": str(tmp_path / "dead.jsonl"),
        "static_labels": {"reload": "yes"},
    }
    daemon.config["pipeline"]["stages"] = {
        "multiline": {"enabled": True, "start_pattern": "^line ", "flush_timeout": "300ms"}
    }
    daemon.reload()
    wait_for(lambda: daemon.reloads("applied") == 1, 20, what="the first reload applied")
    wait_for(lambda: len(sent_to(fake_loki, name)) >= 30, 30, what="Loki's lines")

    old_file = daemon.output
    daemon.config["sinks"]["loki"]["enabled"] = False
    daemon.config["pipeline"]["stages"] = {"multiline": {"enabled": False}}
    daemon.config["sinks"]["file"]["path"] = str(daemon.data / "after.jsonl")
    daemon.reload()
    wait_for(lambda: daemon.reloads("applied") == 2, 20, what="the second reload applied")
    wait_for(lambda: len(messages(daemon.records(), name)) >= 30, 30, what="the new file")

    (ctl / "stop").touch()
    daemon.wait_monitors_done()
    records = daemon.stop_and_read()
    before = messages(read_records(old_file), name)
    after = messages(records, name)
    assert before and after, (len(before), len(after))
    assert_exactly_once(
        [{"container_name": name, "stream": "stdout", "message": m} for m in before + after],
        name,
        "stdout",
        engine_lines(containers.client, name)["stdout"],
    )
    loki = sent_to(fake_loki, name)  # as sent: a repeat would show
    assert 30 <= len(loki) < len(before)
    assert loki == before[-len(loki) :], "Loki did not receive what the file did"
    assert fake_loki.lines(container_name=name, reload="yes") == loki


def sent_to(loki: FakeLoki, name: str) -> list[str]:
    """The lines of container ``name`` in every push Loki stored, in order."""
    return [
        entry.line
        for push in loki.pushes()
        if push.status == 204
        for labels, entry in push.entries()
        if ("container_name", name) in labels
    ]
