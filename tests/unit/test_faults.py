"""The test-only fault switch (log_capturer_testkit/faults.py): installed once at start,
or not at all; the package itself has none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from log_capturer.monitor.container_monitor import ContainerMonitor
from log_capturer_testkit import faults


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_unset_installs_nothing() -> None:
    window = ContainerMonitor._window
    assert faults.install({}) is None
    assert faults.install({faults.ENV: ""}) is None
    assert ContainerMonitor._window is window


def test_the_leak_fault_leaks_one_fd_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    def window(self: ContainerMonitor, follow: bool) -> bool:
        calls.append(follow)
        return True

    monkeypatch.setattr(ContainerMonitor, "_window", window)  # restored after the test
    monkeypatch.setattr(faults, "_leaked", [])
    assert faults.install({faults.ENV: "leak_fd_per_window"}) == "leak_fd_per_window"
    monitor = object.__new__(ContainerMonitor)  # the wrapper only passes it on
    before = open_fds()
    try:
        for follow in (True, False, True):
            assert ContainerMonitor._window(monitor, follow) is True
        assert calls == [True, False, True]
        assert open_fds() == before + 3
    finally:
        for fd in faults._leaked:
            os.close(fd)


def test_the_memory_fault_keeps_a_quarter_mebibyte_per_window_and_combines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def window(self: ContainerMonitor, follow: bool) -> bool:
        return follow

    monkeypatch.setattr(ContainerMonitor, "_window", window)  # restored after the test
    monkeypatch.setattr(faults, "_leaked", [])
    monkeypatch.setattr(faults, "_kept", [])
    both = "leak_fd_per_window,leak_memory_per_window"
    assert faults.install({faults.ENV: both}) == both
    monitor = object.__new__(ContainerMonitor)
    try:
        for follow in (True, False):
            assert ContainerMonitor._window(monitor, follow) is follow
        assert [len(kept) for kept in faults._kept] == [faults.LEAK_BYTES] * 2
        assert len(faults._leaked) == 2
    finally:
        for fd in faults._leaked:
            os.close(fd)


def test_an_unknown_fault_stops_the_daemon_before_it_starts(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("docker: {socket_path: /nonexistent.sock}\n")
    env = {**os.environ, faults.ENV: "leak_everything"}
    done = subprocess.run(
        [sys.executable, "-m", "log_capturer_testkit.faults", "run", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown LOG_CAPTURER_TEST_FAULT='leak_everything'" in done.stderr
    assert "leak_fd_per_window" in done.stderr
