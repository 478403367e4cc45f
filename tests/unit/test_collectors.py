"""The scrape-time collectors report what is really there: threads, FDs, pool connections."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from log_capturer.docker.config import DockerConfig, PoolConfig
from log_capturer.docker.engine import DockerEngine
from log_capturer.docker.stream import ManagedResponse
from log_capturer.metrics.collectors import (
    PoolCollector,
    RuntimeCollector,
    register_runtime_collectors,
)

from .fake_engine import FakeEngine

P = "log_capturer_docker_pool"


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until true; the timeout only keeps a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} not exported"
    return value


def test_threads_follow_the_live_threads() -> None:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector())
    before = sample(registry, "log_capturer_threads")
    assert before == threading.active_count()
    release = threading.Event()
    threads = [threading.Thread(target=release.wait) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert sample(registry, "log_capturer_threads") == before + 3
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert sample(registry, "log_capturer_threads") == before


def test_file_descriptors_follow_the_open_descriptors() -> None:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector())
    before = sample(registry, "log_capturer_file_descriptors_open")
    assert before == len(os.listdir("/proc/self/fd")) - 1  # the listing's own FD excluded
    pipes = [os.pipe() for _ in range(2)]
    try:
        assert sample(registry, "log_capturer_file_descriptors_open") == before + 4
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
    assert sample(registry, "log_capturer_file_descriptors_open") == before


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeEngine]:
    engine = FakeEngine(tmp_path / "engine.sock")
    yield engine
    engine.stop()


def test_pool_figures_match_the_connections_the_engine_sees(fake: FakeEngine) -> None:
    config = DockerConfig(
        socket_path=fake.path,
        timeout=5,
        api_version="1.41",
        pool=PoolConfig(max_open=5, max_idle=5),
    )
    engine = DockerEngine(config)
    registry = CollectorRegistry()
    registry.register(PoolCollector(engine.pool))
    url = engine.url("/containers/{0}/logs", "abc")
    streams = [ManagedResponse(engine.get(url, {"seconds": 30}, stream=True)) for _ in range(2)]
    try:
        assert engine.ping()
        # The engine side: three connections accepted and still open.
        wait_for(lambda: len(fake.server.live) == 3, "three connections at the engine")
        assert sample(registry, f"{P}_connections", state="in_use") == 2
        assert sample(registry, f"{P}_connections", state="idle") == 1
        assert sample(registry, f"{P}_open_connections") == 3
        assert sample(registry, f"{P}_max_open") == 5
        assert sample(registry, f"{P}_new_connections_total") == 3
        assert sample(registry, f"{P}_requests_total", kind="stream") == 2
        assert sample(registry, f"{P}_requests_total", kind="api") == 1
        assert sample(registry, f"{P}_reuses_total", kind="api") == 0
        assert sample(registry, f"{P}_waiting") == 0
        assert engine.ping()  # served by the idle connection
        assert sample(registry, f"{P}_reuses_total", kind="api") == 1
        assert sample(registry, f"{P}_reuse_ratio", kind="api") == 0.5
    finally:
        for stream in streams:
            stream.interrupt()
            stream.close()
    # Interrupted streams are closed, not reused: the engine sees one connection left.
    wait_for(lambda: len(fake.server.live) == 1, "the dropped connections gone at the engine")
    assert sample(registry, f"{P}_open_connections") == 1
    assert sample(registry, f"{P}_connections", state="in_use") == 0
    assert sample(registry, f"{P}_closed_total", reason="closed_in_use") == 2
    engine.close()
    assert sample(registry, f"{P}_open_connections") == 0
    assert sample(registry, f"{P}_closed_total", reason="pool_closed") == 1


def test_registered_collectors_can_be_removed_and_registered_again(fake: FakeEngine) -> None:
    config = DockerConfig(socket_path=fake.path, api_version="1.41")
    engine = DockerEngine(config)
    registry = CollectorRegistry()
    try:
        first = register_runtime_collectors(engine.pool, registry)
        assert registry.get_sample_value("log_capturer_threads") is not None
        assert registry.get_sample_value(f"{P}_open_connections") == 0
        first.unregister()
        assert registry.get_sample_value("log_capturer_threads") is None
        assert registry.get_sample_value(f"{P}_open_connections") is None
        again = register_runtime_collectors(engine.pool, registry)  # a daemon started again
        assert registry.get_sample_value("log_capturer_threads") is not None
        again.unregister()
    finally:
        engine.close()
