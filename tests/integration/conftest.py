"""Fixtures for tests against the real Docker engine (started by scripts/ensure_docker.sh)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from log_capturer_testkit import REPO, TEST_IMAGE, Daemon, Fleet

DAEMON_IMAGE = "log-capturer:local"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(
            f"no Docker engine ({exc}); run scripts/ensure_docker.sh (scripts/test.sh does)"
        )
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"test image {TEST_IMAGE} missing; run scripts/make_test_image.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def daemon_image(docker_client: docker.DockerClient) -> str:
    """log-capturer:local, built offline by scripts/build_image.sh (seconds when cached;
    the first build on a machine also makes the local base image, about a minute)."""
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "scripts" / "build_image.sh")],
        env={**os.environ, "IMAGE": DAEMON_IMAGE},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"scripts/build_image.sh failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    print(f"\n{result.stdout.strip()}\n(image ready in {time.monotonic() - started:.1f}s)")
    return DAEMON_IMAGE


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def containers(docker_client: docker.DockerClient, run_id: str) -> Iterator[Fleet]:
    made = Fleet(docker_client, run_id)
    yield made
    made.remove_all()


@pytest.fixture
def make_daemon(tmp_path: Path, run_id: str) -> Iterator[Callable[..., Daemon]]:
    """Build daemons for this test; any still running at the end are killed."""
    daemons: list[Daemon] = []

    def factory(
        overrides: dict[str, Any] | None = None,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        daemon = Daemon(workdir or tmp_path / f"daemon{len(daemons)}", run_id, overrides, env)
        daemons.append(daemon)
        return daemon

    yield factory
    for daemon in daemons:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
