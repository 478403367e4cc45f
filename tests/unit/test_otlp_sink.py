"""The OTLP sink: what it encodes (decoded with the official messages), what the answers
mean, and the faults the real Loki cannot produce on demand (a partial success, 429s, a
TLS server, auth headers) against a small OTLP server here. Delivery into the real Loki:
tests/integration/test_otlp_delivery.py."""

from __future__ import annotations

import gzip
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from log_capturer.config.loader import ConfigError, load_config
from log_capturer.discovery.container import COMPOSE_SERVICE, ContainerInfo
from log_capturer.pipeline.batch import Batch, RecordBatch
from log_capturer.pipeline.record import LogRecord
from log_capturer.sinks.base import SinkError
from log_capturer.sinks.network.auth import SecretUnavailableError
from log_capturer.sinks.network.outcomes import Accepted, Refused, Transient
from log_capturer.sinks.otlp import OtlpSink, OtlpSinkConfig
from log_capturer.sinks.otlp.encode import Encoder, Export
from log_capturer.sinks.otlp.responses import classify
from log_capturer.sinks.otlp.rpc_status import Status
from tests.require import missing
from tests.unit.batches import line_batch

T0 = 1_795_000_000_000_000_000
WEB = ContainerInfo(id="a" * 64, name="shop-web-1", image="shop/web:2",
                    labels={COMPOSE_SERVICE: "web"})
JOB = ContainerInfo(id="b" * 64, name="job-7", image="busybox:1")

# Loki v3.4.6's answer to an OTLP push with a line over the tenant's max_line_size
# (tests/integration/test_otlp_delivery.py provokes it against the real Loki).
LOKI_400 = (
    "Max entry size '1024' bytes exceeded for stream '{container_name=\"shop-web-1\", "
    "service_name=\"web\"}' while adding an entry with length '2000' bytes"
)


def batch(container: ContainerInfo, lines: list[tuple[str, str]], start: int = T0) -> Batch:
    return line_batch(container, [(s, start + i, m) for i, (s, m) in enumerate(lines)])


def decode(export: Export) -> ExportLogsServiceRequest:
    body = export.body()
    if export.compression == "gzip":
        body = gzip.decompress(body)
    return ExportLogsServiceRequest.FromString(body)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "endpoint"),
    [
        ("http://loki:3100/otlp", "http://loki:3100/otlp"),
        ("http://loki:3100/otlp/", "http://loki:3100/otlp"),
        ("http://loki:3100/otlp/v1/logs", "http://loki:3100/otlp"),
        ("https://collector:4318", "https://collector:4318"),
    ],
)
def test_the_endpoint_is_the_base_url_exporters_take(given: str, endpoint: str) -> None:
    config = OtlpSinkConfig(enabled=True, endpoint=given)
    assert config.endpoint == endpoint
    assert OtlpSink(config.model_copy(update={"spool_max_bytes": 0}))._delivery.endpoint.url == (
        endpoint + "/v1/logs")


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        ("endpoint: ftp://x", "sinks.otlp.endpoint: must be an http:// or https:// URL"),
        ("endpoint: http://u:p@x", "sinks.otlp.endpoint: must not contain credentials"),
        ("encoding: xml", "sinks.otlp.encoding: Input should be 'protobuf' or 'json'"),
        ("batch_bytes: 10MiB", "sinks.otlp: batch_bytes must be between 1KiB and 3MiB"),
        ("headers_env: A\nheaders_file: /b", "sinks.otlp: set headers_env or headers_file"),
        ("resource_attributes: {' x': y}", "sinks.otlp.resource_attributes: ' x': an attribute"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, yaml_text: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sinks:\n  otlp:\n    enabled: true\n" + "".join(
        f"    {line}\n" for line in yaml_text.splitlines()))
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


# -- encoding ----------------------------------------------------------------------------------


