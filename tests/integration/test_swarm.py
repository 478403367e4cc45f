"""deploy/swarm/stack.yml on a real single-node swarm, and what it is made of.

The live test deploys the stack as ``docker stack deploy`` does for a user (the image
built by scripts/build_image.sh, ``--resolve-image never``: no registry here), with a
test overlay that only narrows what it captures to this test's generator and shortens
its windows, healthcheck and update monitor. A generator service in a stack of its own
writes numbered lines; they must arrive exactly once, with ``host`` = the engine's name
and the swarm fields, through a forced update of the daemon's service while the
generator writes (the per-node volume carries the positions), and a bad update must roll
back to a running daemon. Prometheus, with deploy/prometheus/prometheus-swarm.yml, finds
the daemon's task through the Swarm API and scrapes it.

Swarm state is the engine's: the swarm is initialised only if inactive and left only
if this test made it; only the stacks, volumes and configs it made are removed. A lock
file keeps two test sessions on one engine from doing this at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from log_capturer.config.loader import load_config
from log_capturer_testkit import (
    REPO,
    TEST_IMAGE,
    assert_exactly_once,
    free_port,
    read_records,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

STACK = REPO / "deploy" / "swarm" / "stack.yml"
STACK_LOKI = REPO / "deploy" / "swarm" / "stack.loki.yml"
IMAGE_CONFIG = REPO / "deploy" / "log_capturer" / "config.yaml"
PROM_DIR = REPO / "deploy" / "prometheus"
PROM_SWARM = PROM_DIR / "prometheus-swarm.yml"
SOCKET = "/var/run/docker.sock"
DATA = "/var/lib/log_capturer"
LOCK = Path(tempfile.gettempdir()) / "log-capturer-swarm-test.lock"
LABEL = "log-capturer-swarm-test"  # what the daemon captures: the generator of this run
LINES = 2000  # about 40 s of writing: the forced update happens in the middle


def docker_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    cli = shutil.which("docker")
    if cli is None:
        pytest.fail("the docker CLI is missing (docker stack deploy needs it)")
    result = subprocess.run(
        [cli, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def service_json(name: str) -> dict[str, Any]:
    return json.loads(docker_cli("service", "inspect", name))[0]  # type: ignore[no-any-return]


def running_tasks(client: docker.DockerClient, service: str) -> list[str]:
    """The ids of the service's running containers (its tasks', on this single node).
    Listed without an inspect each: a task's container may be gone a moment later."""
    return [
        str(c["Id"])
        for c in client.api.containers(
            filters={"label": f"com.docker.swarm.service.name={service}", "status": "running"}
        )
    ]


def stack_containers(client: docker.DockerClient, stack: str) -> list[str]:
    """The ids of every container (any state) of a stack."""
    return [
        str(c["Id"])
        for c in client.api.containers(
            all=True, filters={"label": f"com.docker.stack.namespace={stack}"}
        )
    ]


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
            return response.status == 200  # type: ignore[no-any-return]
    except (OSError, urllib.error.URLError):
        return False


# -- the swarm and what the test deploys on it --------------------------------------------


@pytest.fixture
def swarm(docker_client: docker.DockerClient) -> Iterator[None]:
    """A swarm this node manages: initialised if inactive (then left at the end)."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = docker_client.info()["Swarm"]
        created = False
        if state["LocalNodeState"] == "inactive":
            docker_cli("swarm", "init", "--advertise-addr", "127.0.0.1")
            created = True
        elif not state.get("ControlAvailable"):
            pytest.fail(f"this engine is in a swarm but not a manager: {state['LocalNodeState']}")
        try:
            yield
        finally:
            if created:
                docker_cli("swarm", "leave", "--force")


class Stacks:
    """Stacks this test deployed; removed (and their volumes) when it ends."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.names: list[str] = []

    def deploy(self, name: str, files: list[Path], env: dict[str, str]) -> None:
        self.names.append(name)
        args = ["stack", "deploy", "--resolve-image", "never", "--prune"]
        for f in files:
            args += ["-c", str(f)]
        docker_cli(*args, name, env=env)

    def remove(self, name: str) -> None:
        """``docker stack rm`` returns before the containers are gone: wait for that (a
        daemon's container is gone once it stopped: drained and saved its positions)."""
        docker_cli("stack", "rm", name)
        wait_for(
            lambda: not stack_containers(self.client, name),
            120,
            what=f"the containers of stack {name} gone",
        )
        for volume in self.client.volumes.list(filters={"name": f"{name}_"}):
            if volume.name.startswith(f"{name}_"):
                volume.remove(force=True)
        self.names.remove(name)

    def remove_all(self) -> None:
        for name in list(self.names):
            self.remove(name)


