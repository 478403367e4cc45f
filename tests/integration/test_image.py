"""The container image against the real engine: build it (scripts/build_image.sh, offline),
run it the way the Dockerfile documents (non-root, the socket's group added, the socket
mounted read-only), and check what an operator relies on: the HEALTHCHECK turns healthy,
/metrics counts the lines, a sibling container's lines land exactly once in the file sink
inside the data volume, and ``docker stop`` ends it cleanly and quickly.

The base image (debootstrap, about a minute) and docker's layer cache are kept between
runs, so after the first run the build takes seconds. Fleet are removed; images stay.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from log_capturer_testkit import TEST_LABEL, Fleet, assert_exactly_once, free_port, scrape, wait_for

# A cold build (wheelhouse download, debootstrap of the base image) takes a few minutes
# on 2 busy cores; the fixture that does it runs inside the first test's timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

IMAGE = os.environ.get("LOG_CAPTURER_IMAGE", "log-capturer:local")
UID = 10001
DATA = "/var/lib/log_capturer"
CONFIG = "/etc/log_capturer/config.yaml"
# Labels the daemon container (not TEST_LABEL: it must not capture itself by the filter).
DAEMON_LABEL = "log-capturer-image-test"
LINES = 300
ERR_LINES = 20


def socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.fail(f"the image test mounts the engine's unix socket; DOCKER_HOST={host}")
    return host.removeprefix("unix://")


@pytest.fixture
def daemon_containers(docker_client: docker.DockerClient, run_id: str) -> Iterator[None]:
    """Removes this test's daemon containers and their anonymous data volumes."""
    yield
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{DAEMON_LABEL}={run_id}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


def logs_tail(container: Any, lines: int = 30) -> str:
    try:
        return str(container.logs(tail=lines).decode(errors="replace"))
    except docker.errors.APIError as exc:
        return f"(no logs: {exc})"


def health_status(container: Any) -> str:
    container.reload()
    state = container.attrs["State"]
    if state["Status"] != "running":
        raise AssertionError(
            f"daemon container {state['Status']} (exit {state['ExitCode']}):\n"
            f"{logs_tail(container)}"
        )
    return str(state.get("Health", {}).get("Status", "none"))


def parse_sink(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw.splitlines(keepends=True) if line.endswith(b"\n")]


def sink_records(container: Any) -> list[dict[str, Any]]:
    """The file sink's complete lines, read inside the running daemon's data volume."""
    result = container.exec_run(["cat", f"{DATA}/logs.jsonl"], stdout=True, stderr=False)
    if result.exit_code != 0:
        return []  # nothing written yet
    return parse_sink(result.output)


def final_sink_records(container: Any) -> list[dict[str, Any]]:
    """The file sink's lines copied out of a stopped daemon container's data volume."""
    stream, _ = container.get_archive(f"{DATA}/logs.jsonl")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile("logs.jsonl")
        assert member is not None
        return parse_sink(member.read())


def run_once(
    client: docker.DockerClient, daemon_image: str, command: list[str], **kwargs: Any
) -> str:
    """``docker run --rm``: the output; the container and its anonymous volume removed
    (docker-py's ``remove=True`` would leave the image's VOLUME behind)."""
    container = client.containers.create(daemon_image, command, network_mode="none", **kwargs)
    try:
        container.start()
        code = int(container.wait(timeout=60)["StatusCode"])
        output = str(container.logs().decode(errors="replace"))
        assert code == 0, f"{command} exited {code}:\n{output[-2000:]}"
        return output
    finally:
        container.remove(force=True, v=True)


def test_image_metadata_and_baked_config(
    docker_client: docker.DockerClient, daemon_image: str
) -> None:
    config = docker_client.images.get(daemon_image).attrs["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/opt/venv/bin/log-capturer"]
    assert config["Cmd"] == ["run", "-c", CONFIG]
    assert "8001/tcp" in config["ExposedPorts"]
    assert DATA in config["Volumes"]
    assert config["StopSignal"] == "SIGTERM"
    assert "PYTHONUNBUFFERED=1" in config["Env"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "/opt/venv/bin/python"]
    # The baked config is valid and listens on all interfaces; the venv has no pip.
    checked = run_once(docker_client, daemon_image, ["check-config", "-c", CONFIG])
    assert "listen: 0.0.0.0:8001" in checked
    assert f"path: {DATA}/logs.jsonl" in checked
    probe = run_once(
        docker_client,
        daemon_image,
        [
            "-c",
            "import importlib.util as u, os; "
            "print(u.find_spec('pip'), u.find_spec('log_capturer_testkit'), os.getuid())",
        ],
        entrypoint="/opt/venv/bin/python",
    )
    assert probe.split() == ["None", "None", str(UID)]  # no pip, no test kit


