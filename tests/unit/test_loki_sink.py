"""LokiSink against the real Loki v3.4.6 (what Loki stores, refuses and shows), through a TCP
proxy for outages, and against tests/fake_loki.py only for faults Loki cannot be made to
produce on demand (fixed 429/5xx sequences, Retry-After, lost responses, slow answers, an
unknown 400 format, an Authorization check)."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import structlog
from prometheus_client import REGISTRY
from pydantic import ValidationError

from log_capturer.discovery.container import COMPOSE_PROJECT, COMPOSE_SERVICE, ContainerInfo
from log_capturer.pipeline.batch import RecordBatch
from log_capturer.pipeline.record import LogRecord
from log_capturer.sinks.base import SinkError
from log_capturer.sinks.loki import (
    LokiSink,
    LokiSinkConfig,
    LokiUnavailableError,
    SecretUnavailableError,
)
from log_capturer.sinks.loki.responses import classify
from log_capturer.sinks.network.bisection import max_requests
from log_capturer.sinks.network.spool import DiskSpool
from log_capturer.timestamps import format_rfc3339_ns
from log_capturer_testkit.loki import LIMITS_TENANT, NO_METADATA_TENANT, RealLoki, selector
from tests.fake_loki import FakeLoki
from tests.loki_cases import CASES, normalize, provoke, recorded
from tests.tcp_proxy import TcpProxy

# Longer than any write that honours its retry budget (at most a few tenths of a second
# here), far shorter than one stuck until the server returns (forever).
STUCK = 10.0

WEB = ContainerInfo(
    id="c0ffee" * 10 + "abcd", name="web", image="nginx:1.27",
    labels={COMPOSE_SERVICE: "web", COMPOSE_PROJECT: "shop"},
)
DB = ContainerInfo(id="d" * 64, name="db", image="postgres:16")
HOUR_NS = 3600 * 10**9


# -- helpers -------------------------------------------------------------------------------


def record(message: str, ts_ns: int, *, container: ContainerInfo = WEB, stream: str = "stdout",
           seq: int = 0, truncated: bool = False) -> LogRecord:
    return LogRecord(container, stream, ts_ns, seq, format_rfc3339_ns(ts_ns), message,
                     truncated=truncated)


def records(n: int, *, prefix: str = "line", container: ContainerInfo = WEB,
            stream: str = "stdout", start_ns: int | None = None) -> list[LogRecord]:
    start = time.time_ns() if start_ns is None else start_ns
    return [record(f"{prefix} {i}", start + i * 1000, container=container, stream=stream)
            for i in range(n)]


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def requests_sent(status: str | None = None) -> float:
    """Requests the Loki sink made so far (of one status, or all)."""
    total = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "log_capturer_sink_request_duration_seconds_count"
                    and sample.labels.get("sink") == "loki"
                    and (status is None or sample.labels.get("status") == status)):
                total += sample.value
    return total


def dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def settings(tmp_path: Path, url: str, **overrides: Any) -> LokiSinkConfig:
    values: dict[str, Any] = {
        "enabled": True, "url": url, "host": "testhost",
        "min_backoff": 0.01, "max_backoff": 0.05, "retry_budget": 0.3,
        "timeout": 2.0, "connect_timeout": 1.0, "close_timeout": 2.0,
        "spool_dir": str(tmp_path / "spool"), "dead_letter_path": str(tmp_path / "dead.jsonl"),
    }
    values.update(overrides)
    return LokiSinkConfig(**values)


class RecordsLokiSink(LokiSink):
    """The sink, written records as the dispatcher's batches (one per container)."""

    def write_records(self, records: list[LogRecord]) -> None:
        self.write(RecordBatch.group(records))


SinkFactory = Callable[..., RecordsLokiSink]


@pytest.fixture
def run() -> str:
    """A label value of this test's own, for tests sharing a tenant with small limits."""
    return f"r{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_sink(
    tmp_path: Path, loki_tenant: str, request: pytest.FixtureRequest
) -> Iterator[SinkFactory]:
    """Sinks pushing to the real Loki as this test's tenant, unless told otherwise (a
    ``url``: then the real Loki is not asked for, so a test of the fake alone does not
    depend on it)."""
    sinks: list[LokiSink] = []

    def make(url: str | None = None, **overrides: Any) -> RecordsLokiSink:
        overrides.setdefault("tenant_id", loki_tenant)
        if url is None:
            url = request.getfixturevalue("real_loki").url
        sink = RecordsLokiSink(settings(tmp_path, url, **overrides))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server
    assert not server.errors, server.errors


@pytest.fixture
def proxy(real_loki: RealLoki) -> Iterator[TcpProxy]:
    """The real Loki behind a proxy the test can take down and bring back."""
    with TcpProxy(real_loki.port) as front:
        yield front


