"""A full disk under the file sink (and the positions file), against the real engine.

The sink's directory is a small tmpfs mostly taken by a filler file: the disk fills
after a few hundred records, the daemon keeps retrying, then the filler is deleted and
the space comes back. Nothing may be lost, duplicated or torn: every line of the
output file is a whole JSON record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, wait_for
from tests.tmpfs import FILLER, fill, small_tmpfs

LINES = 20_000
FREE_BYTES = 256 * 1024  # the room left: ~870 records of ~300 bytes
WRITER = f'i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo "n $i"; done'


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with FREE_BYTES free (a filler file takes the rest); unmounted at the end."""
    with small_tmpfs(tmp_path / "disk", 16 * 1024 * 1024) as mount_point:
        fill(mount_point, leave=FREE_BYTES)
        yield mount_point


def whole_records(path: Path) -> list[dict[str, object]]:
    """Every line of the file, each a whole JSON record (a torn one fails with its text)."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), f"the file ends in a partial record: {raw[-200:]!r}"
    out = []
    for number, line in enumerate(raw.split(b"\n")[:-1], 1):
        try:
            out.append(json.loads(line))
        except ValueError as exc:
            raise AssertionError(f"line {number} is not one JSON record ({exc}): {line!r}") from exc
    return out


def one_warning(daemon: Daemon, event: str, recovered: str) -> dict[str, object]:
    """The one warning of the episode (retries are not logged at info), and its end."""
    events = daemon.log_events()
    warnings = [e for e in events if e.get("event") == event]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", warnings
    assert any(e.get("event") == recovered for e in events), f"no {recovered}"
    return warnings[0]


def test_a_full_disk_under_the_file_sink_delays_delivery_but_never_tears_a_record(
    small_disk: Path,  # first: unmounted after the daemon is gone
    make_daemon: Callable[..., Daemon],
    containers: Fleet,
) -> None:
    daemon = make_daemon({"sinks": {"file": {"path": str(small_disk / "logs.jsonl")}}}).start()
    name = f"diskfull-{daemon.run_id}"
    assert containers.wait_exit(containers.run(WRITER, name=name), timeout=60) == 0

    # The disk fills and the sink keeps failing: wait for five retries (about 6 s).
    wait_for(
        lambda: daemon.metric('log_capturer_file_sink_write_errors_total{errno="ENOSPC"}') >= 5,
        90,
        what="five writes failed for lack of space",
    )
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log_tail()
    assert daemon.http_status("/health") == 200
    (small_disk / FILLER).unlink()  # the space comes back

    # Stop and drain: once the monitor has read the exited container to its end.
    wait_for(lambda: daemon.finished_container(name), 120, what=f"monitor of {name} finished")
    metrics = daemon.metrics()
    assert daemon.stop() == 0, daemon.log_tail()

    records = whole_records(small_disk / "logs.jsonl")
    assert_exactly_once(records, name, "stdout", [f"n {i}" for i in range(1, LINES + 1)])
    assert len(records) == LINES
    failures = metrics['log_capturer_sink_batches_total{sink="file",status="error"}']
    assert metrics['log_capturer_file_sink_write_errors_total{errno="ENOSPC"}'] == failures >= 5
    warning = one_warning(daemon, "sink_write_failed", "sink_write_recovered")
    assert "No space left on device" in str(warning["error"])


def test_positions_a_full_disk_cannot_save_do_not_stop_delivery(
    small_disk: Path,  # first: unmounted after the daemon is gone
    make_daemon: Callable[..., Daemon],
    containers: Fleet,
) -> None:
    """The positions file on a full disk, the sink's file elsewhere: delivery goes on,
    positions are saved once there is room, and they match what was delivered."""
    fill(small_disk)  # no room left at all
    positions = small_disk / "positions.json"
    daemon = make_daemon({"positions": {"path": str(positions)}}).start()
    name = f"nopositions-{daemon.run_id}"
    assert containers.wait_exit(containers.run(WRITER, name=name), timeout=60) == 0
    wait_for(lambda: daemon.finished_container(name), 120, what=f"monitor of {name} finished")
    wait_for(
        lambda: daemon.metric('log_capturer_position_saves_total{result="error"}') >= 5,
        30,
        what="five failed positions saves",
    )
    assert daemon.http_status("/health") == 200, daemon.log_tail()  # the dispatcher lives
    assert not positions.exists()
    (small_disk / FILLER).unlink()  # the space comes back
    wait_for(positions.exists, 30, what="positions saved")
    assert daemon.stop() == 0, daemon.log_tail()

    records = whole_records(daemon.data / "logs.jsonl")
    assert_exactly_once(records, name, "stdout", [f"n {i}" for i in range(1, LINES + 1)])
    saved = json.loads(positions.read_text())
    last = records[-1]
    assert saved["containers"][last["container_id"]]["streams"]["stdout"]["ts"] == last["ts"]
    warning = one_warning(daemon, "checkpoint_failed", "checkpoint_recovered")
    assert "No space left on device" in str(warning["error"])