def test_one_resource_per_container_with_the_semantic_conventions() -> None:
    encoder = Encoder(OtlpSinkConfig(host="h1", compression="none",
                                     resource_attributes={"deployment.environment": "test"}))
    (export,) = encoder.build([
        batch(WEB, [("stdout", "GET /"), ("stderr", "oops")]),
        batch(JOB, [("stdout", "job line")], T0 + 10),
        batch(WEB, [("stdout", "GET /2")], T0 + 20),
    ])
    request = decode(export)
    assert len(request.resource_logs) == 2
    web, job = request.resource_logs
    assert attrs(web.resource.attributes) == {
        "container.id": WEB.id, "container.name": "shop-web-1",
        "container.image.name": "shop/web:2", "service.name": "web", "host.name": "h1",
        "deployment.environment": "test"}
    assert attrs(job.resource.attributes)["service.name"] == "job-7"  # no compose service
    (scope,) = web.scope_logs
    assert scope.scope.name == ""  # Loki would store a scope_name on every line
    got = [(r.time_unix_nano, r.body.string_value, attrs(r.attributes)) for r in scope.log_records]
    assert sorted(got) == [
        (T0, "GET /", {"log.iostream": "stdout"}),
        (T0 + 1, "oops", {"log.iostream": "stderr"}),
        (T0 + 20, "GET /2", {"log.iostream": "stdout"}),
    ]
    assert [r.body.string_value for r in job.scope_logs[0].log_records] == ["job line"]


def test_a_swarm_task_is_its_service_in_its_stack_on_its_node() -> None:
    task = ContainerInfo(
        id="c" * 64, name="shop_api.1.x2k9q0tq5pmw7c1vkflbxs7yv", image="shop/api:2",
        labels={"com.docker.swarm.service.name": "shop_api",
                "com.docker.stack.namespace": "shop",
                "com.docker.swarm.task.id": "x2k9q0tq5pmw7c1vkflbxs7yv"},
        host="node-1",
    )
    plain = ContainerInfo(id="d" * 64, name="job-7", image="busybox:1", host="node-1")
    encoder = Encoder(OtlpSinkConfig(compression="none", relabel_configs=[
        {"source_labels": ["service.namespace", "service.name"], "separator": "/",
         "target_label": "app"},
    ]))
    (export,) = encoder.build([batch(task, [("stdout", "up")]), batch(plain, [("stdout", "x")])])
    got = [attrs(r.resource.attributes) for r in decode(export).resource_logs]
    assert got == [
        {"container.id": task.id, "container.name": task.name,
         "container.image.name": "shop/api:2", "service.name": "shop_api",
         "service.namespace": "shop", "host.name": "node-1", "app": "shop/shop_api"},
        {"container.id": plain.id, "container.name": "job-7",
         "container.image.name": "busybox:1", "service.name": "job-7",
         "host.name": "node-1", "app": "/job-7"},  # no namespace: an empty value
    ]


def test_long_lines_are_cut_and_marked_truncated() -> None:
    encoder = Encoder(OtlpSinkConfig(max_line_bytes=1024))
    (export,) = encoder.build([batch(WEB, [("stdout", "é" * 1000), ("stdout", "short")])])
    records = decode(export).resource_logs[0].scope_logs[0].log_records
    assert len(records[0].body.string_value.encode()) == 1024  # 512 two-byte characters
    assert attrs(records[0].attributes) == {"log.iostream": "stdout", "truncated": True}
    assert attrs(records[1].attributes) == {"log.iostream": "stdout"}


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_spooled_exports_come_back_as_sent(encoding: str, compression: str) -> None:
    config = OtlpSinkConfig(encoding=encoding, compression=compression, max_line_bytes=1024)
    (export,) = Encoder(config).build([
        batch(WEB, [("stdout", "a"), ("stderr", "b \"q\" \n"), ("stdout", "x" * 2000)]),
        batch(JOB, [("stdout", "c")], T0 + 5),
    ])
    back = Export.from_spool(export.to_spool())
    assert back.body() == export.body()
    assert (back.encoding, back.compression) == (encoding, compression)
    sent = [(d["resource"], d["ts"], d["body"], d.get("attributes"))
            for d in export.dead_letters(range(len(export)))]
    again = [(d["resource"], d["ts"], d["body"], d.get("attributes"))
             for d in back.dead_letters(range(len(back)))]
    assert sorted(again, key=str) == sorted(sent, key=str)
    with pytest.raises(ValueError, match="not a spooled OTLP export"):
        Export.from_spool(b"loki-push protobuf+snappy\n...")


