"""Configuration: durations, sizes, key-path errors, environment overrides, CLI exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from log_capturer.config.loader import ConfigError, load_config
from log_capturer.config.types import parse_byte_size, parse_duration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("0", 0), (2, 2.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["30x", "s", "", "-1s", "1 h", True, [1], -3])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("text", "size"),
    [("16KiB", 16384), ("1MiB", 1048576), ("10MB", 10**7), (512, 512), ("1GiB", 1024**3)],
)
def test_sizes(text: object, size: int) -> None:
    assert parse_byte_size(text) == size


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config.yaml", environ={})
    assert config.docker.pool.max_open == 64
    assert config.container_monitor.stream_window == 30
    assert config.sinks.file.enabled


def test_errors_name_every_bad_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
docker:
  pool:
    max_open: lots
    wait_timeout: soon
  socket: /x
container_monitor:
  start_from: yesterday
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    problems = "\n".join(info.value.problems)
    assert "docker.pool.max_open:" in problems and "'lots'" in problems
    assert "docker.pool.wait_timeout: invalid duration 'soon'" in problems
    assert "docker.socket: unknown key" in problems
    assert "container_monitor.start_from:" in problems


def test_cross_field_rules(tmp_path: Path) -> None:
    path = write(tmp_path, "docker: {pool: {max_open: 2, max_idle: 5}}\n")
    with pytest.raises(ConfigError, match=r"docker\.pool: max_idle \(5\) must not exceed max_open"):
        load_config(path, environ={})
    path = write(tmp_path, "sinks: {file: {enabled: false}}\n")
    with pytest.raises(ConfigError, match="no sink is enabled"):
        load_config(path, environ={})


def test_environment_overrides_any_key(tmp_path: Path) -> None:
    path = write(tmp_path, "docker: {pool: {max_open: 10, max_idle: 2}}\n")
    config = load_config(
        path,
        environ={
            "LOG_CAPTURER__DOCKER__POOL__MAX_OPEN": "32",
            "LOG_CAPTURER__CONTAINER_MONITOR__STREAM_WINDOW": "5s",
            "LOG_CAPTURER__CONTAINER_MONITOR__INCLUDE_LABELS": "{app: web}",
            "LOG_CAPTURER__SINKS__STDOUT__ENABLED": "true",
            "UNRELATED": "x",
        },
    )
    assert config.docker.pool.max_open == 32
    assert config.container_monitor.stream_window == 5
    assert config.container_monitor.include_labels == {"app": "web"}
    assert config.sinks.stdout.enabled
    with pytest.raises(ConfigError, match=r"docker\.pool\.max_opne: unknown key"):
        load_config(path, environ={"LOG_CAPTURER__DOCKER__POOL__MAX_OPNE": "3"})


def test_yaml_and_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "docker: [unclosed\n"), environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "log_capturer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_cli_exits_2_on_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    path = write(tmp_path, "server: {listen: nowhere}\n")
    for command in ("run", "check-config"):
        result = run_cli(command, "-c", str(path))
        assert result.returncode == 2
        assert "server.listen: expected host:port, got 'nowhere'" in result.stderr
        assert result.stdout == ""


def test_cli_check_config_prints_the_effective_config() -> None:
    result = run_cli("check-config", "-c", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "max_open: 64" in result.stdout
