"""Relabel rules (Promtail's subset), the meta labels, the cardinality guard, and how the Loki
sink uses them; config errors name the rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from log_capturer.config.loader import ConfigError, load_config
from log_capturer.discovery.container import ContainerInfo
from log_capturer.pipeline.batch import RecordBatch
from log_capturer.pipeline.record import LogRecord
from log_capturer.sinks.loki import LokiSinkConfig
from log_capturer.sinks.loki.encode import Encoder
from log_capturer.sinks.network.relabel import (
    CardinalityGuard,
    Relabeler,
    RelabelRule,
    docker_meta,
    expand,
)

WEB = ContainerInfo(
    id="a" * 64,
    name="shop-web-1",
    image="shop/web:2",
    labels={
        "com.docker.compose.service": "web",
        "com.docker.compose.project": "shop",
        "team": "payments",
        "version": "1.2.3",
    },
)


def rules(*docs: dict[str, object]) -> Relabeler:
    return Relabeler([RelabelRule.model_validate(d) for d in docs])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_meta_labels_are_promtails() -> None:
    meta = docker_meta(WEB, "stderr", "h1")
    assert meta["__meta_docker_container_name"] == "/shop-web-1"  # Docker's leading slash
    assert meta["__meta_docker_container_id"] == WEB.id
    assert meta["__meta_docker_container_image"] == "shop/web:2"
    assert meta["__meta_docker_container_log_stream"] == "stderr"
    assert meta["__meta_docker_container_label_com_docker_compose_service"] == "web"
    assert meta["__meta_docker_container_label_team"] == "payments"
    assert meta["__host__"] == "h1"


def test_expand_is_gos() -> None:
    match = re.fullmatch(r"(?P<major>\d+)\.(\d+)\.(\d+)", "1.2.3")
    assert match is not None
    assert expand("$1", match) == "1"
    assert expand("v${1}x", match) == "v1x"
    assert expand("v$1x", match) == "v"  # $1x is ${1x}: no such group
    assert expand("$major-$3", match) == "1-3"
    assert expand("$$1", match) == "$1"
    assert expand("$9", match) == ""
    assert expand("plain", match) == "plain"


def test_the_promtail_docker_example_relabels_as_promtail_does() -> None:
    relabel = rules(
        {"source_labels": ["__meta_docker_container_name"], "regex": "/(.*)",
         "target_label": "container"},
        {"source_labels": ["__meta_docker_container_log_stream"], "target_label": "logstream"},
        {"source_labels": ["__meta_docker_container_label_com_docker_compose_service",
                           "__meta_docker_container_label_com_docker_compose_project"],
         "separator": "/", "regex": "(.+)/(.+)", "replacement": "$2-$1", "target_label": "svc"},
        {"action": "labelmap", "regex": "__meta_docker_container_label_(team|version)",
         "replacement": "label_$1"},
        {"action": "labeldrop", "regex": "label_version"},
    )
    out = relabel.apply(docker_meta(WEB, "stdout", "h1"))
    assert out is not None
    assert {k: v for k, v in out.items() if not k.startswith("__")} == {
        "container": "shop-web-1", "logstream": "stdout", "svc": "shop-web",
        "label_team": "payments"}


def test_replace_with_an_empty_result_removes_and_no_match_changes_nothing() -> None:
    relabel = rules(
        {"source_labels": ["team"], "regex": "payments", "replacement": "", "target_label": "a"},
        {"source_labels": ["team"], "regex": "nomatch", "target_label": "b"},
    )
    assert relabel.apply({"team": "payments", "a": "x", "b": "y"}) == {"team": "payments",
                                                                       "b": "y"}


def test_keep_drop_and_labelkeep() -> None:
    keep = rules({"action": "keep", "source_labels": ["team"], "regex": "pay.*"})
    drop = rules({"action": "drop", "source_labels": ["team"], "regex": "pay.*"})
    assert keep.apply({"team": "payments"}) == {"team": "payments"}
    assert keep.apply({"team": "search"}) is None
    assert keep.apply({}) is None  # a missing label is the empty string
    assert drop.apply({"team": "payments"}) is None
    assert drop.apply({"team": "search"}) == {"team": "search"}
    labelkeep = rules({"action": "labelkeep", "regex": "a|b"})
    assert labelkeep.apply({"a": "1", "b": "2", "c": "3"}) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("{source_labels: [a], regex: '(unclosed'}", "sinks.loki.relabel_configs.0: Value error, "
         "regex '(unclosed' is invalid"),
        ("{source_labels: [a]}", "sinks.loki.relabel_configs.0: Value error, action replace "
         "needs target_label"),
        ("{action: drop}", "sinks.loki.relabel_configs.0: Value error, action drop needs "
         "source_labels"),
        ("{action: labeldrop, source_labels: [a]}", "sinks.loki.relabel_configs.0: Value error, "
         "action labeldrop matches label names"),
        ("{action: bogus}", "sinks.loki.relabel_configs.0.action: Input should be"),
        ("{source_labels: [a], target_label: 'a.b'}", "sinks.loki.relabel_configs: rule 0 "
         "(replace to 'a.b'): not a Loki label name"),
    ],
)
def test_config_errors_name_the_rule(tmp_path: Path, rule: str, problem: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"sinks:\n  loki:\n    enabled: true\n    relabel_configs:\n      - {rule}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert any(p.startswith(problem.replace("Value error, ", "")) for p in err.value.problems), (
        err.value.problems)


def test_otlp_targets_may_hold_dots(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "sinks:\n  otlp:\n    enabled: true\n    relabel_configs:\n"
        "      - {source_labels: [__meta_docker_container_label_team], target_label: team.name}\n"
    )
    config = load_config(path, environ={})
    assert config.sinks.otlp.relabel_configs[0].target_label == "team.name"


def test_the_guard_admits_bound_values_then_refuses_new_ones_once_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    guard = CardinalityGuard("unit-guard", 2)
    assert guard.admit({"a": "1", "b": "x"}) == {"a": "1", "b": "x"}
    assert guard.admit({"a": "2", "b": "x"}) == {"a": "2", "b": "x"}
    assert guard.admit({"a": "3", "b": "x"}) == {"b": "x"}  # a's third value
    assert guard.admit({"a": "4", "b": "x"}) == {"b": "x"}
    assert guard.admit({"a": "1", "b": "x"}) == {"a": "1", "b": "x"}  # admitted before
    assert metric("log_capturer_label_values_refused_total", sink="unit-guard", label="a") == 2
    logged = [line for line in capsys.readouterr().out.splitlines()
              if "label_values_limit_reached" in line]
    assert len(logged) == 1 and "label=a" in logged[0] and "bound=2" in logged[0]
    assert CardinalityGuard("off", 0).admit({"a": "5"}) == {"a": "5"}


# -- the Loki sink's labels and metadata from rules ------------------------------------------


def encode(config: LokiSinkConfig, *containers: ContainerInfo, stream: str = "stdout"
           ) -> list[tuple[dict[str, str], tuple[tuple[str, str], ...]]]:
    encoder = Encoder(config, name="loki-unit")
    batches = [RecordBatch(c, [LogRecord(c, stream, 1000 + i, 1, "", f"line {i}")])
               for i, c in enumerate(containers)]
    streams = encoder.columns(batches)
    return [(streams.labels[streams.stream_of[i]], streams.meta[i]) for i in range(len(streams))]


def test_defaults_unchanged_without_rules() -> None:
    ((labels, meta),) = encode(LokiSinkConfig(host="h1"), WEB)
    assert labels == {"container_name": "shop-web-1", "compose_service": "web",
                      "stream": "stdout", "host": "h1"}
    assert meta == ()


TASK = ContainerInfo(
    id="c" * 64,
    name="shop_api.1.x2k9q0tq5pmw7c1vkflbxs7yv",  # <service>.<slot>.<task id>
    image="shop/api:2",
    labels={
        "com.docker.swarm.service.name": "shop_api",
        "com.docker.stack.namespace": "shop",
        "com.docker.swarm.task.id": "x2k9q0tq5pmw7c1vkflbxs7yv",
        "com.docker.swarm.task.name": "shop_api.1.x2k9q0tq5pmw7c1vkflbxs7yv",
        "com.docker.swarm.node.id": "n" * 25,
    },
    host="node-1",
)


def test_the_node_name_and_swarm_metadata_are_default_labels() -> None:
    """The host label is the node's name (the container's host, from the engine) unless
    the sink sets its own; a Swarm task gets its service and stack, never a task id; a
    container outside Swarm gets none of them."""
    web = ContainerInfo(WEB.id, WEB.name, WEB.image, WEB.labels, host="node-1")
    ((task_labels, _), (web_labels, _)) = encode(LokiSinkConfig(), TASK, web)
    assert task_labels == {"container_name": TASK.name, "swarm_service": "shop_api",
                           "swarm_stack": "shop", "stream": "stdout", "host": "node-1"}
    assert web_labels == {"container_name": "shop-web-1", "compose_service": "web",
                          "stream": "stdout", "host": "node-1"}
    ((labels, _),) = encode(LokiSinkConfig(host="h1"), TASK)
    assert labels["host"] == "h1"


def test_rules_see_the_swarm_defaults_and_the_node_name() -> None:
    """The swarm labels are defaults like the others: rules read and change them; the
    task name without its id is a stable container label."""
    config = LokiSinkConfig(relabel_configs=[
        {"source_labels": ["swarm_stack", "swarm_service"], "separator": "/",
         "target_label": "app"},
        {"source_labels": ["__meta_docker_container_label_com_docker_swarm_task_name"],
         "regex": r"(.+)\.[0-9a-z]{25}", "target_label": "container_name"},
        {"source_labels": ["__host__"], "target_label": "node"},
        {"action": "labeldrop", "regex": "swarm_.*"},
    ])
    ((labels, _),) = encode(config, TASK)
    assert labels == {"container_name": "shop_api.1", "app": "shop/shop_api",
                      "stream": "stdout", "host": "node-1", "node": "node-1"}


def test_loki_labels_and_metadata_from_container_labels() -> None:
    config = LokiSinkConfig(
        host="h1",
        labels=["container_name"],
        relabel_configs=[
            {"source_labels": ["__meta_docker_container_label_team"], "target_label": "team"},
        ],
        metadata_relabel_configs=[
            {"source_labels": ["__meta_docker_container_label_version"],
             "target_label": "version"},
        ],
        structured_metadata=["container_id", "truncated"],
    )
    ((labels, meta),) = encode(config, WEB)
    assert labels == {"container_name": "shop-web-1", "team": "payments"}
    assert dict(meta) == {"container_id": WEB.id, "version": "1.2.3"}


def test_a_drop_rule_keeps_a_containers_lines_from_this_sink_only() -> None:
    config = LokiSinkConfig(relabel_configs=[
        {"action": "drop", "source_labels": ["__meta_docker_container_label_team"],
         "regex": "payments"}])
    other = ContainerInfo(id="b" * 64, name="api-1", image="api:1")
    before = metric("log_capturer_sink_records_total", sink="loki-unit", status="relabel_dropped")
    out = encode(config, WEB, other)
    assert [labels["container_name"] for labels, _ in out] == ["api-1"]
    assert metric("log_capturer_sink_records_total", sink="loki-unit",
                  status="relabel_dropped") == before + 1


def test_rules_that_leave_no_label_fall_back_to_the_stream() -> None:
    config = LokiSinkConfig(relabel_configs=[{"action": "labeldrop", "regex": ".*"}])
    ((labels, _),) = encode(config, WEB, stream="stderr")
    assert labels == {"stream": "stderr"}


def test_the_guard_on_loki_labels_sends_new_values_without_the_label() -> None:
    config = LokiSinkConfig(host="h1", labels=["container_name", "stream"], max_label_values=2)
    containers = [ContainerInfo(id=f"{i:064x}", name=f"job-{i}", image="x") for i in range(4)]
    out = encode(config, *containers)
    assert [labels for labels, _ in out] == [
        {"container_name": "job-0", "stream": "stdout"},
        {"container_name": "job-1", "stream": "stdout"},
        {"stream": "stdout"},
        {"stream": "stdout"},
    ]


# -- the README's Promtail migration example ---------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def migration_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Coming from Promtail", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)


def test_the_readme_migration_example_loads_and_labels_as_promtail_does(tmp_path: Path) -> None:
    promtail, loki, otlp = migration_blocks()
    assert "relabel_configs" in promtail
    path = tmp_path / "c.yaml"
    path.write_text(loki)
    config = load_config(path, environ={})
    assert config.container_monitor.include_labels == {"logging": "on"}
    assert config.pipeline.stages.multiline.enabled
    assert re.search(config.pipeline.stages.multiline.start_pattern, "2026-01-02 x")
    ((labels, meta),) = encode(config.sinks.loki, WEB)
    assert labels == {"container": "shop-web-1", "stream": "stdout", "project": "shop"}
    assert dict(meta) == {"version": "1.2.3"}
    path.write_text(otlp)
    assert load_config(path, environ={}).sinks.otlp.relabel_configs[1].regex == r"container\.id"


def test_rule_made_names_loki_cannot_take_are_sanitized_and_cut_to_its_limit() -> None:
    many = ContainerInfo(id="f" * 64, name="many", image="x",
                         labels={f"k{i:02d}": "v" for i in range(20)} | {"1bad.name": "x"})
    config = LokiSinkConfig(labels=[], relabel_configs=[
        {"action": "labelmap", "regex": "__meta_docker_container_label_(.+)",
         "replacement": "$1"}])
    ((labels, _),) = encode(config, many)
    assert len(labels) == 15  # Loki's max_label_names_per_series: it would refuse the stream
    assert "_1bad_name" in labels  # a name Loki cannot parse would refuse the whole push
    assert all(re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) for name in labels)
