"""Containers of one run on the shared engine, found and removed by their run label."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker

from .env import TEST_IMAGE, TEST_LABEL


@dataclass(frozen=True)
class Started:
    """A container and the wall-clock time (``time.time()``) around its create + start."""

    container: Any
    before: float
    after: float

    @property
    def id(self) -> str:
        return str(self.container.id)


class Fleet:
    """Runs ``sh -c <script>`` containers labelled ``<label>=<run_id>``; :meth:`remove_all`
    removes exactly those (by the label, so also the ones a crash left untracked) and
    nothing else on the engine. ``keep`` leaves them for debugging."""

    def __init__(
        self,
        client: docker.DockerClient,
        run_id: str,
        *,
        label: str = TEST_LABEL,
        image: str = TEST_IMAGE,
        keep: bool = False,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.label = label
        self.image = image
        self.keep = keep

    @property
    def selector(self) -> dict[str, str]:
        """The engine filter that finds this run's containers."""
        return {"label": f"{self.label}={self.run_id}"}

    def run(
        self,
        script: str,
        *,
        name: str | None = None,
        tty: bool = False,
        labels: dict[str, str] | None = None,
        log_max_size: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Create and start a container (detached); the docker-py Container."""
        return self.run_timed(
            script, name=name, tty=tty, labels=labels, log_max_size=log_max_size, **kwargs
        ).container

    def run_timed(
        self,
        script: str,
        *,
        name: str | None = None,
        tty: bool = False,
        labels: dict[str, str] | None = None,
        log_max_size: str | None = None,
        **kwargs: Any,
    ) -> Started:
        """:meth:`run`, with the time before and after the engine started it."""
        if log_max_size:
            kwargs["log_config"] = docker.types.LogConfig(
                type="json-file", config={"max-size": log_max_size}
            )
        before = time.time()
        container = self.client.containers.run(
            self.image,
            ["sh", "-c", script],
            name=name,
            tty=tty,
            detach=True,
            labels={self.label: self.run_id, **(labels or {})},
            **kwargs,
        )
        return Started(container, before, time.time())

    def run_many(
        self, specs: Iterable[tuple[str, str]], workers: int = 8, **kwargs: Any
    ) -> dict[str, Started]:
        """Start ``(name, script)`` containers from a thread pool; name -> :class:`Started`."""

        def one(spec: tuple[str, str]) -> tuple[str, Started]:
            name, script = spec
            return name, self.run_timed(script, name=name, **kwargs)

        with ThreadPoolExecutor(workers) as pool:
            return dict(pool.map(one, specs))

    def wait_exit(self, container: Any, timeout: float = 60) -> int:
        """Wait for the container to exit; its exit code."""
        result = container.wait(timeout=timeout)
        return int(result["StatusCode"])

    def kill_all(self, workers: int = 8) -> None:
        """SIGKILL every running container of the run (their logs stay)."""

        def one(container: Any) -> None:
            with contextlib.suppress(docker.errors.APIError):  # already exited
                container.kill()

        running = self.client.containers.list(filters=self.selector)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, running))

    def remove_all(self, workers: int = 8) -> int:
        """Remove every container of the run (unless ``keep``); how many were removed."""
        if self.keep:
            print(f"keeping the containers labelled {self.label}={self.run_id}", file=sys.stderr)
            return 0

        def one(container: Any) -> None:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                print(f"could not remove {container.name}: {exc}", file=sys.stderr)

        mine = self.client.containers.list(all=True, filters=self.selector)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, mine))
        return len(mine)


def engine_lines(client: docker.DockerClient, name: str) -> dict[str, list[str]]:
    """What a container wrote, per stream, as the engine's own log has it."""
    container = client.containers.get(name)
    out = {}
    for stream, flags in (
        ("stdout", {"stdout": True, "stderr": False}),
        ("stderr", {"stdout": False, "stderr": True}),
    ):
        text = container.logs(**flags).decode("utf-8", "replace")
        out[stream] = text.splitlines()
    return out