@pytest.fixture
def stacks(docker_client: docker.DockerClient, swarm: None) -> Iterator[Stacks]:
    made = Stacks(docker_client)
    try:
        yield made
    finally:
        made.remove_all()


def capture_overlay(path: Path, run_id: str) -> Path:
    """What the test changes: capture only its own generator, short windows, a quick
    healthcheck (swarm counts a task running once healthy)."""
    overlay = {
        "version": "3.8",
        "services": {
            "log_capturer": {
                "environment": {
                    "LOG_CAPTURER__CONTAINER_MONITOR__INCLUDE_LABELS": f"{{{LABEL}: {run_id}}}",
                    "LOG_CAPTURER__CONTAINER_MONITOR__STREAM_WINDOW": "2s",
                },
                "healthcheck": {"interval": "1s", "start_period": "30s"},
            }
        },
    }
    path.write_text(yaml.safe_dump(overlay))
    return path


def generator_stack(path: Path, run_id: str) -> Path:
    """A replicated service that writes ``line 1 .. line N`` and ends (not restarted)."""
    script = (
        f'i=0; while [ $i -lt {LINES} ]; do i=$((i + 1)); echo "line $i"; sleep 0.02; done'
    ).replace("$", "$$")  # compose interpolation: $$ is a literal $
    stack = {
        "version": "3.8",
        "services": {
            "generator": {
                "image": TEST_IMAGE,
                "command": ["sh", "-c", script],
                "labels": {LABEL: run_id},
                "deploy": {"replicas": 1, "restart_policy": {"condition": "none"}},
            }
        },
    }
    path.write_text(yaml.safe_dump(stack))
    return path


class SinkFile:
    """The file sink's output in the daemon's named volume, read on this node."""

    def __init__(self, client: docker.DockerClient, volume: str) -> None:
        self.client = client
        self.volume = volume

    def records(self) -> list[dict[str, Any]]:
        try:
            mountpoint = self.client.volumes.get(self.volume).attrs["Mountpoint"]
        except docker.errors.NotFound:
            return []
        path = Path(mountpoint) / "logs.jsonl"
        if os.access(Path(mountpoint), os.R_OK | os.X_OK):
            return read_records(path)
        # Not root: read it through a container that mounts the volume.
        raw = self.client.containers.run(
            TEST_IMAGE, ["sh", "-c", "cat /d/logs.jsonl 2>/dev/null || true"],
            volumes={self.volume: {"bind": "/d", "mode": "ro"}}, remove=True,
            network_mode="none",
        )
        return [json.loads(line) for line in raw.splitlines(keepends=True) if line.endswith(b"\n")]

    def messages(self) -> int:
        return len(self.records())


