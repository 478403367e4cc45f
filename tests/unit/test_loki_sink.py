"""LokiSink against FakeLoki: format, exactly-once as Loki sees it, retries, bisecting,
dead letters, the disk spool (outage, restart, full), secrets; and the fake's own contract."""

from __future__ import annotations

import base64
import gzip
import json
import os
import threading
import time
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
from log_capturer.timestamps import format_rfc3339_ns
from tests.fake_loki import FakeLoki

WEB = ContainerInfo(
    id="c0ffee" * 10 + "abcd", name="web", image="nginx:1.27",
    labels={COMPOSE_SERVICE: "web", COMPOSE_PROJECT: "shop"},
)
DB = ContainerInfo(id="d" * 64, name="db", image="postgres:16")
HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS


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


def dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def settings(tmp_path: Path, fake: FakeLoki, **overrides: Any) -> LokiSinkConfig:
    values: dict[str, Any] = {
        "enabled": True, "url": fake.url, "host": "testhost",
        "min_backoff": 0.01, "max_backoff": 0.05, "retry_budget": 0.3,
        "timeout": 2.0, "connect_timeout": 1.0, "close_timeout": 2.0,
        "spool_dir": str(tmp_path / "spool"), "dead_letter_path": str(tmp_path / "dead.jsonl"),
    }
    values.update(overrides)
    return LokiSinkConfig(**values)


@pytest.fixture
def fake() -> Iterator[FakeLoki]:
    with FakeLoki() as server:
        yield server
    assert not server.errors, server.errors


class RecordsLokiSink(LokiSink):
    """The sink, written records as the dispatcher's batches (one per container)."""

    def write_records(self, records: list[LogRecord]) -> None:
        self.write(RecordBatch.group(records))


SinkFactory = Callable[..., RecordsLokiSink]


@pytest.fixture
def make_sink(tmp_path: Path, fake: FakeLoki) -> Iterator[SinkFactory]:
    sinks: list[LokiSink] = []

    def make(server: FakeLoki | None = None, **overrides: Any) -> RecordsLokiSink:
        sink = RecordsLokiSink(settings(tmp_path, server or fake, **overrides))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def dead_path(tmp_path: Path) -> Path:
    return tmp_path / "dead.jsonl"


def assert_in_order(fake: FakeLoki) -> None:
    for labels, entries in fake.streams().items():
        stamps = [e.ts_ns for e in entries]
        assert stamps == sorted(stamps), f"stream {labels} out of order"


# -- format --------------------------------------------------------------------------------


