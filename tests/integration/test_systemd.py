"""deploy/systemd/log-capturer.service: ``systemd-analyze verify`` accepts it without a
warning, it says what an operator relies on, and its own command line (parsed from the
unit, run without systemd, with a temporary state directory in place of
/var/lib/log-capturer) captures a container, stops cleanly on SIGTERM and, started
again, resumes from the positions in the state directory: every line exactly once.

What only systemd itself can show (the sandbox, the dynamic user reading the socket
through the docker group, Restart=) is not run here: there is no systemd manager in
this sandbox. ``systemd-analyze`` comes from Debian's ``systemd`` package
(scripts/ensure_tools.sh).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from log_capturer.config.loader import load_config
from log_capturer_testkit import (
    REPO,
    TEST_LABEL,
    Fleet,
    assert_exactly_once,
    free_port,
    read_records,
    wait_for,
)

pytestmark = pytest.mark.integration

UNIT = REPO / "deploy" / "systemd" / "log-capturer.service"
UNIT_CONFIG = REPO / "deploy" / "systemd" / "config.yaml"
STATE = "/var/lib/log-capturer"


def unit_entries(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values in order (a key may repeat), as systemd reads them."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(service: dict[str, list[str]], key: str) -> str:
    (value,) = service[key]
    return value


def seconds(value: str) -> float:
    """A systemd time span as written in this unit: a number of seconds, or Ns / Nmin."""
    for suffix, factor in (("min", 60), ("s", 1)):
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def log_capturer_binary() -> str:
    """The ``log-capturer`` entry point of the environment these tests run in."""
    path = Path(sys.executable).parent / "log-capturer"
    if not path.exists():
        pytest.fail(f"{path} missing: scripts/bootstrap.sh installs the project")
    return str(path)


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze missing: run scripts/ensure_tools.sh (scripts/test.sh does)")
    # verify checks that ExecStart's binary exists: the unit's path, as installed, is
    # replaced by this environment's entry point (nothing else changes).
    argv = shlex.split(one(unit_entries(UNIT)["Service"], "ExecStart"))
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(argv[0], log_capturer_binary()))
    result = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    out = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and out == "", out  # not even a warning


def test_the_unit_says_what_an_operator_relies_on() -> None:
    unit = unit_entries(UNIT)
    service = unit["Service"]
    for key in ("After", "Wants"):
        assert "docker.service" in " ".join(unit["Unit"][key]).split()
    assert one(service, "Restart") == "on-failure"
    assert one(service, "RestartPreventExitStatus") == "2"  # a bad config: no restart loop
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    # Longer than the drain plus the monitors' and discovery's joins (10 s each).
    drain = load_config(None, environ={}).pipeline.drain_timeout
    assert seconds(one(service, "TimeoutStopSec")) >= drain + 20 + 10
    # The state directory holds the positions and the file sink, as the config says.
    assert one(service, "StateDirectory") == Path(STATE).name
    config = load_config(UNIT_CONFIG, environ={})
    assert Path(config.positions.path).parent == Path(STATE)
    assert Path(config.sinks.file.path).parent == Path(STATE)
    argv = shlex.split(one(service, "ExecStart"))
    assert argv[1:] == ["run", "-c", f"/etc/log-capturer/{UNIT_CONFIG.name}"]
    assert one(service, "ConfigurationDirectory") == "log-capturer"
    # Hardening that still reaches the socket: its group, AF_UNIX.
    assert one(service, "SupplementaryGroups") == "docker"
    assert "AF_UNIX" in one(service, "RestrictAddressFamilies").split()
    for key, value in {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert one(service, key) == value, key
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


class UnitProcess:
    """The unit's ExecStart, run as systemd would start it (its environment and working
    directory) but with ``state`` in place of /var/lib/log-capturer."""

    def __init__(self, state: Path, workdir: Path, run_id: str) -> None:
        service = unit_entries(UNIT)["Service"]
        argv = shlex.split(one(service, "ExecStart"))
        config = workdir / UNIT_CONFIG.name
        config.write_text(UNIT_CONFIG.read_text().replace(STATE, str(state)))
        self.argv = [log_capturer_binary(), *[str(config) if a.endswith(UNIT_CONFIG.name)
                                              else a for a in argv[1:]]]
        self.port = free_port()
        self.env = {
            **os.environ,
            **dict(e.split("=", 1) for e in service.get("Environment", [])),
            "STATE_DIRECTORY": str(state),
            # What the test narrows: its own containers, its own port, short windows.
            "LOG_CAPTURER__CONTAINER_MONITOR__INCLUDE_LABELS": f"{{{TEST_LABEL}: {run_id}}}",
            "LOG_CAPTURER__CONTAINER_MONITOR__STREAM_WINDOW": "2s",
            "LOG_CAPTURER__SERVER__LISTEN": f"127.0.0.1:{self.port}",
        }
        self.state = state
        self.workdir = workdir
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"unit-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.state, env=self.env
            )
        wait_for(self.ready, 30, what="the unit's daemon ready")

    def ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def terminate(self) -> int:
        """SIGTERM, as systemctl stop sends it (KillSignal): the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.state / "logs.jsonl")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def unit_process(tmp_path: Path, run_id: str) -> Iterator[UnitProcess]:
    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    made = UnitProcess(state, tmp_path, run_id)
    yield made
    made.kill()


def test_the_units_command_line_keeps_positions_in_its_state_directory_across_a_restart(
    unit_process: UnitProcess, containers: Fleet
) -> None:
    unit_process.start()
    writer = containers.run(
        'i=0; while [ $i -lt 600 ]; do i=$((i + 1)); echo "line $i"; sleep 0.02; done; '
        "sleep 1000",  # still running at the restart: read again from its position
        network_mode="none",
    )
    wait_for(lambda: len(unit_process.records()) >= 100, 60, what="the first lines")
    assert unit_process.terminate() == 0, unit_process.log.read_text()[-3000:]
    saved = json.loads((unit_process.state / "positions.json").read_text())
    assert writer.id in str(saved)  # the positions are in the state directory
    first_run = len(unit_process.records())
    unit_process.start()  # same state directory: resumes from the positions
    wait_for(lambda: len(unit_process.records()) >= 600, 60, what="every line")
    assert first_run < 600, "the writer ended before the restart: nothing resumed"
    assert unit_process.terminate() == 0, unit_process.log.read_text()[-3000:]
    records = unit_process.records()
    assert_exactly_once(records, writer.name, "stdout", [f"line {i}" for i in range(1, 601)])
    engine_name = containers.client.info()["Name"]
    assert {r["host"] for r in records} == {engine_name}
