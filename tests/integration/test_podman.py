"""Podman 4.3's Docker-compatible API (``podman system service``) as the engine.

What Podman's API does differently, and where the daemon handles it, is written in
DEVELOPERS.md ("Other engines"). scripts/ensure_podman.sh installs Podman and makes
this host let it run containers.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, metric_total
from log_capturer_testkit.engines import PODMAN_IMAGE, PodmanService


@pytest.fixture(scope="module")
def podman() -> Iterator[PodmanService]:
    if shutil.which("podman") is None or os.geteuid() != 0:
        reason = "podman is not installed (scripts/ensure_podman.sh) or not root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the test needs it)")
        pytest.skip(reason)
    service = PodmanService()
    try:
        service.start()
        service.import_busybox()
        yield service
    finally:
        service.stop()


@pytest.fixture
def podman_fleet(podman: PodmanService, run_id: str) -> Iterator[Fleet]:
    fleet = Fleet(podman.client(), run_id, image=PODMAN_IMAGE)
    yield fleet
    fleet.remove_all()


# Bursts with quiet gaps longer than a 2 s window, one of them long enough for the
# daemon to prove the log read to its end (its next follow request then asks for what
# comes after the last line: Podman answers nothing at all until the next burst), and
# the same line several times a second (Podman stamps lines with their second only).
SCRIPT = (
    "for b in 1 2 3 4; do "
    '  i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo "out $b.$i"; done; '
    '  echo same; echo same; echo "err $b" >&2; echo "err $b" >&2; '
    '  if [ $b = 2 ]; then sleep 8; elif [ $b != 4 ]; then sleep 2.6; fi; '
    "done"
)


def expected_stdout() -> list[str]:
    out: list[str] = []
    for b in range(1, 5):
        out += [f"out {b}.{i}" for i in range(1, 151)] + ["same", "same"]
    return out


def test_podman_engine_with_2s_windows_exactly_once_and_no_failed_window(
    make_daemon: Callable[..., Daemon], podman: PodmanService, podman_fleet: Fleet
) -> None:
    daemon = make_daemon({"docker": {"host": podman.host}}).start()
    names = [f"pod{n}-{daemon.run_id}" for n in range(3)]
    running = [podman_fleet.run(SCRIPT, name=name, network_mode="none") for name in names]
    for container in running:
        assert podman_fleet.wait_exit(container, timeout=120) == 0
    daemon.wait_captured(3 * (4 * 152 + 8), timeout=120)
    metrics = daemon.metrics()
    records = daemon.stop_and_read()
    for name in names:
        assert_exactly_once(records, name, "stdout", expected_stdout())
        stderr = [f"err {b}" for b in range(1, 5) for _ in range(2)]
        assert_exactly_once(records, name, "stderr", stderr)
    # The case in the name was reached: windows waited in vain for Podman's answer...
    assert metrics["log_capturer_stream_header_timeouts_total"] > 0
    # ... and none failed.
    assert metrics.get('log_capturer_stream_windows_total{end="error"}', 0) == 0
    assert metric_total(metrics, "log_capturer_monitor_errors_total") == 0, {
        k: v for k, v in metrics.items() if k.startswith("log_capturer_monitor_errors_total")
    }
    assert not [e for e in daemon.log_events() if e["event"] == "monitor_window_failed"]
