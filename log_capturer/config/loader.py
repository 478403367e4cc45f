"""Loading the whole configuration: one section per part, each defined beside its code.

Every key is documented once, by the ``Field`` description of the model that defines it;
``log-capturer config-reference`` (config/reference.py) prints them all with their
defaults. The rule for environment overrides is :data:`ENV_OVERRIDES`, below; the
reference prints it in its header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from ..discovery.node import HostConfig
from ..docker.config import DockerConfig
from ..logging_setup import LoggingConfig
from ..monitor.config import MonitorConfig
from ..pipeline.config import PipelineConfig
from ..positions.store import PositionsConfig
from ..server.http import ServerConfig
from ..sinks.config import SinksConfig
from .types import Section

ENV_PREFIX = "LOG_CAPTURER__"

ENV_OVERRIDES = f"""\
Any key can be overridden from the environment: {ENV_PREFIX} followed by the key path in
upper case with __ between levels, the value written as in YAML. The environment wins
over the file. For example:
  {ENV_PREFIX}DOCKER__POOL__MAX_OPEN=32
  {ENV_PREFIX}CONTAINER_MONITOR__STREAM_WINDOW=5s
  {ENV_PREFIX}CONTAINER_MONITOR__INCLUDE_LABELS='{{app: web}}'
"""
"""The environment override rule, stated once (the reference prints it in its header)."""


class Config(Section):
    docker: DockerConfig = Field(
        default_factory=DockerConfig,
        description="The Docker engine: where it is, the one connection pool every request "
        "and log stream shares, and retries of transient API errors.",
    )
    host: HostConfig = Field(
        default_factory=HostConfig,
        description="The node this daemon runs on: the name its records carry.",
    )
    container_monitor: MonitorConfig = Field(
        default_factory=MonitorConfig,
        description="Which containers and streams are captured, and how their log streams "
        "are read: windows, resume, taking turns on connections.",
    )
    positions: PositionsConfig = Field(
        default_factory=PositionsConfig,
        description="Where capture resumes after a restart: per container and stream, the "
        "last line every sink accepted.",
    )
    pipeline: PipelineConfig = Field(
        default_factory=PipelineConfig,
        description="The bounded queue between the monitors and the sinks, batching, and "
        "the optional processing stages.",
    )
    sinks: SinksConfig = Field(
        default_factory=SinksConfig,
        description="Where records go; at least one sink must be enabled. Positions advance "
        "only past what every enabled sink accepted.",
    )
    server: ServerConfig = Field(
        default_factory=ServerConfig,
        description="The HTTP server: /metrics (Prometheus), /health and /ready.",
    )
    logging: LoggingConfig = Field(
        default_factory=LoggingConfig, description="The daemon's own log, on stderr."
    )


class ConfigError(Exception):
    """The configuration cannot be used; each problem names its key path."""

    def __init__(self, problems: list[str], source: str) -> None:
        self.problems = problems
        super().__init__(f"invalid configuration ({source}):\n  " + "\n  ".join(problems))


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate. Raises :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    source = str(path) if path is not None else "defaults"
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"cannot read config file: {exc.strerror or exc}"], source) from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"not valid YAML: {exc}"], source) from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(["the top level must be a mapping of sections"], source)
    data = apply_env_overrides(data, environ, source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), source) from exc


def apply_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str], source: str
) -> dict[str, Any]:
    """Apply :data:`ENV_OVERRIDES` to the file's data (in place); bad paths are errors."""
    problems = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            problems.append(f"{name}: empty key in environment override")
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"{'.'.join(path)} (from {name}): {part} is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems, source)
    return data


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
            continue
        message = error["msg"].removeprefix("Value error, ")
        if "input" in error and error["type"] not in ("value_error", "missing"):
            message += f" (got {error['input']!r})"
        problems.append(f"{key}: {message}")
    return problems
