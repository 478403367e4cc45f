"""Running the real daemon against the real engine, and auditing what it delivered.

Every test gets its own run id; its containers carry the label
``log-capturer-test=<run id>`` and its daemon captures only containers with that
label, so tests (and stale containers) never see each other's logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import docker
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
TEST_IMAGE = os.environ.get("TEST_IMAGE", "log-capturer-test/busybox:1")
TEST_LABEL = "log-capturer-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as ``name{label="v",...}`` (labels sorted) -> value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def scrape(url: str, timeout: float = 15) -> dict[str, float]:
    """GET a /metrics URL and parse it."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Daemon:
    """One log_capturer process (``python -m log_capturer run``) with its own data dir."""

    def __init__(
        self,
        workdir: Path,
        run_id: str,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        label: str = TEST_LABEL,
    ) -> None:
        self.workdir = workdir
        self.run_id = run_id
        self.port = free_port()
        self.data = workdir / "data"
        self.config: dict[str, Any] = deep_merge(
            {
                "docker": {"pool": {"wait_timeout": "10s"}},
                "container_monitor": {
                    "stream_window": "2s",
                    "include_labels": {label: run_id},
                    "retry_initial_backoff": "100ms",
                    "retry_max_backoff": "2s",
                },
                "positions": {"path": str(self.data / "positions.json"), "flush_interval": "500ms"},
                "pipeline": {"batch_wait": "50ms"},
                "sinks": {"file": {"enabled": True, "path": str(self.data / "logs.jsonl")}},
                "server": {"listen": f"127.0.0.1:{self.port}"},
                "logging": {"level": "info", "format": "json"},
            },
            overrides or {},
        )
        self.config_path = workdir / "config.yaml"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"daemon-{self.starts}.log"

    def start(self, wait_ready: bool = True) -> Daemon:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.starts += 1
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until it exits
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "log_capturer", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            return self.http_status("/ready") == 200

        wait_for(ready, timeout, what="daemon /ready")

    def http_status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read())

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return response.read().decode()

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.metrics_text())

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics().get(name, default)

    def metric_sum(self, prefix: str) -> float:
        return sum(
            v for k, v in self.metrics().items() if k == prefix or k.startswith(prefix + "{")
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"daemon did not stop within {timeout}s:\n{self.log_tail()}"
            ) from exc

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for n in range(1, self.starts + 1):
            path = self.workdir / f"daemon-{n}.log"
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"event": "unparsed", "text": line})
        return events

    def finished_container(self, name: str) -> bool:
        """Whether the monitor of container ``name`` read it to its end (it exited): what
        the daemon delivers of it is then queued, and a SIGTERM drains it (stop-and-drain
        before an audit). Raises if the daemon itself exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
        return any(
            e.get("event") == "monitor_stopped"
            and e.get("container_name") == name
            and e.get("reason") == "exited"
            for e in self.log_events()
        )

    def records(self, path: Path | None = None) -> list[dict[str, Any]]:
        target = path or self.data / "logs.jsonl"
        try:
            raw = target.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for line in raw.splitlines(keepends=True):
            if line.endswith(b"\n"):  # a line being written right now is not complete yet
                out.append(json.loads(line))
        return out


class Containers:
    """Creates test containers with the run label and removes them all at the end."""

    def __init__(self, client: docker.DockerClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.created: list[Any] = []

    def run(
        self,
        command: str,
        *,
        name: str | None = None,
        tty: bool = False,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        container = self.client.containers.run(
            TEST_IMAGE,
            ["sh", "-c", command],
            name=name,
            tty=tty,
            detach=True,
            labels={TEST_LABEL: self.run_id, **(labels or {})},
            **kwargs,
        )
        self.created.append(container)
        return container

    def wait_exit(self, container: Any, timeout: float = 60) -> int:
        result = container.wait(timeout=timeout)
        return int(result["StatusCode"])

    def cleanup(self) -> None:
        for container in self.client.containers.list(
            all=True, filters={"label": f"{TEST_LABEL}={self.run_id}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def by_stream(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(container_name, stream) -> messages in delivery order."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        out[(record["container_name"], record["stream"])].append(record["message"])
    return out


def assert_exactly_once(
    records: list[dict[str, Any]], container: str, stream: str, expected: list[str]
) -> None:
    """Every expected line delivered once, nothing else, in order."""
    got = by_stream(records).get((container, stream), [])
    if got == expected:
        return
    seen: dict[str, int] = defaultdict(int)
    for message in got:
        seen[message] += 1
    missing = [m for m in expected if m not in seen]
    duplicated = [m for m, n in seen.items() if n > 1]
    position = {m: i for i, m in enumerate(expected)}  # not expected.index: O(n^2) on 60k lines
    unexpected = [m for m in seen if m not in position]
    raise AssertionError(
        f"{container}/{stream}: expected {len(expected)} lines, got {len(got)}; "
        f"missing {len(missing)} {missing[:5]}, duplicated {len(duplicated)} {duplicated[:5]} "
        f"(extra copies {len(got) - len(seen)}), "
        f"unexpected {len(unexpected)} {[u[:60] for u in unexpected[:3]]}, "
        f"in order: {sorted(got, key=position.__getitem__) == got if not unexpected else 'n/a'}"
    )
