"""Pipeline stages: multiline merge, JSON parsing, redaction, their config and their wiring."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from log_capturer.config.loader import ConfigError, load_config
from log_capturer.discovery.container import MULTILINE_START_LABEL, ContainerInfo
from log_capturer.pipeline.batch import Batch, LineBatch, RecordBatch
from log_capturer.pipeline.config import PipelineConfig
from log_capturer.pipeline.dispatcher import Dispatcher
from log_capturer.pipeline.queue import BatchQueue
from log_capturer.pipeline.record import LogRecord
from log_capturer.pipeline.stages import StageChain
from log_capturer.pipeline.stages.chain import build_stages
from log_capturer.pipeline.stages.config import (
    MultilineConfig,
    ParseJsonConfig,
    RedactConfig,
    StagesConfig,
)
from log_capturer.pipeline.stages.multiline import Multiline
from log_capturer.pipeline.stages.parse_json import ParseJson
from log_capturer.pipeline.stages.redact import Redact
from log_capturer.positions.ledger import Ledger
from log_capturer.positions.marks import Mark
from log_capturer.sinks.base import Sink
from log_capturer.sinks.file import FileSink, FileSinkConfig
from log_capturer.timestamps import format_rfc3339_ns
from tests.unit.batches import line_batch

WEB = ContainerInfo(id="a" * 64, name="web-1", image="web:1")
DB = ContainerInfo(id="b" * 64, name="db-1", image="db:1")
T0 = 1_795_000_000_000_000_000

TRACEBACK = [
    "2026-01-01 12:00:00 ERROR request failed",
    "Traceback (most recent call last):",
    '  File "/app/main.py", line 3, in <module>',
    "    main()",
    "ValueError: bad input",
]


def rec(
    msg: str,
    ts_ns: int = T0,
    seq: int = 1,
    stream: str = "stdout",
    info: ContainerInfo = WEB,
    truncated: bool = False,
) -> LogRecord:
    return LogRecord(info, stream, ts_ns, seq, format_rfc3339_ns(ts_ns), msg, truncated)


def lines(messages: list[str], start_ns: int = T0, **kw: Any) -> list[LogRecord]:
    """One record per message, each at its own nanosecond (seq 1)."""
    return [rec(m, start_ns + i, 1, **kw) for i, m in enumerate(messages)]


def multiline(**kw: Any) -> Multiline:
    return Multiline(MultilineConfig(enabled=True, **kw))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- multiline ---------------------------------------------------------------------------


def test_python_traceback_becomes_one_record_ending_at_its_last_line() -> None:
    stage = multiline()
    src = [
        rec(TRACEBACK[0], T0, 1),
        rec(TRACEBACK[1], T0 + 5, 1),
        rec(TRACEBACK[2], T0 + 5, 2),
        rec(TRACEBACK[3], T0 + 5, 3),
        rec(TRACEBACK[4], T0 + 7, 2),
    ]
    merged_before = metric("log_capturer_multiline_records_merged_total")
    assert stage.process(src, now=10.0) == []  # held: the trace may go on
    out = stage.process([rec("2026-01-01 12:00:01 INFO next", T0 + 9, 1)], now=10.1)

    assert len(out) == 1
    merged = out[0]
    assert merged.message == "\n".join(TRACEBACK)
    assert merged.lines == 5
    assert (merged.ts_ns, merged.seq, merged.ts) == (T0, 1, format_rfc3339_ns(T0))
    assert merged.end_position == (T0 + 7, 2)
    assert merged.truncated is False
    doc = merged.to_dict()
    assert (doc["lines"], doc["end_ts"], doc["end_seq"]) == (5, format_rfc3339_ns(T0 + 7), 2)
    assert metric("log_capturer_multiline_records_merged_total") == merged_before + 1
    # The INFO line is held now, as a single line it is released unchanged.
    (single,) = stage.flush()
    assert (single.message, single.lines, single.end_position) == (
        "2026-01-01 12:00:01 INFO next",
        1,
        (T0 + 9, 1),
    )


def test_java_stack_trace_with_cause_is_one_record() -> None:
    trace = [
        "12:00:00.123 ERROR [main] c.e.App - failed",
        "java.lang.IllegalStateException: outer",
        "\tat com.example.App.run(App.java:10)",
        "Caused by: java.io.IOException: inner",
        "\tat com.example.Io.read(Io.java:5)",
        "\t... 3 more",
    ]
    stage = multiline()
    out = stage.process(lines([*trace, "12:00:01.000 INFO [main] c.e.App - ok"]), now=0.0)
    assert [r.message for r in out] == ["\n".join(trace)]


def test_a_group_is_released_after_flush_timeout_without_new_lines() -> None:
    stage = multiline(flush_timeout=2.0)
    assert stage.next_deadline() is None
    assert stage.process(lines(TRACEBACK[:2]), now=100.0) == []
    assert stage.next_deadline() == 102.0
    assert stage.process(lines(TRACEBACK[2:], T0 + 10), now=101.0) == []
    assert stage.next_deadline() == 103.0  # a new line pushes the deadline
    assert stage.poll(102.9) == []
    (out,) = stage.poll(103.0)
    assert out.lines == 5
    assert stage.next_deadline() is None
    assert stage.poll(1000.0) == []


def test_max_lines_releases_full_groups_in_order() -> None:
    stage = multiline(max_lines=3)
    src = lines(["START", "  1", "  2", "  3", "  4", "  5", "  6"])
    out = stage.process(src, now=0.0)
    assert [r.message.split("\n") for r in out] == [["START", "  1", "  2"], ["  3", "  4", "  5"]]
    assert [(r.lines, r.ts_ns, r.end_ts_ns) for r in out] == [(3, T0, T0 + 2), (3, T0 + 3, T0 + 5)]
    (rest,) = stage.flush()
    assert (rest.message, rest.ts_ns) == ("  6", T0 + 6)


def test_max_bytes_starts_a_new_record_instead_of_cutting_and_keeps_truncated() -> None:
    stage = multiline(max_bytes=20)
    src = [rec("START", T0), rec("  aaaaa", T0 + 1, truncated=True), rec("  bbbbbbbbb", T0 + 2)]
    (first,) = stage.process(src, now=0.0)  # 5 + 1 + 7 = 13; adding 1 + 11 would be 25 > 20
    assert (first.message, first.lines, first.truncated) == ("START\n  aaaaa", 2, True)
    assert first.end_position == (T0 + 1, 1)
    (second,) = stage.flush()
    assert (second.message, second.truncated) == ("  bbbbbbbbb", False)
    # The joining "\n" counts: exactly at the limit the group is released at once.
    exact = multiline(max_bytes=13)
    assert [r.message for r in exact.process(lines(["START", "  aaaaa"]), now=0.0)] == [
        "START\n  aaaaa"
    ]
    assert exact.process(lines(["START", "  aaaaaa"]), now=0.0) == [rec("START")]
    # A line at or over the limit on its own is released at once, whole.
    big = "x" * 25
    assert [r.message for r in stage.process([rec(big, T0 + 3)], now=0.0)] == [big]
    # Bytes are UTF-8 bytes: "é" is two.
    (utf8,) = stage.process([rec("é" * 10, T0 + 4)], now=0.0)
    assert utf8.message == "é" * 10


def test_interleaved_streams_and_containers_keep_per_stream_order() -> None:
    stage = multiline(match_containers=["web-*"])
    src = [
        rec("OUT start", T0, stream="stdout"),
        rec("ERR start", T0, stream="stderr"),
        rec("  out 1", T0 + 1, stream="stdout"),
        rec("db line", T0 + 1, info=DB),  # not matched: straight through
        rec("  err 1", T0 + 2, stream="stderr"),
        rec("  db indented", T0 + 2, info=DB),  # not merged into "db line"
        rec("OUT next", T0 + 3, stream="stdout"),
        rec("  out 2", T0 + 4, stream="stdout"),
    ]
    out = stage.process(src, now=0.0)
    assert [(r.container.id, r.stream, r.message) for r in out] == [
        (DB.id, "stdout", "db line"),
        (DB.id, "stdout", "  db indented"),
        (WEB.id, "stdout", "OUT start\n  out 1"),
    ]
    rest = stage.flush()
    assert sorted((r.stream, r.message) for r in rest) == [
        ("stderr", "ERR start\n  err 1"),
        ("stdout", "OUT next\n  out 2"),
    ]


def test_a_container_renamed_out_of_match_containers_releases_its_group_first() -> None:
    stage = multiline(match_containers=["web-*"])
    assert stage.process([rec("START"), rec("  more", T0 + 1)], now=0.0) == []
    renamed = ContainerInfo(id=WEB.id, name="old-web", image="web:1")
    out = stage.process([rec("  after rename", T0 + 2, info=renamed)], now=0.0)
    assert [r.message for r in out] == ["START\n  more", "  after rename"]
    assert stage.next_deadline() is None


def test_flush_of_one_container_releases_only_its_groups() -> None:
    stage = multiline(flush_timeout=5.0)
    stage.process(
        [rec("A out", stream="stdout"), rec("A err", stream="stderr"), rec("B out", info=DB)],
        now=0.0,
    )
    released = stage.flush(WEB.id)
    assert sorted(r.message for r in released) == ["A err", "A out"]
    assert stage.next_deadline() == 5.0  # B is still held
    assert [r.message for r in stage.flush(WEB.id)] == []
    assert [r.message for r in stage.flush()] == ["B out"]
    assert stage.next_deadline() is None


@pytest.mark.parametrize("seed", range(5))
def test_merged_records_cover_every_line_exactly_once(seed: int) -> None:
    """Whatever the mix of batches, polls and flushes, each stream's lines come out once,
    in order, and each record's positions are its first and last line's."""
    rnd = random.Random(seed)
    stage = multiline(max_lines=4, max_bytes=60, flush_timeout=1.0)
    keys = [(WEB, "stdout"), (WEB, "stderr"), (DB, "stdout")]
    sent: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    out: list[LogRecord] = []
    now = 0.0
    ts = T0
    for _ in range(60):
        batch = []
        for _ in range(rnd.randint(0, 8)):
            info, stream = rnd.choice(keys)
            ts += rnd.choice([0, 1])
            key = (info.id, stream)
            seq = sum(1 for t, _, _ in sent.get(key, []) if t == ts) + 1
            text = rnd.choice(["START", "  cont", "  longer continuation line"]) + f" {ts}.{seq}"
            sent.setdefault(key, []).append((ts, seq, text))
            batch.append(rec(text, ts, seq, stream, info))
        now += rnd.random()
        out += stage.process(batch, now)
        action = rnd.random()
        if action < 0.3:
            out += stage.poll(now)
        elif action < 0.35:
            out += stage.flush(rnd.choice(keys)[0].id)
    out += stage.flush()
    for key, expected in sent.items():
        records = [r for r in out if r.key == key]
        assert [m for r in records for m in r.message.split("\n")] == [t for _, _, t in expected]
        i = 0
        for r in records:
            first, last = expected[i], expected[i + r.lines - 1]
            assert (r.ts_ns, r.seq) == first[:2] and r.end_position == last[:2]
            assert r.lines <= 4 and (r.lines == 1 or len(r.message.encode()) <= 60)
            i += r.lines


# -- parse_json --------------------------------------------------------------------------


def parse(message: str, **kw: Any) -> LogRecord:
    record = rec(message)
    ParseJson(ParseJsonConfig(enabled=True, **kw)).apply([record])
    return record


def written(record: LogRecord) -> bytes:
    """The record as the file and stdout sinks write it."""
    (batch,) = RecordBatch.group([record])
    return batch.jsonl()


def test_json_object_goes_into_fields_and_the_message_is_kept() -> None:
    before = metric("log_capturer_json_parse_total", result="parsed")
    text = ' {"level": "info", "n": 3, "tags": ["a"], "ok": true} '
    record = parse(text)
    assert record.fields == {"level": "info", "n": 3, "tags": ["a"], "ok": True}
    assert record.message == text
    assert json.loads(written(record))["fields"]["n"] == 3
    assert metric("log_capturer_json_parse_total", result="parsed") == before + 1


@pytest.mark.parametrize(
    ("message", "result"),
    [
        ("[1, 2, 3]", "not_json"),
        ('"just a string"', "not_json"),
        ("plain text {not json}", "not_json"),
        ("", "not_json"),
        ('{"a": 1', "invalid"),
        ("{'single': 'quotes'}", "invalid"),
        ('{"a": \ufffd\ufffd}', "invalid"),  # bytes that were not UTF-8, as replacement chars
        ('{"a": NaN}', "invalid"),
        ('{"a": 1e999}', "invalid"),  # would be written back as Infinity
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid"),  # RecursionError
        ('{"a": ' + "[" * 40 + "]" * 40 + "}", "too_deep"),
    ],
)
def test_anything_but_a_json_object_passes_untouched(message: str, result: str) -> None:
    before = metric("log_capturer_json_parse_total", result=result)
    record = parse(message)
    assert record.fields is None
    assert record.message == message
    assert metric("log_capturer_json_parse_total", result=result) == before + 1


def test_replacement_chars_and_lone_surrogates_inside_strings_stay_writable() -> None:
    record = parse('{"msg": "caf\ufffd", "bad": "\\ud800x", "pair": "\\ud83d\\ude00"}')
    assert record.fields == {"msg": "caf\ufffd", "bad": "\ufffdx", "pair": "\U0001f600"}
    assert json.loads(written(record))["fields"] == record.fields  # a lone surrogate raises


def test_keep_message_false_takes_the_message_key_out_of_the_fields() -> None:
    record = parse('{"message": "user logged in", "user": "bob"}', keep_message=False)
    assert (record.message, record.fields) == ("user logged in", {"user": "bob"})
    without = parse('{"msg": "no message key", "user": "bob"}', keep_message=False)
    assert without.message == '{"msg": "no message key", "user": "bob"}'
    assert without.fields == {"msg": "no message key", "user": "bob"}


# -- redact ------------------------------------------------------------------------------

SECRET_40 = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def redact(message: str, fields: dict[str, Any] | None = None, **kw: Any) -> LogRecord:
    record = rec(message)
    record.fields = fields
    Redact(RedactConfig(enabled=True, **kw)).apply([record])
    return record


@pytest.mark.parametrize(
    ("rule", "message", "expected"),
    [
        ("password", "login user=bob password=hunter2 ok", "login user=bob password=[REDACTED] ok"),
        (
            "password",
            '{"user": "bob", "password": "hu\\"nt er2"}',
            '{"user": "bob", "password": "[REDACTED]"}',
        ),
        ("password", "DB_PASSWD: 's3cret' next", "DB_PASSWD: '[REDACTED]' next"),
        ("password", "pwd=abc&user=x", "pwd=[REDACTED]&user=x"),
        (
            "bearer_token",
            "Authorization: Bearer eyJhbGciOi.eyJzdWIi.SflKxw-_RJ",
            "Authorization: Bearer [REDACTED]",
        ),
        (
            "aws_access_key_id",
            "using AKIAIOSFODNN7EXAMPLE and ASIAIOSFODNN7EXAMPLF.",
            "using [REDACTED] and [REDACTED].",
        ),
        (
            "aws_secret_access_key",
            f"AWS_SECRET_ACCESS_KEY={SECRET_40} set",
            "AWS_SECRET_ACCESS_KEY=[REDACTED] set",
        ),
        (
            "aws_secret_access_key",
            f'"SecretAccessKey": "{SECRET_40}"',
            '"SecretAccessKey": "[REDACTED]"',
        ),
        (
            "basic_auth_url",
            "dsn postgres://admin:p@ss@db:5432/app up",
            "dsn postgres://admin:[REDACTED]@db:5432/app up",
        ),
    ],
)
def test_each_builtin_rule_redacts_only_the_secret(rule: str, message: str, expected: str) -> None:
    before = metric("log_capturer_redactions_total", rule=rule)
    assert redact(message).message == expected
    expected_count = 2 if rule == "aws_access_key_id" else 1
    assert metric("log_capturer_redactions_total", rule=rule) == before + expected_count
    # Turned off by name, the rule leaves the message alone.
    assert redact(message, builtin={rule: False}).message == message


@pytest.mark.parametrize(
    "message",
    [
        "nothing to see",
        "Bearer of bad news",
        "AKIA123",
        f"key={SECRET_40}",
        "http://host:80/x",
        "https://user@host/path",
    ],
)
def test_ordinary_text_is_not_redacted(message: str) -> None:
    assert redact(message).message == message


def test_user_rules_with_group_references_and_the_default_replacement() -> None:
    rules = [
        {"name": "card", "pattern": r"\b(\d{4})\d{8}(\d{4})\b", "replacement": r"\1********\2"},
        {"name": "session", "pattern": r"sess-[0-9a-f]{8}"},
    ]
    before = metric("log_capturer_redactions_total", rule="session")
    record = redact(
        "card 4111111111111111 sess-deadbeef",
        {"s": "sess-0badf00d"},
        rules=rules,
        replacement="***",
    )
    assert record.message == "card 4111********1111 ***"
    assert record.fields == {"s": "***"}
    assert metric("log_capturer_redactions_total", rule="session") == before + 2


def test_fields_are_redacted_by_value_and_by_secret_key_names_at_any_depth() -> None:
    fields = {
        "password": "hunter2",
        "nested": {
            "db_password": 12345,
            "url": "mysql://u:pw@h/db",
            "require_password": True,
            "old_password": None,
        },
        "list": [{"SecretAccessKey": "short-but-secret"}, "Bearer abcdefghijklmnop", None],
        "user": "bob",
    }
    record = redact("no secret in the message", fields)
    assert record.fields == {
        "password": "[REDACTED]",
        "nested": {
            "db_password": "[REDACTED]",
            "url": "mysql://u:[REDACTED]@h/db",
            "require_password": True,
            "old_password": None,
        },
        "list": [{"SecretAccessKey": "[REDACTED]"}, "Bearer [REDACTED]", None],
        "user": "bob",
    }


# -- config and chain --------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, environ={})


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        (
            "pipeline: {stages: {multiline: {start_pattern: '(unclosed'}}}",
            "pipeline.stages.multiline.start_pattern: invalid regular expression",
        ),
        (
            "pipeline: {stages: {redact: {rules: [{name: ok, pattern: 'a'}, "
            "{name: bad, pattern: '[a-'}]}}}",
            "pipeline.stages.redact.rules.1.pattern: invalid regular expression",
        ),
        (
            "pipeline: {stages: {redact: {rules: [{name: r, pattern: 'a', replacement: '\\9'}]}}}",
            "pipeline.stages.redact.rules.0.replacement: invalid replacement",
        ),
        (
            "pipeline: {stages: {redact: {builtin: {nope: true}}}}",
            "pipeline.stages.redact.builtin.nope: unknown key",
        ),
        (
            "pipeline: {stages: {redact: {rules: [{name: password, pattern: 'a'}]}}}",
            "pipeline.stages.redact: rules: rule name 'password' is used twice",
        ),
        (
            "pipeline: {stages: {multiline: {max_bytes: 0}}}",
            "pipeline.stages.multiline.max_bytes: must be at least 1 byte",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, yaml_text)
    assert any(p.startswith(key) for p in err.value.problems), err.value.problems


def test_stages_are_off_by_default_and_built_in_order(tmp_path: Path) -> None:
    default = build_stages(load(tmp_path, "{}").pipeline.stages)
    # Off: every container passes by (as batches), but one that asks by its own label.
    assert not default.applies_to(WEB) and not default.applies_to(DB)
    labelled = ContainerInfo(id="c" * 64, name="app", image="app:1",
                             labels={MULTILINE_START_LABEL: "^[0-9]"})
    assert default.applies_to(labelled)
    config = load(
        tmp_path,
        """