class Prometheus:
    """A real Prometheus (Debian's) with deploy/prometheus/prometheus-swarm.yml."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus missing: run scripts/ensure_tools.sh (scripts/test.sh does)")
        shutil.copy(PROM_DIR / "alerts.yml", work / "alerts.yml")
        config = yaml.safe_load(PROM_SWARM.read_text())
        config["scrape_configs"] = [
            j for j in config["scrape_configs"] if j["job_name"] == "log_capturer"
        ]
        (job,) = config["scrape_configs"]
        job.update(scrape_interval="1s", scrape_timeout="1s")
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.work = work
        with open(work / "prometheus.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
            )

    def targets(self) -> list[dict[str, Any]]:
        assert self.proc.poll() is None, (self.work / "prometheus.log").read_text()[-3000:]
        url = f"http://127.0.0.1:{self.port}/api/v1/targets"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["data"]["activeTargets"]  # type: ignore[no-any-return]
        except (OSError, urllib.error.URLError):
            return []

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the live test ---------------------------------------------------------------------------


def test_stack_captures_a_generator_through_a_forced_update_and_rolls_back_a_bad_one(
    docker_client: docker.DockerClient,
    daemon_image: str,
    stacks: Stacks,
    run_id: str,
    tmp_path: Path,
) -> None:
    engine_name = docker_client.info()["Name"]
    daemon_stack, gen_stack = f"lcd{run_id[:8]}", f"lcg{run_id[:8]}"
    service = f"{daemon_stack}_log_capturer"
    port = free_port()
    env = {
        **os.environ,
        "IMAGE": daemon_image,
        "DOCKER_GID": str(os.stat(SOCKET).st_gid),
        "LOG_CAPTURER_PORT": str(port),
        "UPDATE_MONITOR": "3s",
        "STACK_CONFIG_NAME": daemon_stack,  # swarm configs are per swarm: one per stack
    }
    stacks.deploy(daemon_stack, [STACK, capture_overlay(tmp_path / "overlay.yml", run_id)], env)
    wait_for(lambda: ready(port), 90, what="the daemon's task ready on its host port")
    (first,) = running_tasks(docker_client, service)
    container = docker_client.api.inspect_container(first)["Config"]
    assert container["Hostname"] == engine_name  # {{.Node.Hostname}}
    assert container["User"] == f"10001:{env['DOCKER_GID']}"
    spec = service_json(service)["Spec"]
    assert spec["Mode"] == {"Global": {}}
    prometheus = Prometheus(tmp_path)
    try:
        sink = SinkFile(docker_client, f"{daemon_stack}_data")
        stacks.deploy(gen_stack, [generator_stack(tmp_path / "generator.yml", run_id)], env)
        generator = f"{gen_stack}_generator"
        wait_for(lambda: sink.messages() >= LINES // 8, 60, what="the generator's first lines")

        # A forced update while the generator writes: stop-first, so lines are written
        # while no daemon runs; the new task resumes from the volume's positions.
        docker_cli("service", "update", "--force", "--detach", service)
        wait_for(
            lambda: (t := running_tasks(docker_client, service)) and t != [first],
            90, what="the forced update's new task running",
        )
        assert running_tasks(docker_client, generator), "the generator ended before the update"
        wait_for(lambda: service_json(service)["UpdateStatus"]["State"] == "completed", 90,
                 what="the forced update completed")
        wait_for(lambda: not running_tasks(docker_client, generator), 120,
                 what="the generator done")
        wait_for(lambda: sink.messages() >= LINES, 60, what="every line in the sink")

        # A bad update (the daemon exits at once: no such config) rolls back by itself.
        before = service_json(service)["Spec"]["TaskTemplate"]["ContainerSpec"]
        docker_cli("service", "update", "--detach", "--args", "run -c /nonexistent.yaml", service)
        wait_for(
            lambda: service_json(service)["UpdateStatus"]["State"]
            in ("rollback_completed", "rollback_paused", "paused"),
            120, what="the bad update rolled back",
        )
        after = service_json(service)
        assert after["UpdateStatus"]["State"] == "rollback_completed", after["UpdateStatus"]
        assert after["Spec"]["TaskTemplate"]["ContainerSpec"] == before
        wait_for(lambda: ready(port), 60, what="the rolled-back daemon ready")

        def scraped() -> list[dict[str, Any]]:
            return [t for t in prometheus.targets()
                    if t["labels"].get("job") == "log_capturer" and t["health"] == "up"]

        (target,) = wait_for(scraped, 60, what="Prometheus scraping the task it discovered")
        assert target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
        assert target["labels"]["instance"] == engine_name
        assert target["labels"]["stack"] == daemon_stack
    finally:
        prometheus.stop()

    # Stopped (drained, positions saved): nothing can arrive late any more.
    stacks.remove(gen_stack)
    records_volume = f"{daemon_stack}_data"
    docker_cli("stack", "rm", daemon_stack)
    wait_for(lambda: not stack_containers(docker_client, daemon_stack), 120,
             what="the daemon's containers gone")
    records = SinkFile(docker_client, records_volume).records()
    stacks.remove(daemon_stack)  # and its volume
    (name,) = {r["container_name"] for r in records}
    assert name.startswith(f"{generator}.1.")
    assert_exactly_once(records, name, "stdout", [f"line {i}" for i in range(1, LINES + 1)])
    assert {(r["host"], r["swarm_service"], r["swarm_stack"]) for r in records} == {
        (engine_name, generator, gen_stack)
    }


# -- the files ------------------------------------------------------------------------------


def test_stack_file_runs_one_read_only_daemon_per_node_with_its_own_volume() -> None:
    doc = yaml.safe_load(STACK.read_text())
    (name,) = doc["services"]
    assert name == "log_capturer"
    svc = doc["services"][name]
    assert "group_add" not in svc and "mem_limit" not in svc  # stack deploy refuses them
    assert svc["image"] == "${IMAGE:-log-capturer:local}"
    assert svc["hostname"] == "{{.Node.Hostname}}"
    assert svc["user"].startswith("10001:${DOCKER_GID:?")
    volumes = {v["target"]: v for v in svc["volumes"]}
    assert volumes[SOCKET] == {
        "type": "bind", "source": SOCKET, "target": SOCKET, "read_only": True
    }
    assert volumes[DATA] == {"type": "volume", "source": "data", "target": DATA}
    assert doc["volumes"] == {"data": None}
    (published,) = svc["ports"]
    assert published["target"] == 8001 and published["mode"] == "host"
    assert published["published"] == "${LOG_CAPTURER_PORT:-8001}"
    assert svc["labels"] == {"io.log_capturer.exclude": "true"}
    assert svc["stop_grace_period"] == "30s"
    deploy = svc["deploy"]
    assert deploy["mode"] == "global"
    assert set(deploy["resources"]["limits"]) == {"cpus", "memory"}
    update = deploy["update_config"]
    assert update["failure_action"] == "rollback" and update["order"] == "stop-first"
    assert "monitor" in update and deploy["rollback_config"]["order"] == "stop-first"
    # The image's own config, as a swarm config at the path the image runs with.
    (config,) = svc["configs"]
    assert config["target"] == "/etc/log_capturer/config.yaml"
    assert (STACK.parent / doc["configs"][config["source"]]["file"]).resolve() == IMAGE_CONFIG
    loaded = load_config(IMAGE_CONFIG, environ={})
    assert loaded.positions.path.startswith(DATA + "/")
    assert loaded.sinks.file.path.startswith(DATA + "/")
    assert loaded.server.listen == "0.0.0.0:8001"


def test_loki_overlay_takes_the_password_from_a_swarm_secret(tmp_path: Path) -> None:
    doc = yaml.safe_load(STACK_LOKI.read_text())
    svc = doc["services"]["log_capturer"]
    (secret,) = svc["secrets"]
    mounted = f"/run/secrets/{secret['target']}"
    assert secret["uid"] == "10001" and secret["mode"] == 0o400
    assert doc["secrets"][secret["source"]]["file"].startswith("${LOKI_PASSWORD_FILE:?")
    env = svc["environment"]
    assert env["LOG_CAPTURER__SINKS__LOKI__PASSWORD_FILE"] == mounted
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env)
    # The image's config with these overrides is valid (values the user supplies filled in).
    filled = {
        k: ("http://loki:3100" if "URL" in k else "tenant-1" if "USERNAME" in k else v)
        for k, v in env.items()
    }
    config = load_config(IMAGE_CONFIG, environ=filled)
    loki = config.sinks.loki
    assert loki.enabled and loki.password_file == mounted and loki.username == "tenant-1"
    assert loki.spool_dir.startswith(DATA + "/") and loki.dead_letter_path.startswith(DATA + "/")
