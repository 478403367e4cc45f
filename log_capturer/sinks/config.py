"""``sinks:`` config section: one sub-section per sink, each defined beside its sink."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..config.types import Section
from .base import Sink
from .file import FileSink, FileSinkConfig
from .loki import LokiSink, LokiSinkConfig
from .otlp import OtlpSink, OtlpSinkConfig
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


def build_sinks(config: SinksConfig) -> list[Sink]:
    """The enabled sinks, in a fixed order."""
    sinks: list[Sink] = []
    if config.file.enabled:
        sinks.append(FileSink(config.file))
    if config.stdout.enabled:
        sinks.append(StdoutSink(config.stdout))
    if config.loki.enabled:
        sinks.append(LokiSink(config.loki))
    if config.otlp.enabled:
        sinks.append(OtlpSink(config.otlp))
    return sinks