def test_push_is_gzipped_json_grouped_by_low_cardinality_labels(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    now = time.time_ns()
    batch = [
        record("third", now + 2), record("first", now), record("second", now + 1),
        record("oops", now + 5, stream="stderr"),
        record("ready", now + 3, container=DB),
    ]
    make_sink().write_records(batch)

    [push] = fake.pushes()
    assert push.status == 204 and push.response == ""
    assert push.headers["content-encoding"] == "gzip"
    assert push.headers["content-type"] == "application/json"
    assert gzip.decompress(push.body) == push.decoded
    streams = {json.dumps(s["stream"], sort_keys=True): s["values"]
               for s in push.json()["streams"]}
    web_out = {"container_name": "web", "compose_service": "web", "stream": "stdout",
               "host": "testhost"}
    db_out = {"container_name": "db", "stream": "stdout", "host": "testhost"}  # no compose
    web_values = streams[json.dumps(web_out, sort_keys=True)]
    assert [v[:2] for v in web_values] == [
        [str(now), "first"], [str(now + 1), "second"], [str(now + 2), "third"]
    ]  # sorted by timestamp, timestamps as strings
    assert web_values[0][2] == {"container_id": WEB.id, "image": "nginx:1.27",
                                "compose_project": "shop"}
    assert streams[json.dumps(db_out, sort_keys=True)][0][2] == {
        "container_id": DB.id, "image": "postgres:16"
    }
    assert len(streams) == 3
    for stream in push.json()["streams"]:
        assert WEB.id not in stream["stream"].values() and DB.id not in stream["stream"].values()
    assert fake.count() == 5


def test_labels_are_configurable_sanitized_and_static(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    sink = make_sink(labels=["container_name"], static_labels={"env-name": "prod", "9zone": "eu"})
    sink.write_records(records(2))
    assert list(fake.streams()) == [
        (("_9zone", "eu"), ("container_name", "web"), ("env_name", "prod"))
    ]


def test_json_lines_and_no_structured_metadata(fake: FakeLoki, make_sink: SinkFactory) -> None:
    batch = records(3)
    make_sink(line_format="json", structured_metadata=[]).write_records(batch)
    values = fake.pushes()[0].json()["streams"][0]["values"]
    assert all(len(v) == 2 for v in values)
    assert [json.loads(v[1]) for v in values] == [r.to_dict() for r in batch]


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
    with pytest.raises(ValidationError, match="max_request_bytes"):
        LokiSinkConfig(max_request_bytes="8MiB")
    assert LokiSinkConfig(url="https://loki:3100/loki/api/v1/push/").url == "https://loki:3100"
    assert LokiSinkConfig(tenant_id="").tenant_id is None


# -- size limits ---------------------------------------------------------------------------


def test_big_batches_are_split_under_max_request_bytes_exactly_once_in_order(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    start = time.time_ns()
    batch = []
    for container in (WEB, DB):
        for stream in ("stdout", "stderr"):
            batch += records(75, prefix=f"{container.name}-{stream}", container=container,
                             stream=stream, start_ns=start)
    sent_before = metric("log_capturer_sink_records_total", sink="loki", status="sent")
    make_sink(max_request_bytes=4096).write_records(batch)

    pushes = fake.pushes()
    assert len(pushes) > 5
    assert all(p.decoded is not None and len(p.decoded) <= 4096 for p in pushes)
    assert all(p.status == 204 for p in pushes)
    assert fake.count() == 300
    for container in (WEB, DB):
        for stream in ("stdout", "stderr"):
            assert fake.lines(container_name=container.name, stream=stream) == [
                f"{container.name}-{stream} {i}" for i in range(75)
            ]
    assert_in_order(fake)
    after = metric("log_capturer_sink_records_total", sink="loki", status="sent")
    assert after - sent_before == 300


def test_long_lines_are_cut_to_lokis_limit_and_marked(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    now = time.time_ns()
    long_message = "é" * 150_000  # 300,000 bytes: over Loki's 262,144
    before = metric("log_capturer_loki_lines_truncated_total")
    make_sink().write_records([record(long_message, now), record("short", now + 1)])
    entries = fake.entries()
    assert len(entries) == 2
    cut = entries[0]
    assert len(cut.line.encode()) <= 262_144 and len(cut.line.encode()) > 262_000
    assert long_message.startswith(cut.line)
    assert cut.metadata is not None and cut.metadata["truncated"] == "true"
    assert entries[1].metadata is not None and "truncated" not in entries[1].metadata
    assert metric("log_capturer_loki_lines_truncated_total") == before + 1


def test_long_json_lines_stay_valid_json(fake: FakeLoki, make_sink: SinkFactory) -> None:
    make_sink(line_format="json", max_line_bytes=1000).write_records(
        [record('"quoted"\n' * 500, time.time_ns())]
    )
    [entry] = fake.entries()
    assert len(entry.line.encode()) <= 1000
    doc = json.loads(entry.line)
    assert doc["truncated"] is True and doc["message"].startswith('"quoted"\n')


def test_an_oversized_body_loki_refuses_with_500_is_split(make_sink: SinkFactory) -> None:
    with FakeLoki(max_body_bytes=2048) as small:
        make_sink(small, max_request_bytes=16384).write_records(records(60))
        assert small.count() == 60
        assert any(p.status == 500 for p in small.pushes())
        assert_in_order(small)


# -- rejections ----------------------------------------------------------------------------


def test_a_too_old_entry_is_isolated_by_bisecting_and_dead_lettered(
    fake: FakeLoki, make_sink: SinkFactory, dead_path: Path
) -> None:
    now = time.time_ns()
    batch = [*records(15, start_ns=now), record("ancient", now - 8 * DAY_NS, seq=1)]
    batch += records(5, container=DB, start_ns=now)
    dead_before = metric("log_capturer_dead_letter_records_total", sink="loki")
    make_sink().write_records(batch)

    assert fake.count() == 20
    assert "ancient" not in fake.lines()
    [dead] = dead_letters(dead_path)
    assert dead["line"] == "ancient" and dead["ts"] == str(now - 8 * DAY_NS)
    assert dead["status"] == 400 and "timestamp too old" in dead["error"]
    assert dead["stream"]["container_name"] == "web"
    assert metric("log_capturer_dead_letter_records_total", sink="loki") == dead_before + 1
    assert len(fake.pushes()) <= 12  # bisecting, not one request per entry


def test_an_entry_too_far_behind_its_stream_is_dead_lettered(
    fake: FakeLoki, make_sink: SinkFactory, dead_path: Path
) -> None:
    now = time.time_ns()
    sink = make_sink()
    sink.write_records([record("new", now)])
    sink.write_records([record("late", now - 2 * HOUR_NS), record("new too", now + 1)])
    assert fake.lines() == ["new", "new too"]
    [dead] = dead_letters(dead_path)
    assert dead["line"] == "late" and "too far behind" in dead["error"]


def test_without_a_line_cap_loki_rejects_the_long_line_and_the_rest_arrives(
    fake: FakeLoki, make_sink: SinkFactory, dead_path: Path
) -> None:
    now = time.time_ns()
    batch = [record(f"ok {i}", now + i) for i in range(4)]
    batch.insert(2, record("x" * 300_000, now + 1, seq=1))
    make_sink(max_line_bytes=0).write_records(batch)
    assert fake.lines() == ["ok 0", "ok 1", "ok 2", "ok 3"]
    [dead] = dead_letters(dead_path)
    assert "Max entry size '262144' bytes exceeded" in dead["error"]
    assert len(dead["line"]) == 300_000


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_permanent_statuses_dead_letter_the_whole_request_once(
    fake: FakeLoki, make_sink: SinkFactory, dead_path: Path, status: int
) -> None:
    sink = make_sink()
    fake.fail(status, body=f"refused with {status}")
    sink.write_records(records(8))
    assert len(fake.requests) == 1  # neither retried nor bisected
    dead = dead_letters(dead_path)
    assert len(dead) == 8 and {d["status"] for d in dead} == {status}
    assert all(d["error"] == f"refused with {status}" for d in dead)
    expect_up = status == 422
    assert sink.up is expect_up
    assert metric("log_capturer_sink_up", sink="loki") == (1.0 if expect_up else 0.0)
    fake.clear_faults()
    sink.write_records(records(1))
    assert sink.up and metric("log_capturer_sink_up", sink="loki") == 1.0


def test_tenant_header(tmp_path: Path, make_sink: SinkFactory) -> None:
    with FakeLoki(require_tenant=True) as tenanted:
        make_sink(tenanted).write_records(records(2, prefix="anonymous"))
        [dead, _] = dead_letters(tmp_path / "dead.jsonl")
        assert dead["status"] == 401 and dead["error"] == "no org id"
        spool_b = str(tmp_path / "spool-b")  # one spool per directory: it is locked
        make_sink(tenanted, tenant_id="team-a", spool_dir=spool_b).write_records(records(2))
        assert tenanted.requests[-1].headers["x-scope-orgid"] == "team-a"
        assert tenanted.lines() == ["line 0", "line 1"]


def test_structured_metadata_refused_by_loki_is_dropped_not_the_entries(
    make_sink: SinkFactory, dead_path: Path
) -> None:
    with FakeLoki(allow_structured_metadata=False) as old_loki:
        sink = make_sink(old_loki)
        sink.write_records(records(3))
        sink.write_records(records(2, prefix="later"))
        assert old_loki.count() == 5
        assert all(e.metadata is None for e in old_loki.entries())
        assert dead_letters(dead_path) == []
        assert len(old_loki.pushes()) == 3  # one refusal, then no metadata is sent


# -- transient failures --------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_busy_or_failing_loki_is_retried(
    fake: FakeLoki, make_sink: SinkFactory, status: int
) -> None:
    retries = metric("log_capturer_sink_retries_total", sink="loki")
    retried = metric("log_capturer_sink_records_total", sink="loki", status="retried")
    fake.fail(status, times=2)
    make_sink().write_records(records(4))
    assert [r.status for r in fake.requests] == [status, status, 204]
    assert fake.count() == 4
    assert metric("log_capturer_sink_retries_total", sink="loki") == retries + 2
    assert metric("log_capturer_sink_records_total", sink="loki", status="retried") == retried + 8


def test_retry_after_is_honoured(fake: FakeLoki, make_sink: SinkFactory) -> None:
    fake.rate_limit(times=1, retry_after="1")
    make_sink(retry_budget=3.0).write_records(records(1))
    first, second = fake.requests
    assert first.status == 429 and second.status == 204
    assert second.received_at - first.received_at >= 0.95  # not min_backoff (10 ms)


def test_retry_after_beyond_the_budget_spools_at_once(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    fake.rate_limit(retry_after="30")
    sink = make_sink(retry_budget=2.0)
    started = time.monotonic()
    sink.write_records(records(3))
    assert time.monotonic() - started < 1.0
    assert sink.spool is not None and sink.spool.records == 3


def test_a_lost_response_is_retried_and_loki_keeps_one_copy(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    fake.drop_connections(times=1, after_ingest=True)
    make_sink().write_records(records(5))
    assert [r.status for r in fake.requests] == [None, 204]
    assert fake.count() == 5


def test_timeouts_are_transient_and_resending_is_harmless(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    fake.delay(0.5)
    sink = make_sink(timeout=0.1, retry_budget=0.3, spool_max_bytes=0)
    batch = records(3)
    with pytest.raises(LokiUnavailableError, match="Timeout"):
        sink.write_records(batch)
    fake.clear_faults()
    sink.write_records(batch)  # the dispatcher's retry of the same batch
    assert fake.wait_for_count(3)
    time.sleep(0.5)  # delayed handlers finish storing their copies
    assert fake.count() == 3 and fake.lines() == ["line 0", "line 1", "line 2"]


def test_without_a_spool_an_outage_is_a_sink_error(fake: FakeLoki, make_sink: SinkFactory) -> None:
    sink = make_sink(spool_max_bytes=0)
    fake.go_down()
    started = time.monotonic()
    with pytest.raises(SinkError, match="loki unavailable"):
        sink.write_records(records(2))
    assert time.monotonic() - started < 1.5
    assert not sink.up


# -- the spool -----------------------------------------------------------------------------


def test_an_outage_is_spooled_and_replayed_in_order(
    fake: FakeLoki, make_sink: SinkFactory, tmp_path: Path
) -> None:
    sink = make_sink()
    start = time.time_ns()
    sink.write_records(records(10, prefix="before", start_ns=start))
    spooled = metric("log_capturer_sink_records_total", sink="loki", status="spooled")
    lag = metric("log_capturer_delivery_lag_seconds_count", sink="loki")
    fake.go_down()
    started = time.monotonic()
    sink.write_records(records(10, prefix="during", start_ns=start + 10**6))
    assert time.monotonic() - started < 1.5  # accepted after retry_budget, not stuck
    # behind the spool
    sink.write_records(records(10, prefix="during2", start_ns=start + 2 * 10**6))
    assert sink.spool is not None and sink.spool.records == 20
    assert list((tmp_path / "spool").glob("*.seg"))
    assert metric("log_capturer_sink_records_total", sink="loki", status="spooled") == spooled + 20
    assert metric("log_capturer_spool_records", sink="loki") == 20
    assert not sink.up

    fake.come_up()
    assert fake.wait_for_count(30)
    deadline = time.monotonic() + 5
    while not sink.spool.empty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.spool.empty and metric("log_capturer_spool_records", sink="loki") == 0
    expected = ([f"before {i}" for i in range(10)] + [f"during {i}" for i in range(10)]
                + [f"during2 {i}" for i in range(10)])
    assert fake.lines() == expected
    assert metric("log_capturer_delivery_lag_seconds_count", sink="loki") > lag
    sink.write_records(records(1, prefix="after", start_ns=start + 3 * 10**6))  # direct again
    assert fake.lines()[-1] == "after 0" and sink.up


def test_new_batches_queue_behind_the_spool_while_loki_recovers(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    # min_backoff 1s: after its first failure the replayer waits 0.5-1s, so Loki is back
    # while the spool still holds "old": a direct send of "new" would overtake it.
    sink = make_sink(min_backoff=1.0, max_backoff=2.0)
    start = time.time_ns()
    fake.go_down()
    with structlog.testing.capture_logs() as logs:
        sink.write_records(records(5, prefix="old", start_ns=start))
        written = len(logs)  # retries logged from now on are the replayer's
        deadline = time.monotonic() + 5
        while not any(e["event"] == "loki_push_retry" for e in logs[written:]):
            assert time.monotonic() < deadline, "the replayer never tried"
            time.sleep(0.005)
    fake.come_up()
    sink.write_records(records(5, prefix="new", start_ns=start + 10**6))
    assert fake.requests == []  # "new" went to the spool, behind "old"
    assert sink.spool is not None and sink.spool.records == 10
    assert fake.wait_for_count(10, timeout=5)
    assert fake.lines() == [f"old {i}" for i in range(5)] + [f"new {i}" for i in range(5)]


def test_the_spool_survives_a_restart(
    fake: FakeLoki, make_sink: SinkFactory, tmp_path: Path
) -> None:
    first = make_sink()
    fake.go_down()
    first.write_records(records(7, prefix="kept"))
    first.close()
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1

    fake.come_up()
    second = make_sink()  # same spool_dir: resumes without any write
    assert fake.wait_for_count(7)
    assert fake.lines() == [f"kept {i}" for i in range(7)]
    deadline = time.monotonic() + 5
    while second.spool is not None and not second.spool.empty and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not list((tmp_path / "spool").glob("*.seg"))


def test_a_full_spool_pushes_back_and_loses_nothing(
    fake: FakeLoki, make_sink: SinkFactory
) -> None:
    sink = make_sink(max_request_bytes=2048, spool_max_bytes=8192)
    fake.go_down()
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
    fake.come_up()
    assert fake.wait_for_count(len(accepted))
    assert fake.lines() == accepted
    sink.write_records(refused)  # the dispatcher's retry succeeds once there is room
    assert fake.wait_for_count(len(accepted) + 5)
    assert fake.lines() == accepted + [r.message for r in refused]


def test_close_stops_the_replayer_promptly_and_keeps_the_spool(
    fake: FakeLoki, make_sink: SinkFactory, tmp_path: Path
) -> None:
    sink = make_sink(max_backoff=1.0)
    fake.go_down()
    sink.write_records(records(3))
    replayers = [t for t in threading.enumerate() if t.name == "loki-spool-replayer"]
    assert len(replayers) == 1
    time.sleep(0.1)  # let it fail and back off
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 1.0
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
        sink = make_sink(loki, username="shipper", password_env="LOKI_TEST_PASSWORD",
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
        sink = make_sink(loki, bearer_token_file=str(token_file))
        sink.write_records(records(1))
        assert loki.count() == 1
        assert SECRET not in repr(sink) and SECRET not in sink.config.model_dump_json()


def test_missing_secrets_fail_at_start_naming_the_source_only(
    tmp_path: Path, fake: FakeLoki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOKI_NOT_SET", raising=False)
    with pytest.raises(SecretUnavailableError, match="LOKI_NOT_SET is not set"):
        RecordsLokiSink(settings(tmp_path, fake, username="u", password_env="LOKI_NOT_SET"))
    with pytest.raises(SecretUnavailableError, match="cannot read"):
        RecordsLokiSink(settings(tmp_path, fake, bearer_token_file=str(tmp_path / "missing")))
    assert not (tmp_path / "spool").exists()  # nothing opened before the secrets were read


# -- the fake behaves like Loki 3.4 --------------------------------------------------------


def push(fake: FakeLoki, doc: Any, *, gzipped: bool = False,
         headers: dict[str, str] | None = None) -> requests.Response:
    body = json.dumps(doc).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if gzipped:
        body = gzip.compress(body)
        sent["Content-Encoding"] = "gzip"
    return requests.post(fake.url + "/loki/api/v1/push", data=body, headers=sent, timeout=5)


def stream(labels: dict[str, str], *values: list[Any]) -> dict[str, Any]:
    return {"stream": labels, "values": list(values)}


def test_fake_accepts_plain_and_gzip_json_with_an_empty_204(fake: FakeLoki) -> None:
    ts = str(time.time_ns())
    plain = push(fake, {"streams": [stream({"a": "1"}, [ts, "plain"])]})
    zipped = push(fake, {"streams": [stream({"a": "1"}, [ts, "zipped"])]}, gzipped=True)
    assert plain.status_code == zipped.status_code == 204
    assert plain.content == b""
    assert fake.lines(a="1") == ["plain", "zipped"]


def test_fake_rejects_numeric_timestamps(fake: FakeLoki) -> None:
    response = push(fake, {"streams": [stream({"a": "1"}, [time.time_ns(), "x"])]})
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")
    assert fake.count() == 0


def test_fake_drops_exact_duplicates_only(fake: FakeLoki) -> None:
    ts = str(time.time_ns())
    for _ in range(2):
        assert push(fake, {"streams": [stream({"a": "1"}, [ts, "same"], [ts, "other"])]}
                    ).status_code == 204
    assert push(fake, {"streams": [stream({"a": "2"}, [ts, "same"])]}).status_code == 204
    assert fake.lines(a="1") == ["same", "other"]
    assert fake.count() == 3


def test_fake_rejects_the_whole_request_for_an_invalid_label_name(fake: FakeLoki) -> None:
    ts = str(time.time_ns())
    response = push(fake, {"streams": [stream({"good": "1"}, [ts, "x"]),
                                       stream({"bad-name": "1"}, [ts, "y"])]})
    assert response.status_code == 400 and "bad-name" in response.text
    assert fake.count() == 0


def test_fake_drops_only_the_stream_with_too_many_labels(fake: FakeLoki) -> None:
    ts = str(time.time_ns())
    many = {f"l{i}": "v" for i in range(16)}
    response = push(fake, {"streams": [stream(many, [ts, "x"]), stream({"a": "1"}, [ts, "y"])]})
    assert response.status_code == 400 and "16 label names; limit 15" in response.text
    assert fake.lines() == ["y"]


def test_fake_status_codes_for_empty_large_and_tenantless_pushes() -> None:
    with FakeLoki(require_tenant=True, max_body_bytes=4 * 1024 * 1024) as loki:
        assert push(loki, {"streams": []}, headers={"X-Scope-OrgID": "t"}).status_code == 422
        nobody = push(loki, {"streams": [stream({"a": "1"}, [str(time.time_ns()), "x"])]})
        assert nobody.status_code == 401 and nobody.text == "no org id\n"
        big = [[str(time.time_ns() + i), "x" * 100_000] for i in range(43)]
        huge = push(loki, {"streams": [stream({"a": "1"}, *big)]}, gzipped=True,
                    headers={"X-Scope-OrgID": "t"})
        assert huge.status_code == 500 and "ResourceExhausted" in huge.text


def test_fake_keeps_valid_entries_of_a_rejected_request(fake: FakeLoki) -> None:
    now = time.time_ns()
    response = push(fake, {"streams": [stream({"a": "1"}, [str(now - 8 * DAY_NS), "old"],
                                              [str(now), "fresh"])]})
    assert response.status_code == 400 and "timestamp too old" in response.text
    assert fake.lines() == ["fresh"]


def test_fake_reports_out_of_order_only_for_the_last_stream(fake: FakeLoki) -> None:
    now = time.time_ns()
    late = str(now - 2 * HOUR_NS)
    assert push(fake, {"streams": [stream({"a": "1"}, [str(now), "n"]),
                                   stream({"a": "2"}, [str(now), "n"])]}).status_code == 204
    hidden = push(fake, {"streams": [stream({"a": "1"}, [late, "late"]),
                                     stream({"a": "2"}, [str(now + 1), "ok"])]})
    assert hidden.status_code == 204  # Loki loses "late" without a word
    shown = push(fake, {"streams": [stream({"a": "2"}, [late, "late"])]})
    assert shown.status_code == 400 and "entry too far behind" in shown.text
    assert "late" not in fake.lines()


def test_fake_faults(fake: FakeLoki) -> None:
    doc = {"streams": [stream({"a": "1"}, [str(time.time_ns()), "x"])]}
    fake.rate_limit(times=1)
    limited = push(fake, doc)
    assert limited.status_code == 429 and "Retry-After" not in limited.headers
    fake.go_down()
    with pytest.raises(requests.ConnectionError):
        push(fake, doc)
    port = fake.port
    fake.come_up()
    assert fake.port == port and push(fake, doc).status_code == 204
    fake.drop_connections(times=1)
    with pytest.raises(requests.ConnectionError):
        push(fake, doc)
    assert requests.get(fake.url + "/ready", timeout=5).status_code == 200