def test_json_encoding_is_otlp_json() -> None:
    (export,) = Encoder(OtlpSinkConfig(encoding="json", compression="none")).build(
        [batch(WEB, [("stdout", "hello")])])
    assert export.content_headers == {"Content-Type": "application/json"}
    doc = json.loads(export.body())
    (record,) = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert record == {"timeUnixNano": str(T0), "body": {"stringValue": "hello"},
                      "attributes": [{"key": "log.iostream", "value": {"stringValue": "stdout"}}]}


def test_a_lone_surrogate_is_replaced_not_raised() -> None:
    record = LogRecord(WEB, "stdout", T0, 1, "", "bad \udcff end")
    (export,) = Encoder(OtlpSinkConfig()).build([RecordBatch(WEB, [record])])
    body = decode(export).resource_logs[0].scope_logs[0].log_records[0].body.string_value
    assert body == "bad ? end"  # as the Loki sink replaces it


def test_requests_are_about_batch_bytes() -> None:
    lines = [("stdout", f"{i:04d} " + "x" * 95) for i in range(200)]
    exports = Encoder(OtlpSinkConfig(batch_bytes=4096)).build([batch(WEB, lines)])
    assert len(exports) > 1
    got = [r.body.string_value for e in exports
           for r in decode(e).resource_logs[0].scope_logs[0].log_records]
    assert got == [m for _, m in lines]


def test_resource_attributes_loki_copies_onto_every_line_count_towards_batch_bytes() -> None:
    """Loki stores the resource attributes it does not index (container.id, host.name,
    ...) as structured metadata on every line: a request of 1 MiB of short lines was a
    4.6 MB message inside Loki, over its 4 MiB gRPC limit (a 500). Each line's share of
    batch_bytes includes them."""
    config = OtlpSinkConfig(batch_bytes=64 * 1024)
    encoder = Encoder(config)
    lines = [("stdout", f"line {i}") for i in range(20000)]
    exports = encoder.build([batch(WEB, lines)])
    copied = {a.key: a.value.string_value
              for a in decode(exports[0]).resource_logs[0].resource.attributes
              if a.key not in config.index_attributes}
    assert "container.id" in copied and "host.name" not in config.index_attributes
    per_line = sum(len(k) + len(v) for k, v in copied.items())
    for export in exports:
        records = decode(export).resource_logs[0].scope_logs[0].log_records
        stored = sum(len(r.body.string_value) + per_line
                     + sum(len(a.key) + len(a.value.string_value) for a in r.attributes)
                     for r in records)
        assert stored <= config.batch_bytes
    got = [r.body.string_value for e in exports
           for r in decode(e).resource_logs[0].scope_logs[0].log_records]
    assert got == [m for _, m in lines]


def test_rules_choose_resource_and_log_attributes() -> None:
    labelled = ContainerInfo(id="c" * 64, name="pay-1", image="pay:3",
                             labels={"team": "payments", "version": "3.1"})
    config = OtlpSinkConfig(
        compression="none",
        relabel_configs=[
            {"source_labels": ["__meta_docker_container_label_team"],
             "target_label": "service.namespace"},
            {"action": "labeldrop", "regex": "container\\.id|host\\.name"},
        ],
        metadata_relabel_configs=[
            {"source_labels": ["__meta_docker_container_label_version"],
             "target_label": "service.version"},
        ],
    )
    (export,) = Encoder(config).build([batch(labelled, [("stdout", "x")])])
    resource_logs = decode(export).resource_logs[0]
    assert attrs(resource_logs.resource.attributes) == {
        "container.name": "pay-1", "container.image.name": "pay:3", "service.name": "pay-1",
        "service.namespace": "payments"}
    assert attrs(resource_logs.scope_logs[0].log_records[0].attributes) == {
        "log.iostream": "stdout", "service.version": "3.1"}


def test_the_guard_watches_index_attributes_only() -> None:
    config = OtlpSinkConfig(compression="none", max_label_values=1)
    containers = [ContainerInfo(id=f"{i:064x}", name=f"job-{i}", image="x") for i in range(2)]
    (export,) = Encoder(config, "otlp-guard").build(
        [batch(c, [("stdout", "x")], T0 + i) for i, c in enumerate(containers)])
    second = attrs(decode(export).resource_logs[1].resource.attributes)
    # container.name and service.name had a value already: refused; container.id is not
    # an index label in Loki: not watched
    assert "container.name" not in second and "service.name" not in second
    assert second["container.id"] == containers[1].id


