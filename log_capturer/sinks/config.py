"""``sinks:`` config section: one sub-section per sink, each defined beside its sink."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..config.types import Section
from .base import Sink
from .file import FileSink, FileSinkConfig
from .loki.config import LokiSinkConfig
from .otlp.config import OtlpSinkConfig
from .stdout import StdoutSink, StdoutSinkConfig


class SinksConfig(Section):
    file: FileSinkConfig = Field(
        default_factory=FileSinkConfig,
        description="A local JSON-lines file, one record per line, with size rotation. After "
        "a crash it recovers what it wrote past the last positions save.",
    )
    stdout: StdoutSinkConfig = Field(
        default_factory=StdoutSinkConfig, description="Records on standard output."
    )
    loki: LokiSinkConfig = Field(
        default_factory=LokiSinkConfig,
        description="Grafana Loki's push API. Batches Loki cannot take now go to a disk "
        "spool and are replayed in order; entries Loki refuses for good go to a dead-letter "
        "file. Secrets are never written in the config: name a variable or a file.",
    )
    otlp: OtlpSinkConfig = Field(
        default_factory=OtlpSinkConfig,
        description="OpenTelemetry's OTLP/HTTP logs export (Loki 3's /otlp endpoint, an "
        "OpenTelemetry Collector), with the same delivery as the Loki sink: retries, disk "
        "spool, dead letters. Secrets are never written in the config: name a variable or "
        "a file.",
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> SinksConfig:
        if not any(getattr(self, name).enabled for name in type(self).model_fields):
            raise ValueError("no sink is enabled: enable at least one of " +
                             ", ".join(type(self).model_fields))
        return self


SINK_NAMES = ("file", "stdout", "loki", "otlp")
"""The sinks in the order every delivery reaches them (each is a key of ``sinks:``)."""


def build_sink(name: str, config: SinksConfig) -> Sink:
    """The sink ``name`` (one of :data:`SINK_NAMES`) from its section of ``config``."""
    if name == "file":
        return FileSink(config.file)
    if name == "stdout":
        return StdoutSink(config.stdout)
    if name == "loki":  # the network sinks are imported when enabled (protobuf)
        from .loki.sink import LokiSink

        return LokiSink(config.loki)
    if name == "otlp":
        from .otlp.sink import OtlpSink

        return OtlpSink(config.otlp)
    raise ValueError(f"unknown sink {name!r}")


def enabled_sinks(config: SinksConfig) -> list[str]:
    """The names of the enabled sinks, in :data:`SINK_NAMES` order."""
    return [name for name in SINK_NAMES if getattr(config, name).enabled]


def build_sinks(config: SinksConfig) -> list[Sink]:
    """The enabled sinks, in a fixed order."""
    return [build_sink(name, config) for name in enabled_sinks(config)]