pipeline:
  stages:
    multiline: {enabled: true, flush_timeout: 500ms, match_containers: ["web-*"]}
    parse_json: {enabled: true}
    redact: {enabled: true}
""",
    ).pipeline.stages
    assert config.multiline.flush_timeout == 0.5
    chain = build_stages(config)
    # parse_json runs before redact: the number under "pwd" is only caught by key name.
    (out,) = chain.process([rec('{"pwd": 12345, "user": "bob"}', info=DB)], now=0.0)
    assert out.fields == {"pwd": "[REDACTED]", "user": "bob"}
    # What multiline releases later (poll, flush) is redacted too.
    assert (
        chain.process([rec("start password=a", T0), rec("  token=x password=b", T0 + 1)], now=0.0)
        == []
    )
    (polled,) = chain.poll(1.0)
    assert polled.message == "start password=[REDACTED]\n  token=x password=[REDACTED]"
    chain.process([rec("bye password=c", T0 + 2)], now=1.0)
    assert [r.message for r in chain.flush()] == ["bye password=[REDACTED]"]


def test_only_parse_json_enabled_has_no_multiline_holding() -> None:
    chain = build_stages(StagesConfig(parse_json=ParseJsonConfig(enabled=True)))
    out = chain.process([rec('{"a": 1}'), rec("  indented")], now=0.0)
    assert [r.fields for r in out] == [{"a": 1}, None]
    assert chain.next_deadline() is None


# -- end to end --------------------------------------------------------------------------


class CapturingSink(Sink):
    name = "capture"

    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def write(self, batches: list[Batch]) -> None:
        for batch in batches:
            self.records.extend(batch.records())


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def run_dispatcher(
    tmp_path: Path, flush_timeout: float
) -> tuple[Dispatcher, BatchQueue, CapturingSink, Ledger]:
    queue = BatchQueue(1000, 10**6)
    sink = CapturingSink()
    positions = Ledger(str(tmp_path / "positions.json"))
    assert positions.begin_reading(WEB, ("stdout", "stderr"), start_now=False) is not None
    stages: StageChain = build_stages(
        StagesConfig(
            multiline=MultilineConfig(enabled=True, flush_timeout=flush_timeout),
            redact=RedactConfig(enabled=True),
        )
    )
    dispatcher = Dispatcher(
        queue,
        [sink],
        positions,
        PipelineConfig(batch_wait=0.01),
        flush_interval=0.05,
        stages=stages,
    )
    dispatcher.start()
    return dispatcher, queue, sink, positions


def put_all(queue: BatchQueue, records: list[LogRecord]) -> None:
    for record in records:  # a read each
        batch = line_batch(record.container, [(record.stream, record.ts_ns, record.message)])
        assert queue.put(batch, threading.Event())


def test_dispatcher_acks_merged_records_at_their_last_line_and_flushes_at_stop(
    tmp_path: Path,
) -> None:
    dispatcher, queue, sink, positions = run_dispatcher(tmp_path, flush_timeout=60.0)
    try:
        src = lines([*TRACEBACK, "2026-01-01 12:00:01 INFO password=x"])
        put_all(queue, src)
        wait_for(lambda: bool(positions.delivered(WEB.id)))
        assert [r.lines for r in sink.records] == [5]
        # Acknowledged up to the traceback's last line, not the held line after it.
        assert positions.delivered(WEB.id) == {"stdout": Mark(T0 + 4, 1)}
    finally:
        dispatcher.stop(timeout=5)
    assert not dispatcher.alive
    assert [r.message for r in sink.records[1:]] == ["2026-01-01 12:00:01 INFO password=[REDACTED]"]
    saved = Ledger(str(tmp_path / "positions.json")).file.load()
    assert saved.marks == {WEB.id: {"stdout": Mark(T0 + 5, 1)}}


def test_dispatcher_wakes_for_the_flush_timeout(tmp_path: Path) -> None:
    dispatcher, queue, sink, positions = run_dispatcher(tmp_path, flush_timeout=0.2)
    try:
        put_all(queue, lines(TRACEBACK))
        started = time.monotonic()
        wait_for(lambda: len(sink.records) == 1)
        assert time.monotonic() - started >= 0.15
        assert sink.records[0].lines == 5
        wait_for(lambda: positions.delivered(WEB.id) == {"stdout": Mark(T0 + 4, 1)})
    finally:
        dispatcher.stop(timeout=5)


def test_file_sink_recovers_marks_at_merged_records_last_lines(tmp_path: Path) -> None:
    config = FileSinkConfig(path=str(tmp_path / "logs.jsonl"))
    stage = multiline()
    trace_out = lines(TRACEBACK, T0)
    trace_err = lines(["ERR", "  detail"], T0 + 100, stream="stderr")
    records = stage.process([*trace_out, *trace_err, rec("next", T0 + 50)], now=0.0)
    records += stage.flush(WEB.id)
    assert [(r.stream, r.lines) for r in records] == [("stdout", 5), ("stderr", 2), ("stdout", 1)]

    sink = FileSink(config)
    state = sink.checkpoint()  # the last checkpoint precedes every write
    sink.write(RecordBatch.group(records))
    sink.close()  # then the process dies before positions are saved

    restarted = FileSink(config)
    marks = restarted.recover({}, state)
    assert marks == {WEB.id: {"stdout": Mark(T0 + 50, 1), "stderr": Mark(T0 + 101, 1)}}
    # Re-sent from older positions, the merged records are not written twice.
    again = multiline()
    resent = again.process([*trace_out, *trace_err, rec("next", T0 + 50)], now=0.0)
    resent += again.flush()
    restarted.write(RecordBatch.group([*resent, rec("new", T0 + 60)]))
    restarted.close()
    written = [json.loads(x) for x in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert [(d["message"], d.get("lines", 1)) for d in written] == [
        ("\n".join(TRACEBACK), 5),
        ("ERR\n  detail", 2),
        ("next", 1),
        ("new", 1),
    ]


# -- per-container settings from the container's labels ---------------------------------------

JAVA = ContainerInfo(id="d" * 64, name="java-1", image="java:1",
                     labels={MULTILINE_START_LABEL: r"^\d{4}-\d\d-\d\d "})
BROKEN = ContainerInfo(id="e" * 64, name="broken-1", image="x:1",
                       labels={MULTILINE_START_LABEL: "(unclosed"})


def test_a_containers_multiline_label_merges_its_lines_with_the_stage_off() -> None:
    stage = Multiline(MultilineConfig())  # enabled: false, as by default
    java = ["2026-01-01 12:00:00 ERROR boom", "java.lang.IllegalStateException: x",
            "\tat a.b.C.d(C.java:1)", "2026-01-01 12:00:01 INFO next"]
    out = stage.process(lines(java, info=JAVA) + lines(["web 1", "  web 2"], T0 + 10), now=0.0)
    # web-1 has no label: passed by unchanged; java-1's record waits for its next start
    assert [(r.container.name, r.message) for r in out] == [
        ("java-1", "\n".join(java[:3])), ("web-1", "web 1"), ("web-1", "  web 2")]
    assert [r.message for r in stage.flush()] == [java[3]]
    assert stage.applies_to(JAVA) and not stage.applies_to(WEB)


def test_the_label_overrides_the_configured_start_pattern() -> None:
    stage = multiline(match_containers=["web-*"])  # java-1 matches no pattern: the label wins
    out = stage.process(lines(["2026-01-01 12:00:00 a", "Caused by: b", "2026-01-01 c"],
                              info=JAVA), now=0.0)
    assert [r.message for r in out] == ["2026-01-01 12:00:00 a\nCaused by: b"]


def test_an_invalid_label_is_reported_once_and_the_lines_pass_unmerged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stage = Multiline(MultilineConfig())
    before = metric("log_capturer_multiline_label_errors_total")
    out = stage.process(lines(["a", "  b"], info=BROKEN), now=0.0)
    out += stage.process(lines(["c"], T0 + 5, info=BROKEN), now=0.0)
    assert [r.message for r in out] == ["a", "  b", "c"]
    assert metric("log_capturer_multiline_label_errors_total") == before + 1
    assert not stage.applies_to(BROKEN)


def test_dispatcher_passes_unlabelled_containers_as_batches_and_merges_labelled_ones(
    tmp_path: Path,
) -> None:
    queue = BatchQueue(1000, 10**6)
    seen: list[Batch] = []

    class Keep(CapturingSink):
        def write(self, batches: list[Batch]) -> None:
            seen.extend(batches)
            super().write(batches)

    sink = Keep()
    positions = Ledger(str(tmp_path / "positions.json"))
    for info in (WEB, JAVA):
        assert positions.begin_reading(info, ("stdout", "stderr"), start_now=False) is not None
    dispatcher = Dispatcher(queue, [sink], positions, PipelineConfig(batch_wait=0.01), 0.05,
                            stages=build_stages(StagesConfig()))
    dispatcher.start()
    try:
        put_all(queue, lines(["web 1", "  web 2"]))
        put_all(queue, lines(["2026-01-01 12:00:00 ERROR x", "  at y", "2026-01-01 12:00:01 z"],
                             T0 + 100, info=JAVA))
        wait_for(lambda: len(sink.records) == 3)
    finally:
        dispatcher.stop(timeout=5)
    assert [r.message for r in sink.records if r.container is WEB] == ["web 1", "  web 2"]
    assert [r.message for r in sink.records if r.container is JAVA] == [
        "2026-01-01 12:00:00 ERROR x\n  at y", "2026-01-01 12:00:01 z"]
    assert all(isinstance(b, LineBatch) for b in seen if b.container is WEB)