# -- answers -----------------------------------------------------------------------------------


def export_of(n: int) -> Export:
    lines = [("stdout", "x" * 2000 if i == 1 else f"line {i}") for i in range(n)]
    (export,) = Encoder(OtlpSinkConfig(max_line_bytes=0)).build([batch(WEB, lines)])
    return export


def status_body(message: str) -> bytes:
    return bytes(Status(code=3, message=message).SerializeToString())


def test_success_with_or_without_a_body() -> None:
    export = export_of(3)
    assert isinstance(classify(204, b"", {}, export), Accepted)
    ok = ExportLogsServiceResponse().SerializeToString()
    assert isinstance(classify(200, ok, {"Content-Type": "application/x-protobuf"}, export),
                      Accepted)
    assert isinstance(classify(200, b"{}", {"Content-Type": "application/json"}, export), Accepted)
    assert isinstance(classify(200, b"\xff\xff", {}, export), Accepted)  # unreadable: a 2xx


def test_a_partial_success_is_dead_lettered_as_doubtful_never_resent() -> None:
    export = export_of(3)
    response = ExportLogsServiceResponse()
    response.partial_success.rejected_log_records = 1
    response.partial_success.error_message = "too old"
    outcome = classify(200, response.SerializeToString(), {}, export)
    assert isinstance(outcome, Refused)
    assert list(outcome.doubtful) == [0, 1, 2] and not outcome.unresolved
    assert "1 of 3 log records rejected: too old" in outcome.message
    whole = classify(200, b'{"partialSuccess": {"rejectedLogRecords": "3"}}',
                     {"Content-Type": "application/json"}, export)
    assert isinstance(whole, Refused) and [list(p) for p, _ in whole.named] == [[0, 1, 2]]


def test_lokis_400_names_the_entry_by_its_length() -> None:
    export = export_of(3)
    outcome = classify(400, status_body(LOKI_400), {}, export)
    assert isinstance(outcome, Refused)
    assert [(list(p), reason) for p, reason in outcome.named] == [([1], LOKI_400)]
    assert not outcome.unresolved
    # a text naming no entry: bisected
    other = classify(400, status_body("something new"), {}, export)
    assert isinstance(other, Refused) and list(other.unresolved) == [0, 1, 2]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_answers_are_retried(status: int) -> None:
    outcome = classify(status, status_body("busy"), {"Retry-After": "7"}, export_of(2))
    assert isinstance(outcome, Transient)
    assert (outcome.message, outcome.retry_after) == ("busy", 7.0)


def test_other_refusals_are_final_and_413_is_split() -> None:
    export = export_of(2)
    for status in (401, 403, 404, 415):
        outcome = classify(status, b'{"message": "no"}', {"Content-Type": "application/json"},
                           export)
        assert isinstance(outcome, Refused) and outcome.message == "no"
        assert [list(p) for p, _ in outcome.named] == [[0, 1]]
    too_big = classify(413, b"", {}, export)
    assert isinstance(too_big, Refused) and list(too_big.split) == [0, 1]
    assert not too_big.unresolved


# -- against a small OTLP server -----------------------------------------------------------------