def test_image_captures_a_sibling_container_and_stops_cleanly(
    docker_client: docker.DockerClient,
    daemon_image: str,
    containers: Fleet,
    daemon_containers: None,
    run_id: str,
) -> None:
    sock = socket_path()
    gid = os.stat(sock).st_gid
    port = free_port()
    daemon = docker_client.containers.run(
        daemon_image,
        detach=True,
        name=f"log-capturer-image-{run_id}",
        labels={DAEMON_LABEL: run_id},
        group_add=[str(gid)],
        volumes={sock: {"bind": "/var/run/docker.sock", "mode": "ro"}},
        environment={
            # Only this test's containers, whatever else runs on the engine.
            "LOG_CAPTURER__CONTAINER_MONITOR__INCLUDE_LABELS": f"{{{TEST_LABEL}: {run_id}}}",
        },
        ports={"8001/tcp": ("127.0.0.1", port)},
        # The image's HEALTHCHECK command, probed every second instead of every 10 s
        # (fields left out keep the image's values).
        healthcheck={"interval": 1_000_000_000},
    )

    wait_for(lambda: health_status(daemon) == "healthy", 30, 0.5, what="HEALTHCHECK healthy")

    # PID 1 is the daemon, as the non-root user, with the socket's group added.
    status = daemon.exec_run(["cat", "/proc/1/status"]).output.decode()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == [str(UID)] * 4, fields["Uid"]
    assert str(gid) in fields["Groups"].split(), fields["Groups"]
    cmdline = daemon.exec_run(["cat", "/proc/1/cmdline"]).output.split(b"\0")
    assert b"/opt/venv/bin/log-capturer" in cmdline

    name = f"image-sibling-{run_id}"
    sibling = containers.run(
        f'for i in $(seq 1 {LINES}); do echo "line $i"; '
        "if [ $((i % 100)) -eq 0 ]; then sleep 0.3; fi; done; "
        f'for i in $(seq 1 {ERR_LINES}); do echo "err $i" >&2; done',
        name=name,
    )
    assert containers.wait_exit(sibling) == 0

    def captured() -> list[dict[str, Any]] | None:
        records = [r for r in sink_records(daemon) if r["container_name"] == name]
        return records if len(records) >= LINES + ERR_LINES else None

    wait_for(captured, 30, 0.5, what=f"{LINES + ERR_LINES} records in {DATA}/logs.jsonl")
    wait_for(
        lambda: scrape(f"http://127.0.0.1:{port}/metrics", timeout=5)[
            "log_capturer_containers_monitored"
        ]
        == 0,
        30,
        0.5,
        what="the sibling's monitor to finish",
    )
    metrics = scrape(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert metrics['log_capturer_lines_captured_total{stream="stdout"}'] == LINES
    assert metrics['log_capturer_lines_captured_total{stream="stderr"}'] == ERR_LINES
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
        assert response.status == 200

    # docker stop sends the image's STOPSIGNAL (SIGTERM); the daemon drains and exits 0
    # within docker's 10 s grace period (a SIGKILL after it would make the code 137).
    daemon.stop(timeout=10)
    exit_code = int(daemon.wait(timeout=10)["StatusCode"])
    output = daemon.logs().decode(errors="replace")
    assert exit_code == 0, f"exit {exit_code}:\n{output[-3000:]}"
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(e.get("signal") == "SIGTERM" for e in events), output[-2000:]
    assert events[-1]["event"] == "stopped", events[-1]

    # Audited once stopped: all the daemon delivered, nothing can follow.
    records = final_sink_records(daemon)
    assert_exactly_once(records, name, "stdout", [f"line {i}" for i in range(1, LINES + 1)])
    assert_exactly_once(records, name, "stderr", [f"err {i}" for i in range(1, ERR_LINES + 1)])
    assert {r["container_name"] for r in records} == {name}, "captured outside the label filter"