@pytest.fixture
def fake_proxy(fake: FakeLoki) -> Iterator[TcpProxy]:
    """The fake behind a proxy: for tests that only take "Loki" away (no real one)."""
    with TcpProxy(fake.port) as front:
        yield front


@pytest.fixture
def dead_path(tmp_path: Path) -> Path:
    return tmp_path / "dead.jsonl"


def stored(loki: RealLoki, tenant: str, **labels: str) -> list[str]:
    return loki.lines(selector(**labels), tenant)


def wait_stored(loki: RealLoki, tenant: str, count: int, timeout: float = 20,
                **labels: str) -> list[str]:
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = stored(loki, tenant, **labels)
        if len(lines) >= count:
            return lines
        time.sleep(0.1)
    raise AssertionError(f"{len(lines)} of {count} entries in Loki after {timeout}s")


# -- what Loki stores ----------------------------------------------------------------------


def test_loki_stores_each_stream_by_low_cardinality_labels_in_order(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    now = time.time_ns()
    batch = [
        record("third", now + 2), record("first", now), record("second", now + 1),
        record("oops", now + 5, stream="stderr"),
        record("ready", now + 3, container=DB),
    ]
    before = requests_sent("204")
    make_sink().write_records(batch)
    assert requests_sent("204") == before + 1  # one push

    entries = real_loki.entries('{host="testhost"}', loki_tenant)
    by_labels: dict[str, list[str]] = {}
    for entry in entries:
        by_labels.setdefault(json.dumps(entry.labels, sort_keys=True), []).append(entry.line)
    web_out = {"container_name": "web", "compose_service": "web", "stream": "stdout",
               "host": "testhost", "service_name": "web"}  # Loki adds service_name
    web_err = {**web_out, "stream": "stderr"}
    db_out = {"container_name": "db", "stream": "stdout", "host": "testhost",
              "service_name": "db"}  # no compose label
    assert by_labels == {
        json.dumps(web_out, sort_keys=True): ["first", "second", "third"],
        json.dumps(web_err, sort_keys=True): ["oops"],
        json.dumps(db_out, sort_keys=True): ["ready"],
    }
    # no per-line metadata by default: only the detected_level Loki adds
    assert {json.dumps(e.metadata) for e in entries} == {'{"detected_level": "unknown"}'}


def test_pushes_are_protobuf_and_snappy_by_default_json_and_gzip_on_request(
    tmp_path: Path, fake: FakeLoki, make_sink: SinkFactory, real_loki: RealLoki,
    loki_tenant: str,
) -> None:
    make_sink(fake.url, spool_dir=str(tmp_path / "s1")).write_records(records(3))
    make_sink(fake.url, encoding="json", spool_dir=str(tmp_path / "s2")).write_records(records(2))
    first, second = fake.pushes()
    assert first.headers["content-type"] == "application/x-protobuf"
    assert "content-encoding" not in first.headers
    assert second.headers["content-type"] == "application/json"
    assert second.headers["content-encoding"] == "gzip"
    assert [e.line for _, e in first.entries()] == ["line 0", "line 1", "line 2"]
    # and the real Loki takes both
    make_sink(encoding="json", spool_dir=str(tmp_path / "s3")).write_records(
        records(2, prefix="json", container=DB))
    make_sink(spool_dir=str(tmp_path / "s4")).write_records(
        records(2, prefix="proto", container=DB))
    assert stored(real_loki, loki_tenant, container_name="db") == [
        "json 0", "json 1", "proto 0", "proto 1"]


def test_structured_metadata_when_opted_in_shows_in_queries(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    now = time.time_ns()
    make_sink(structured_metadata=["container_id", "image", "compose_project", "truncated"]
              ).write_records([record("a", now), record("b", now + 1, truncated=True)])
    first, second = real_loki.entries(selector(container_name="web"), loki_tenant)
    base = {"container_id": WEB.id, "image": "nginx:1.27", "compose_project": "shop",
            "detected_level": "unknown"}
    assert first.metadata == base
    assert second.metadata == {**base, "truncated": "true"}


def test_labels_are_configurable_sanitized_and_static(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    make_sink(labels=["container_name"], static_labels={"env-name": "prod", "9zone": "eu"}
              ).write_records(records(2))
    [first, _] = real_loki.entries(selector(container_name="web"), loki_tenant)
    assert first.labels == {"_9zone": "eu", "container_name": "web", "env_name": "prod",
                            "service_name": "web"}


def test_json_lines_stay_valid_json_when_cut(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    batch = records(2)
    make_sink(line_format="json", max_line_bytes=1000).write_records(
        [*batch, record('"quoted"\n' * 500, time.time_ns() + 10**6)])
    lines = stored(real_loki, loki_tenant, container_name="web")
    assert [json.loads(line) for line in lines[:2]] == [r.to_dict() for r in batch]
    assert len(lines[2].encode()) <= 1000
    doc = json.loads(lines[2])
    assert doc["truncated"] is True and doc["message"].startswith('"quoted"\n')


def test_config_rejects_what_loki_or_cardinality_forbids() -> None:
    with pytest.raises(ValidationError, match="structured metadata"):
        LokiSinkConfig(labels=["container_name", "container_id"])
    with pytest.raises(ValidationError, match="unknown label"):
        LokiSinkConfig(labels=["container_name", "pod"])
    with pytest.raises(ValidationError, match="at most 15"):
        LokiSinkConfig(static_labels={f"l{i}": "x" for i in range(12)})
    with pytest.raises(ValidationError, match="both become"):
        LokiSinkConfig(static_labels={"a-b": "1", "a.b": "2"})
    with pytest.raises(ValidationError, match="credentials"):
        LokiSinkConfig(url="http://user:pw@loki:3100")
    with pytest.raises(ValidationError, match="exactly one"):
        LokiSinkConfig(username="u")
    with pytest.raises(ValidationError, match="not both"):
        LokiSinkConfig(username="u", password_env="P", bearer_token_env="T")
    with pytest.raises(ValidationError, match="batch_bytes"):
        LokiSinkConfig(batch_bytes="8MiB")
    with pytest.raises(ValidationError, match="encoding"):
        LokiSinkConfig(encoding="xml")
    assert LokiSinkConfig(max_request_bytes="64KiB").batch_bytes == 65536  # the old name
    assert LokiSinkConfig(url="https://loki:3100/loki/api/v1/push/").url == "https://loki:3100"
    assert LokiSinkConfig(tenant_id="").tenant_id is None
    assert LokiSinkConfig().structured_metadata == ["truncated"]


# -- sizes ---------------------------------------------------------------------------------


def test_big_batches_become_pushes_of_batch_bytes_exactly_once_in_order(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    start = time.time_ns()
    batch = []
    for container in (WEB, DB):
        for stream in ("stdout", "stderr"):
            batch += records(75, prefix=f"{container.name}-{stream}-" + "x" * 60,
                             container=container, stream=stream, start_ns=start)
    sent_before = metric("log_capturer_sink_records_total", sink="loki", status="sent")
    before = requests_sent("204")
    make_sink(batch_bytes=4096).write_records(batch)
    pushes = requests_sent("204") - before
    line_bytes = sum(len(r.message) for r in batch)  # what Promtail's batchsize counts
    assert line_bytes / 4096 <= pushes <= line_bytes / 4096 + 1
    for container in (WEB, DB):
        for stream in ("stdout", "stderr"):
            prefix = f"{container.name}-{stream}-" + "x" * 60
            assert stored(real_loki, loki_tenant, container_name=container.name,
                          stream=stream) == [f"{prefix} {i}" for i in range(75)]
    after = metric("log_capturer_sink_records_total", sink="loki", status="sent")
    assert after - sent_before == 300


def test_long_lines_are_cut_to_lokis_limit_and_marked(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    now = time.time_ns()
    long_message = "é" * 150_000  # 300,000 bytes: over Loki's 262,144
    before = metric("log_capturer_loki_lines_truncated_total")
    make_sink().write_records([record(long_message, now), record("short", now + 1)])
    cut, short = real_loki.entries(selector(container_name="web"), loki_tenant)
    assert 262_000 < len(cut.line.encode()) <= 262_144
    assert long_message.startswith(cut.line)
    assert cut.metadata.get("truncated") == "true"
    assert short.line == "short" and "truncated" not in short.metadata
    assert metric("log_capturer_loki_lines_truncated_total") == before + 1


# -- Loki's 400s: settled in one request, named entries dead-lettered ----------------------


def error_groups(text: str) -> list[str]:
    return sorted(text.rstrip("\n").split("; "))


def test_the_recorded_400_texts_are_what_this_loki_answers(
    real_loki: RealLoki, loki_tenant: str
) -> None:
    """Each refusal of tests/loki_cases.py provoked again: same text (but for the run label,
    times and tenant), the same entries named, and Loki stored exactly the others."""
    recordings = recorded()
    for name, case in CASES.items():
        run = f"{name.replace('_', '')[:12]}{uuid.uuid4().hex[:6]}"
        status, text, push = provoke(real_loki.url, case, loki_tenant, run, time.time_ns())
        assert status == 400, (name, text)
        rec = recordings[name]
        # Loki lists the groups of a grouped answer ("N errors like: ...; ...") in any order.
        want = error_groups(normalize(rec.text, rec.run))
        assert error_groups(normalize(text, run)) == want, name
        outcome = classify(status, text, {}, push, lambda _: None)
        named = sorted(p for positions, _ in outcome.named for p in positions)  # type: ignore[union-attr]
        assert named == case.refused, name
        if case.unresolved is not None:
            continue  # nothing stored: the whole request was refused
        refused = set(case.refused) | set(case.resend)
        expected = sorted(
            (push.streams.ts_ns[i], push.streams.lines[i].decode())
            for i in range(len(push)) if i not in refused
        )
        tenant = case.tenant or loki_tenant
        got = sorted((e.ts_ns, e.line) for e in real_loki.entries(selector(run=run), tenant))
        if case.setup is not None:
            got = [g for g in got if not g[1].startswith("ok")]
        assert got == expected, name


def test_one_oversized_line_costs_one_request_and_the_rest_is_stored_once(
    make_sink: SinkFactory, real_loki: RealLoki, run: str, dead_path: Path
) -> None:
    now = time.time_ns()
    batch = [record(f"ok {i}", now + i) for i in range(20)]
    batch.insert(7, record("x" * 2000, now + 6, seq=1))
    before = requests_sent()
    with structlog.testing.capture_logs() as logs:
        make_sink(tenant_id=LIMITS_TENANT, labels=["container_name", "stream"],
                  static_labels={"run": run}, max_line_bytes=0).write_records(batch)
    assert requests_sent() - before == 1
    assert stored(real_loki, LIMITS_TENANT, run=run) == [f"ok {i}" for i in range(20)]
    [dead] = dead_letters(dead_path)
    assert dead["line"] == "x" * 2000 and dead["status"] == 400
    assert "Max entry size '1024' bytes exceeded" in dead["error"] and "2000" in dead["error"]
    assert dead["stream"] == {"container_name": "web", "stream": "stdout", "run": run}
    events = [e for e in logs if e["event"] == "sink_entries_dead_lettered"]
    assert len(events) == 1 and events[0]["requests"] == 1 and events[0]["records"] == 1


def test_a_refused_stream_costs_one_request_one_log_line_and_no_resend(
    make_sink: SinkFactory, real_loki: RealLoki, run: str, dead_path: Path
) -> None:
    start = time.time_ns()
    batch = records(50, prefix="web", start_ns=start) + records(
        10, prefix="db", container=DB, start_ns=start)
    before = requests_sent()
    dead_before = metric("log_capturer_dead_letter_records_total", sink="loki")
    with structlog.testing.capture_logs() as logs:
        # container_name, compose_service, stream, host and run: 5 labels for web, over
        # the tenant's limit of 4; db has no compose service
        make_sink(tenant_id=LIMITS_TENANT, static_labels={"run": run}).write_records(batch)
    assert requests_sent() - before == 1
    assert stored(real_loki, LIMITS_TENANT, run=run) == [f"db {i}" for i in range(10)]
    dead = dead_letters(dead_path)
    assert [d["line"] for d in dead] == [f"web {i}" for i in range(50)]
    assert all("has 5 label names; limit 4" in d["error"] for d in dead)
    assert metric("log_capturer_dead_letter_records_total", sink="loki") == dead_before + 50
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "sink_entries_dead_lettered"]


def test_a_too_old_entry_is_dead_lettered_without_bisecting(
    make_sink: SinkFactory, real_loki: RealLoki, run: str, dead_path: Path
) -> None:
    now = time.time_ns()
    batch = [*records(15, start_ns=now), record("ancient", now - 3 * HOUR_NS, seq=1)]
    batch += records(5, container=DB, start_ns=now)
    before = requests_sent()
    make_sink(tenant_id=LIMITS_TENANT, labels=["container_name", "stream"],
              static_labels={"run": run}).write_records(batch)
    assert requests_sent() - before == 1
    assert len(stored(real_loki, LIMITS_TENANT, run=run)) == 20
    [dead] = dead_letters(dead_path)
    assert dead["line"] == "ancient" and dead["ts"] == str(now - 3 * HOUR_NS)
    assert "timestamp too old" in dead["error"]


def test_structured_metadata_a_loki_disallows_is_dropped_not_the_entries(
    make_sink: SinkFactory, real_loki: RealLoki, run: str, dead_path: Path
) -> None:
    sink = make_sink(tenant_id=NO_METADATA_TENANT, static_labels={"run": run},
                     structured_metadata=["container_id"])
    before = requests_sent()
    with structlog.testing.capture_logs() as logs:
        sink.write_records(records(3))
        sink.write_records(records(2, prefix="later"))
    assert requests_sent() - before == 3  # one refusal, its resend, then no metadata
    lines = stored(real_loki, NO_METADATA_TENANT, run=run)
    assert sorted(lines) == sorted([f"line {i}" for i in range(3)] + ["later 0", "later 1"])
    assert dead_letters(dead_path) == []
    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "loki_structured_metadata_disallowed"]


def test_without_a_tenant_or_at_a_wrong_path_loki_refuses_the_whole_request(
    tmp_path: Path, make_sink: SinkFactory, real_loki: RealLoki, dead_path: Path
) -> None:
    anonymous = make_sink(tenant_id="")
    anonymous.write_records(records(2, prefix="anonymous"))
    dead = dead_letters(dead_path)
    assert [(d["status"], d["error"]) for d in dead] == [(401, "no org id")] * 2
    assert not anonymous.up and metric("log_capturer_sink_up", sink="loki") == 0
    lost = make_sink(url=real_loki.url + "/nowhere", spool_dir=str(tmp_path / "s2"))
    lost.write_records(records(1, prefix="lost"))
    assert dead_letters(dead_path)[-1]["status"] == 404
    make_sink(spool_dir=str(tmp_path / "s3")).write_records(records(1))
    assert metric("log_capturer_sink_up", sink="loki") == 1


def test_a_400_this_sink_cannot_read_is_bisected_within_the_bound(
    tmp_path: Path, fake: FakeLoki, make_sink: SinkFactory, dead_path: Path
) -> None:
    fake.refuse(lambda labels, entry: entry.line in {"line 3", "line 17"},
                "a refusal in a format of a later Loki")
    with structlog.testing.capture_logs() as logs:
        make_sink(fake.url).write_records(records(21))
    assert len(fake.requests) <= max_requests(21)
    dead = dead_letters(dead_path)
    assert {d["line"] for d in dead if not d.get("unresolved")} <= {"line 3", "line 17"}
    assert {"line 3", "line 17"} <= {d["line"] for d in dead}
    assert set(fake.lines()) | {d["line"] for d in dead} == {f"line {i}" for i in range(21)}
    [event] = [e for e in logs if e["event"] == "sink_entries_dead_lettered"]
    assert event["requests"] == len(fake.requests) <= event["max_requests"] == max_requests(21)


# -- transient failures (the fake: fixed sequences) ------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_busy_or_failing_loki_is_retried(
    fake: FakeLoki, make_sink: SinkFactory, status: int
) -> None:
    retries = metric("log_capturer_sink_retries_total", sink="loki")
    retried = metric("log_capturer_sink_records_total", sink="loki", status="retried")
    fake.fail(status, times=2)
    make_sink(fake.url).write_records(records(4))
    assert [r.status for r in fake.requests] == [status, status, 204]
    assert fake.count() == 4
    assert metric("log_capturer_sink_retries_total", sink="loki") == retries + 2
    assert metric("log_capturer_sink_records_total", sink="loki", status="retried") == retried + 8


def test_retry_after_is_honoured(fake: FakeLoki, make_sink: SinkFactory) -> None:
    fake.rate_limit(times=1, retry_after="1")
    make_sink(fake.url, retry_budget=3.0).write_records(records(1))
    first, second = fake.requests
    assert first.status == 429 and second.status == 204
    assert second.received_at - first.received_at >= 0.95  # not min_backoff (10 ms)


def test_retry_after_beyond_the_budget_spools_at_once(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    fake.rate_limit(retry_after="30")
    sink = make_sink(fake.url, retry_budget=2.0)
    with structlog.testing.capture_logs() as logs:
        sink.write_records(records(3))
    # Waiting 30 s would overrun the 2 s budget: the write schedules no retry (the
    # replayer, which has no budget, may already be waiting its 30 s).
    retries = [e for e in logs if e["event"] == "sink_request_retry"]
    assert [e for e in retries if e["wait_seconds"] < 30] == [], retries
    assert fake.requests[0].status == 429
    assert sink.spool is not None and sink.spool.records == 3


def test_a_lost_response_is_retried_and_loki_keeps_one_copy(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    fake.drop_connections(times=1, after_ingest=True)
    make_sink(fake.url).write_records(records(5))
    assert [r.status for r in fake.requests] == [None, 204]
    assert fake.count() == 5


def test_timeouts_are_transient_and_resending_is_harmless(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    fake.delay(0.5)
    sink = make_sink(fake.url, timeout=0.1, retry_budget=0.3, spool_max_bytes=0)
    batch = records(3)
    with pytest.raises(LokiUnavailableError, match="Timeout"):
        sink.write_records(batch)
    fake.clear_faults()
    sink.write_records(batch)  # the dispatcher's retry of the same batch
    assert fake.wait_for_count(3)
    # Every push answered, the delayed ones the client gave up on included: their
    # copies are stored by now, and Loki kept one of each.
    deadline = time.monotonic() + 5
    while any(r.status is None for r in fake.requests):
        assert time.monotonic() < deadline, "a delayed push was never answered"
        time.sleep(0.01)
    assert len(fake.requests) > 1
    assert fake.count() == 3 and fake.lines() == ["line 0", "line 1", "line 2"]


def test_without_a_spool_an_outage_is_a_sink_error(
    fake_proxy: TcpProxy, make_sink: SinkFactory
) -> None:
    sink = make_sink(fake_proxy.url, spool_max_bytes=0)
    fake_proxy.down()
    started = time.monotonic()
    with pytest.raises(SinkError, match="loki unavailable"):
        sink.write_records(records(2))
    # The budget is 0.3 s; a write that ignored it would wait for the proxy forever. The
    # bound is far from both, so a busy machine does not decide the test.
    assert time.monotonic() - started < STUCK
    assert not sink.up


# -- pushes: full across deliveries, built ahead, one in flight (tests/fake_loki.py) ---------


def deliveries(n: int, size: int, start_ns: int) -> list[list[RecordBatch]]:
    """``n`` deliveries of ``size`` 50-byte lines each, numbered on, as the dispatcher
    hands them over."""
    out = []
    for d in range(n):
        group = [record(f"{d * size + i:06d} " + "x" * 43, start_ns + (d * size + i) * 1000)
                 for i in range(size)]
        out.append(RecordBatch.group(group))
    return out


def test_small_deliveries_fill_pushes_of_batch_bytes_sent_in_order(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    sink = make_sink(fake.url, batch_bytes=2000, batch_wait=3600.0)
    start = time.time_ns()
    tickets = [sink.submit(d, None) for d in deliveries(10, 10, start)]  # 500 bytes each
    assert tickets == list(range(1, 11))
    # 5,000 bytes of lines: two full pushes of 2,000 go at once, the rest waits for more
    assert sink.wait(8, 5.0) and sink.accepted() == 8
    assert not sink.wait(9, 0.2) and len(fake.pushes()) == 2
    assert sink.next_deadline() is not None
    sink.poll(time.monotonic() + 3600.0)  # batch_wait is over: what is left goes as it is
    assert sink.wait(10, 5.0)
    assert [len(p.entries()) for p in fake.pushes()] == [40, 40, 20]
    assert fake.lines() == [f"{i:06d} " + "x" * 43 for i in range(100)]


def test_the_next_push_is_built_while_one_is_in_flight(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    sink = make_sink(fake.url, batch_bytes=1024, batch_wait=3600.0)
    fake.delay(1.0)
    first, second = deliveries(2, 21, time.time_ns())  # 1,050 bytes each: a push and a bit
    assert sink.submit(first, None) == 1
    deadline = time.monotonic() + 5
    while not fake.requests:  # the first push is in flight
        assert time.monotonic() < deadline, "the first push was never sent"
        time.sleep(0.005)
    assert sink.submit(second, 0.0) == 2  # taken at once, not after Loki's answer
    built = sink._pushes._queue
    assert len(built) == 2 and built[1][0]._body is not None  # the next one, encoded
    assert len(fake.requests) == 1 and fake.requests[0].status is None  # one at a time
    sink.flush()
    assert sink.wait(2, 10.0)
    assert [len(p.entries()) for p in fake.pushes()] == [20, 20, 2]
    assert fake.lines() == [f"{i:06d} " + "x" * 43 for i in range(42)]


def test_a_pipeline_that_fails_drops_what_it_holds_and_write_sends_it_again(
    fake_proxy: TcpProxy, fake: FakeLoki, make_sink: SinkFactory
) -> None:
    sink = make_sink(fake_proxy.url, spool_max_bytes=0, batch_bytes=1024, batch_wait=3600.0)
    first, second = deliveries(2, 30, time.time_ns())
    fake_proxy.down()
    assert sink.submit(first, None) == 1
    with pytest.raises(SinkError, match="loki unavailable"):  # after retry_budget
        sink.wait(1, 10.0)
    assert sink.failed
    with pytest.raises(SinkError, match="loki unavailable"):
        sink.submit(second, None)
    fake_proxy.up()
    sink.write(first)  # the dispatcher's way back: written again, synchronously
    sink.write(second)
    assert not sink.failed and sink.accepted() == 3
    assert fake.lines() == [f"{i:06d} " + "x" * 43 for i in range(60)]


# -- the spool (the real Loki behind a proxy that goes away) ---------------------------------


def test_an_outage_is_spooled_and_replayed_in_order(
    proxy: TcpProxy, make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str,
    tmp_path: Path,
) -> None:
    sink = make_sink(proxy.url)
    start = time.time_ns()
    sink.write_records(records(10, prefix="before", start_ns=start))
    spooled = metric("log_capturer_sink_records_total", sink="loki", status="spooled")
    lag = metric("log_capturer_delivery_lag_seconds_count", sink="loki")
    proxy.down()
    started = time.monotonic()
    sink.write_records(records(10, prefix="during", start_ns=start + 10**6))
    assert time.monotonic() - started < STUCK  # accepted after retry_budget (0.3 s), not stuck
    # behind the spool
    sink.write_records(records(10, prefix="during2", start_ns=start + 2 * 10**6))
    assert sink.spool is not None and sink.spool.records == 20
    assert list((tmp_path / "spool").glob("*.seg"))
    assert metric("log_capturer_sink_records_total", sink="loki", status="spooled") == spooled + 20
    assert metric("log_capturer_spool_records", sink="loki") == 20
    assert not sink.up

    proxy.up()
    expected = ([f"before {i}" for i in range(10)] + [f"during {i}" for i in range(10)]
                + [f"during2 {i}" for i in range(10)])
    assert wait_stored(real_loki, loki_tenant, 30, container_name="web") == expected
    deadline = time.monotonic() + 5
    while not sink.spool.empty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.spool.empty and metric("log_capturer_spool_records", sink="loki") == 0
    assert metric("log_capturer_delivery_lag_seconds_count", sink="loki") > lag
    sink.write_records(records(1, prefix="after", start_ns=start + 3 * 10**6))  # direct again
    assert stored(real_loki, loki_tenant, container_name="web")[-1] == "after 0" and sink.up


def test_new_batches_queue_behind_the_spool_while_loki_recovers(
    proxy: TcpProxy, make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    # min_backoff 1s: after its first failure the replayer waits 0.5-1s, so Loki is back
    # while the spool still holds "old": a direct send of "new" would overtake it.
    sink = make_sink(proxy.url, min_backoff=1.0, max_backoff=2.0)
    start = time.time_ns()
    proxy.down()
    with structlog.testing.capture_logs() as logs:
        sink.write_records(records(5, prefix="old", start_ns=start))
        written = len(logs)  # retries logged from now on are the replayer's
        deadline = time.monotonic() + 5
        while not any(e["event"] == "sink_request_retry" for e in logs[written:]):
            assert time.monotonic() < deadline, "the replayer never tried"
            time.sleep(0.005)
    connections = proxy.connections
    proxy.up()
    sink.write_records(records(5, prefix="new", start_ns=start + 10**6))
    assert proxy.connections == connections  # "new" went to the spool, behind "old"
    assert sink.spool is not None and sink.spool.records == 10
    assert wait_stored(real_loki, loki_tenant, 10, container_name="web") == [
        f"old {i}" for i in range(5)] + [f"new {i}" for i in range(5)]


def test_the_spool_survives_a_restart(
    proxy: TcpProxy, make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str,
    tmp_path: Path,
) -> None:
    first = make_sink(proxy.url)
    proxy.down()
    first.write_records(records(7, prefix="kept"))
    first.close()
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1

    proxy.up()
    second = make_sink(proxy.url)  # same spool_dir: resumes without any write
    assert wait_stored(real_loki, loki_tenant, 7, container_name="web") == [
        f"kept {i}" for i in range(7)]
    deadline = time.monotonic() + 5
    while second.spool is not None and not second.spool.empty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not list((tmp_path / "spool").glob("*.seg"))


def test_a_spool_written_before_the_upgrade_still_replays(
    make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str, tmp_path: Path
) -> None:
    """Before protobuf, spool entries were bare gzip JSON bodies: they replay as they are."""
    import gzip

    now = time.time_ns()
    legacy = gzip.compress(json.dumps({"streams": [{
        "stream": {"container_name": "old", "stream": "stdout", "host": "testhost"},
        "values": [[str(now + i), f"legacy {i}", {"container_id": "f" * 64}]
                   for i in range(4)],
    }]}).encode())
    spool = DiskSpool(tmp_path / "spool", 1 << 30, "legacy-writer")
    spool.append([(legacy, 4)])
    spool.close()
    sink = make_sink()
    assert wait_stored(real_loki, loki_tenant, 4, container_name="old") == [
        f"legacy {i}" for i in range(4)]
    assert real_loki.entries(selector(container_name="old"), loki_tenant)[0].metadata[
        "container_id"] == "f" * 64
    deadline = time.monotonic() + 5
    while sink.spool is not None and not sink.spool.empty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.spool is not None and sink.spool.empty


def test_a_full_spool_pushes_back_and_loses_nothing(
    proxy: TcpProxy, make_sink: SinkFactory, real_loki: RealLoki, loki_tenant: str
) -> None:
    sink = make_sink(proxy.url, batch_bytes=2048, spool_max_bytes=8192, encoding="json")
    proxy.down()
    accepted: list[str] = []
    refused: list[LogRecord] = []
    start = time.time_ns()
    for n in range(40):
        batch = [record(os.urandom(200).hex(), start + n * 100 + i) for i in range(5)]
        try:
            sink.write_records(batch)
        except SinkError as exc:
            assert "full" in str(exc)
            refused = batch
            break
        accepted += [r.message for r in batch]
    assert refused, "the spool never filled"
    assert sink.spool is not None and sink.spool.used_bytes <= 8192
    proxy.up()
    assert wait_stored(real_loki, loki_tenant, len(accepted), container_name="web") == accepted
    sink.write_records(refused)  # the dispatcher's retry succeeds once there is room
    assert wait_stored(real_loki, loki_tenant, len(accepted) + 5, container_name="web") == (
        accepted + [r.message for r in refused])


def test_close_stops_the_replayer_promptly_and_keeps_the_spool(
    fake_proxy: TcpProxy, make_sink: SinkFactory, tmp_path: Path
) -> None:
    # A replayer backing off 30 s would outlive close()'s 2 s join unless close wakes it.
    sink = make_sink(fake_proxy.url, min_backoff=30.0, max_backoff=30.0)
    fake_proxy.down()
    with structlog.testing.capture_logs() as logs:
        sink.write_records(records(3))
        replayers = [t for t in threading.enumerate() if t.name == "loki-spool-replayer"]
        assert len(replayers) == 1
        deadline = time.monotonic() + 5
        while not any(e["event"] == "sink_request_retry" for e in logs):  # it failed, waits
            assert time.monotonic() < deadline, "the replayer never tried"
            time.sleep(0.005)
    sink.close()
    assert not replayers[0].is_alive()
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1
    with pytest.raises(SinkError, match="closed"):
        sink.write_records(records(1))


# -- secrets -------------------------------------------------------------------------------

SECRET = "s3cr3t-Pa55w0rd-never-printed"


def test_basic_auth_password_from_env_never_appears(
    tmp_path: Path, make_sink: SinkFactory, dead_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("LOKI_TEST_PASSWORD", SECRET)
    expected = "Basic " + base64.b64encode(f"shipper:{SECRET}".encode()).decode()
    with FakeLoki(authorization=expected) as loki, structlog.testing.capture_logs() as logs:
        sink = make_sink(loki.url, username="shipper", password_env="LOKI_TEST_PASSWORD",
                         retry_budget=0.1)
        sink.write_records(records(2))
        assert loki.count() == 2
        assert loki.requests[0].headers["authorization"] == expected
        loki.fail(401, times=1)  # an error path: logged and dead-lettered
        sink.write_records(records(1, prefix="rejected"))
        loki.go_down()  # and a retry path: logged and spooled
        sink.write_records(records(1, prefix="spooled"))
        config = sink.config
    assert logs, "no log captured: this test would pass vacuously"
    texts = [repr(sink), repr(config), str(config), config.model_dump_json(), repr(logs),
             caplog.text, dead_path.read_text()]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "spool").glob("*")]
    for text in texts:
        assert SECRET not in text
        assert base64.b64encode(f"shipper:{SECRET}".encode()).decode() not in text
    assert config.password_env == "LOKI_TEST_PASSWORD"


def test_bearer_token_from_a_file(tmp_path: Path, make_sink: SinkFactory) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    with FakeLoki(authorization=f"Bearer {SECRET}") as loki:
        sink = make_sink(loki.url, bearer_token_file=str(token_file))
        sink.write_records(records(1))
        assert loki.count() == 1
        assert SECRET not in repr(sink) and SECRET not in sink.config.model_dump_json()


def test_missing_secrets_fail_at_start_naming_the_source_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOKI_NOT_SET", raising=False)
    url = "http://127.0.0.1:9"
    with pytest.raises(SecretUnavailableError, match=r"loki sink: password: .*LOKI_NOT_SET"):
        LokiSink(settings(tmp_path, url, username="u", password_env="LOKI_NOT_SET"))
    with pytest.raises(SecretUnavailableError, match="cannot read"):
        LokiSink(settings(tmp_path, url, bearer_token_file=str(tmp_path / "missing")))
    assert not (tmp_path / "spool").exists()  # nothing opened before the secrets were read


def test_the_fake_stores_what_it_is_sent_once(fake: FakeLoki) -> None:
    doc = {"streams": [{"stream": {"a": "1"}, "values": [["1", "x"], ["1", "x"], ["2", "y"]]}]}
    answer = requests.post(fake.url + "/loki/api/v1/push", json=doc, timeout=5)
    assert answer.status_code == 204 and answer.text == ""
    assert fake.lines() == ["x", "y"]  # exact duplicates dropped, as Loki does
