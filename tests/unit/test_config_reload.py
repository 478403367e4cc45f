"""The config diff of a reload (config/reload.py): which keys changed, which apply in
place, which need a restart, and the config the daemon goes on with."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog

from log_capturer.config.loader import Config
from log_capturer.config.reference import render_reference
from log_capturer.config.reload import (
    LIVE_KEYS,
    RELOAD_RULE,
    changed_keys,
    is_live,
    plan_reload,
    split_problems,
)
from log_capturer.logging_setup import LoggingConfig, configure_logging, set_level
from log_capturer_testkit.daemon import deep_merge

BASE: dict[str, Any] = {
    "container_monitor": {"include_labels": {"app": "web"}},
    "sinks": {"file": {"path": "/data/logs.jsonl"}},
}


def config(**sections: Any) -> Config:
    return Config.model_validate(deep_merge(BASE, sections))


def test_the_same_config_changes_nothing() -> None:
    plan = plan_reload(config(), config())
    assert (plan.live, plan.restart, plan.changed) == ((), (), False)
    assert plan.effective == config()


def test_changed_keys_are_leaf_paths_mappings_key_by_key_lists_whole() -> None:
    new = config(
        container_monitor={"include_labels": {"team": "a"}, "exclude_names": ["db-*"]},
        sinks={"loki": {"enabled": True, "url": "http://loki:3100", "labels": ["stream"]}},
    )
    assert changed_keys(config(), new) == [
        "container_monitor.exclude_names",
        "container_monitor.include_labels.team",
        "sinks.loki.enabled",
        "sinks.loki.labels",
        "sinks.loki.url",
    ]


@pytest.mark.parametrize(
    ("key", "live"),
    [
        ("container_monitor.include_labels.app", True),
        ("container_monitor.exclude_images", True),
        ("container_monitor.stream_window", True),
        ("container_monitor.start_from", True),
        ("container_monitor.relist_interval", True),
        ("sinks.loki.relabel_configs", True),
        ("sinks.file.path", True),
        ("pipeline.stages.multiline.enabled", True),
        ("pipeline.batch_size", True),
        ("positions.flush_interval", True),
        ("logging.level", True),
        ("server.listen", False),
        ("docker.socket_path", False),
        ("docker.pool.max_open", False),
        ("positions.path", False),
        ("container_monitor.stdout", False),
        ("container_monitor.stderr", False),
        ("container_monitor.self_container_id", False),
        ("logging.format", False),
        ("node.name", False),  # a key nobody wired into the reload needs a restart
        ("sinksx.loki", False),  # a prefix matches whole path parts only
    ],
)
def test_which_keys_a_reload_applies(key: str, live: bool) -> None:
    assert is_live(key) is live


def test_restart_keys_keep_their_running_values_the_others_apply() -> None:
    running = config()
    loaded = config(
        server={"listen": "0.0.0.0:9000"},
        docker={"pool": {"max_open": 8, "max_idle": 4}},
        container_monitor={"stdout": False, "stream_window": "5s"},
        logging={"level": "debug", "format": "console"},
    )
    plan = plan_reload(running, loaded)
    assert plan.restart == (
        "container_monitor.stdout",
        "docker.pool.max_idle",
        "docker.pool.max_open",
        "logging.format",
        "server.listen",
    )
    assert plan.live == ("container_monitor.stream_window", "logging.level")
    effective = plan.effective
    assert effective.server.listen == running.server.listen
    assert effective.docker == running.docker
    assert effective.container_monitor.stdout is True
    assert effective.logging.format == "json"
    assert effective.container_monitor.stream_window == 5.0
    assert effective.logging.level == "debug"
    # Reloading the same file again: the restart keys are still named, nothing to apply.
    again = plan_reload(effective, loaded)
    assert (again.restart, again.live) == (plan.restart, ())


def test_a_plan_says_which_sinks_and_sections_it_touches() -> None:
    plan = plan_reload(
        config(),
        config(
            sinks={"stdout": {"enabled": True}, "file": {"max_files": 2}},
            pipeline={"stages": {"redact": {"enabled": True}}},
        ),
    )
    assert plan.sinks_changed() == ["file", "stdout"]
    assert plan.touches("pipeline.stages") and plan.touches("sinks")
    assert not plan.touches("container_monitor.include_labels", "logging.level")


def test_problems_are_split_into_key_and_message() -> None:
    assert split_problems(
        [
            "container_monitor.stream_window: invalid duration '5x' (use e.g. 500ms)",
            "not valid YAML: mapping values are not allowed here",
        ]
    ) == [
        {
            "key": "container_monitor.stream_window",
            "message": "invalid duration '5x' (use e.g. 500ms)",
        },
        {"key": "not valid YAML", "message": "mapping values are not allowed here"},
    ]


def test_the_reference_states_the_reload_rule_with_every_live_key() -> None:
    assert RELOAD_RULE.splitlines()[0] in render_reference()
    flat = " ".join(RELOAD_RULE.split())
    for key in LIVE_KEYS:
        assert key.removeprefix("container_monitor.") in flat, key


def test_a_new_level_reaches_loggers_already_bound(capsys: pytest.CaptureFixture[str]) -> None:
    """structlog caches a module's logger on first use: the level is read at each call."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(LoggingConfig(level="info"))
    log = structlog.get_logger("test_reload_level")
    try:
        log.debug("hidden")
        log.info("shown")
        set_level("debug")
        log.debug("now_shown")
        set_level("error")
        log.warning("hidden_again")
        log.error("still_shown")
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
    events = [json.loads(line)["event"] for line in capsys.readouterr().err.splitlines()]
    assert events == ["shown", "now_shown", "still_shown"]
