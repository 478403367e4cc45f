"""StatusServer: /metrics, /health and /ready, unknown paths, and a handler that raises."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from log_capturer.server.http import StatusServer, split_listen


class Probes:
    def __init__(self) -> None:
        self.health: tuple[bool, dict[str, Any]] = (True, {"dispatcher": True})
        self.ready: tuple[bool, dict[str, Any]] = (False, {"engine": False})
        self.raise_in_ready = False

    def get_health(self) -> tuple[bool, dict[str, Any]]:
        return self.health

    def get_ready(self) -> tuple[bool, dict[str, Any]]:
        if self.raise_in_ready:
            raise RuntimeError("probe broke")
        return self.ready


class Broken(Collector):
    def collect(self) -> Iterator[Any]:
        raise OSError("no /proc here")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def probes() -> Probes:
    return Probes()


@pytest.fixture
def server(probes: Probes, registry: CollectorRegistry) -> Iterator[StatusServer]:
    made = StatusServer("127.0.0.1:0", probes.get_health, probes.get_ready, registry)
    made.start()
    yield made
    made.stop()


def get(server: StatusServer, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def test_health_and_ready_answer_200_or_503_with_their_detail(
    server: StatusServer, probes: Probes
) -> None:
    status, ctype, body = get(server, "/health")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"status": "ok", "dispatcher": True}
    status, _, body = get(server, "/ready")
    assert status == 503 and json.loads(body) == {"status": "fail", "engine": False}
    probes.health = (False, {"dispatcher": False, "stopping": True})
    probes.ready = (True, {"engine": True, "monitors": 3})
    status, _, body = get(server, "/health?verbose=1")  # the query is ignored
    assert status == 503 and json.loads(body) == {
        "status": "fail",
        "dispatcher": False,
        "stopping": True,
    }
    status, _, body = get(server, "/ready")
    assert status == 200 and json.loads(body) == {"status": "ok", "engine": True, "monitors": 3}


def test_metrics_are_the_registrys_in_prometheus_text_format(
    server: StatusServer, registry: CollectorRegistry
) -> None:
    counter = Counter("demo_things", "Things.", ["kind"], registry=registry)
    counter.labels("a").inc(3)
    status, ctype, body = get(server, "/metrics")
    assert (status, ctype) == (200, CONTENT_TYPE_LATEST)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("demo_things_total", (("kind", "a"),))] == 3


def test_unknown_paths_and_methods(server: StatusServer) -> None:
    assert get(server, "/nope") == (404, "text/plain", b"not found\n")
    assert get(server, "/metrics/extra")[0] == 404
    assert get(server, "/health", method="POST")[0] == 501  # GET only


def test_a_probe_that_raises_answers_500_and_the_server_keeps_serving(
    server: StatusServer, probes: Probes
) -> None:
    probes.raise_in_ready = True
    with structlog.testing.capture_logs() as logs:
        status, ctype, body = get(server, "/ready")
    assert (status, ctype) == (500, "text/plain")
    assert body == b"internal error: RuntimeError('probe broke')\n"
    assert [e["event"] for e in logs] == ["http_handler_failed"]
    assert logs[0]["path"] == "/ready" and logs[0]["log_level"] == "error"
    assert get(server, "/health")[0] == 200


def test_a_collector_that_raises_makes_metrics_answer_500(
    server: StatusServer, registry: CollectorRegistry
) -> None:
    registry.register(Broken())
    status, _, body = get(server, "/metrics")
    assert status == 500 and b"no /proc here" in body
    assert get(server, "/health")[0] == 200


def test_stop_closes_the_port(probes: Probes, registry: CollectorRegistry) -> None:
    server = StatusServer("127.0.0.1:0", probes.get_health, probes.get_ready, registry)
    server.start()
    port = server.port
    assert get(server, "/health")[0] == 200
    server.stop()
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/health")


def test_split_listen() -> None:
    assert split_listen("127.0.0.1:8001") == ("127.0.0.1", 8001)
    assert split_listen(":9000") == ("0.0.0.0", 9000)
    assert split_listen("[::1]:8001") == ("::1", 8001)