class OtlpServer:
    """Stores what it is sent; answers from a script (status, body, headers) per request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: list[tuple[int, bytes, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                status, answer, headers = outer.script.pop(0) if outer.script else (200, b"", {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def lines(self) -> list[str]:
        out = []
        for _, body in self.requests:
            request = ExportLogsServiceRequest.FromString(gzip.decompress(body))
            out += [r.body.string_value for rl in request.resource_logs
                    for sl in rl.scope_logs for r in sl.log_records]
        return out


@pytest.fixture
def server() -> Iterator[OtlpServer]:
    srv = OtlpServer()
    srv.thread.start()
    yield srv
    srv.server.shutdown()
    srv.server.server_close()


def make_sink(tmp_path: Path, url: str, **extra: Any) -> OtlpSink:
    settings: dict[str, Any] = {
        "enabled": True, "endpoint": url, "min_backoff": 0.01, "max_backoff": 0.05,
        "retry_budget": 2.0, "spool_dir": str(tmp_path / "spool"),
        "dead_letter_path": str(tmp_path / "dead.jsonl"), **extra}
    return OtlpSink(OtlpSinkConfig(**settings))


def test_429s_are_retried_then_delivered(tmp_path: Path, server: OtlpServer) -> None:
    server.script = [(429, status_body("slow down"), {}), (503, b"", {"Retry-After": "0"})]
    sink = make_sink(tmp_path, server.url)
    try:
        sink.write([batch(WEB, [("stdout", "a"), ("stdout", "b")])])
    finally:
        sink.close()
    assert len(server.requests) == 3
    assert server.lines() == ["a", "b"] * 3  # the same request each time
    headers = server.requests[0][0]
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["Content-Encoding"] == "gzip"


def test_a_partial_success_dead_letters_the_request_in_one_request(
    tmp_path: Path, server: OtlpServer
) -> None:
    response = ExportLogsServiceResponse()
    response.partial_success.rejected_log_records = 1
    response.partial_success.error_message = "one was too old"
    protobuf = {"Content-Type": "application/x-protobuf"}
    server.script = [(200, response.SerializeToString(), protobuf)]
    sink = make_sink(tmp_path, server.url)
    try:
        sink.write([batch(WEB, [("stdout", "a"), ("stdout", "b")])])
    finally:
        sink.close()
    assert len(server.requests) == 1  # never sent again (the OTLP specification)
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["body"], d["unresolved"], d["status"], d["sink"]) for d in dead] == [
        ("a", True, 200, "otlp"), ("b", True, 200, "otlp")]
    assert "1 of 2 log records rejected: one was too old" in dead[0]["error"]
    assert dead[0]["resource"]["container.name"] == "shop-web-1"
    assert sink.up


def test_headers_from_the_environment_are_sent_and_never_shown(
    tmp_path: Path, server: OtlpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTLP_TEST_HEADERS", "api-key=s3cr%3Dt, X-Scope-OrgID=team-a")
    sink = make_sink(tmp_path, server.url, headers_env="OTLP_TEST_HEADERS", tenant_id="ignored")
    try:
        sink.write([batch(WEB, [("stdout", "a")])])
        shown = repr(sink._delivery._session.auth)
    finally:
        sink.close()
    headers = server.requests[0][0]
    assert headers["api-key"] == "s3cr=t"
    assert headers["X-Scope-OrgID"] == "team-a"  # the secret header wins over tenant_id
    assert "s3cr" not in shown and "api-key" in shown


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "otlp sink: headers: environment variable OTLP_TEST_HEADERS is not set"),
        ("novalue", "header 1 is not name=value"),
        ("a=1,b c=2", "header 2 is not name=value"),
    ],
)
def test_bad_headers_fail_at_start_naming_the_pair_not_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, problem: str
) -> None:
    if value is not None:
        monkeypatch.setenv("OTLP_TEST_HEADERS", value)
    else:
        monkeypatch.delenv("OTLP_TEST_HEADERS", raising=False)
    with pytest.raises(SecretUnavailableError, match=problem) as err:
        make_sink(tmp_path, "http://127.0.0.1:9", headers_env="OTLP_TEST_HEADERS")
    assert "=2" not in str(err.value)


def make_certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = OtlpServer(tls=context)
    srv.thread.start()
    try:
        trusted = make_sink(tmp_path / "a", srv.url, ca_file=str(cert))
        try:
            trusted.write([batch(WEB, [("stdout", "over tls")])])
        finally:
            trusted.close()
        assert srv.lines() == ["over tls"]
        untrusted = make_sink(tmp_path / "b", srv.url, spool_max_bytes=0, retry_budget=0.2)
        try:
            with pytest.raises(SinkError, match=r"CERTIFICATE_VERIFY_FAILED|SSLError"):
                untrusted.write([batch(WEB, [("stdout", "refused")])])
        finally:
            untrusted.close()
    finally:
        srv.server.shutdown()
        srv.server.server_close()
