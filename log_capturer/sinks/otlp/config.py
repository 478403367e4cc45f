"""``sinks.otlp:`` config section: OTLP/HTTP logs export (Loki 3's /otlp, an OpenTelemetry
Collector, any OTLP backend)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ...config.types import ByteSize
from ..network.config import NetworkSinkConfig, dead_letter_field, spool_dir_field
from ..network.loki_format import LOKI_MAX_LINE_BYTES, MAX_BATCH_BYTES
from ..network.relabel import RelabelRule, check_rules, relabel_field

LOGS_PATH = "/v1/logs"

LOKI_INDEX_ATTRIBUTES = (
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
)
"""The resource attributes Loki 3.4 makes index labels by default (its otlp_config);
the others, and every log record attribute, become structured metadata."""

RESOURCE_ATTRIBUTES = (
    "container.id (the 64-hex id), container.name, container.image.name (the image as "
    "Docker reports it, with its tag), service.name (a Swarm task's service, else the "
    "compose service, else the container name), service.namespace (a Swarm task's stack) "
    "and host.name (host.name of the config, or host)"
)


def _attribute_name(name: str) -> str | None:
    if not name or name != name.strip():
        return "an attribute name must be non-empty, without surrounding spaces"
    return None


class OtlpSinkConfig(NetworkSinkConfig):
    """OTLP/HTTP logs export: one ResourceLogs per container (the OpenTelemetry semantic
    conventions for containers), one LogRecord per line: the Docker timestamp as
    time_unix_nano, the line as the body, log.iostream (stdout or stderr) as an attribute.

    Loki (3.x, ``{endpoint}`` = ``http://loki:3100/otlp``) makes the resource attributes of
    its ``otlp_config`` index labels (by default, of those sent here: service_name and
    container_name) and stores the other attributes as structured metadata (dots written
    ``_``: container_id, container_image_name, host_name, log_iostream)."""

    endpoint: str = Field(
        "http://localhost:4318",
        description="The OTLP/HTTP base URL, as OpenTelemetry exporters take it (http or "
        "https, no credentials): logs go to {endpoint}/v1/logs. Loki: http://loki:3100/otlp; "
        "an OpenTelemetry Collector: http://collector:4318.",
    )
    tenant_id: str | None = Field(
        None, description="Sent as X-Scope-OrgID (a multi-tenant Loki or Mimir-style gateway)."
    )
    encoding: Literal["protobuf", "json"] = Field(
        "protobuf",
        description="protobuf: binary OTLP (the default of OpenTelemetry exporters, least "
        "CPU); json: OTLP/JSON, for proxies that must read the body.",
    )
    compression: Literal["gzip", "none"] = Field(
        "gzip", description="Content-Encoding of the requests (and of spooled requests)."
    )
    host: str = Field(
        "", description="The host.name attribute (and __host__) for this sink; empty = host.name."
    )
    resource_attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Extra fixed resource attributes on every container's resource (for "
        "example deployment.environment: prod, which Loki makes a label).",
    )
    relabel_configs: list[RelabelRule] = relabel_field(
        "each container stream's resource attributes (" + RESOURCE_ATTRIBUTES + ", with "
        "resource_attributes, are where they start; target names may hold dots). A keep or "
        "drop rule that drops a stream keeps its lines from this sink only (counted in "
        "log_capturer_sink_records_total{status=\"relabel_dropped\"})"
    )
    metadata_relabel_configs: list[RelabelRule] = relabel_field(
        "each container stream's log record attributes (log.iostream is where they start); "
        "truncated: true is still added to the lines that were cut"
    )
    index_attributes: list[str] = Field(
        default_factory=lambda: list(LOKI_INDEX_ATTRIBUTES),
        description="Resource attributes the cardinality guard watches: those the backend "
        "makes index labels (the default is Loki 3.4's otlp_config default list). The "
        "others Loki stores on every line as structured metadata, so their bytes count "
        "towards each line's share of batch_bytes.",
    )
    max_label_values: int = Field(
        1000,
        ge=0,
        description="Cardinality guard: an index_attributes attribute that already has this "
        "many distinct values (since start) gets no new one; streams with a new value are "
        "sent without that attribute (their lines are delivered), logged once per attribute "
        "(label_values_limit_reached) and counted in log_capturer_label_values_refused_total. "
        "0 = no bound.",
    )
    max_line_bytes: ByteSize = Field(
        LOKI_MAX_LINE_BYTES,
        description="Longer lines are cut (and get the attribute truncated: true), since "
        "Loki refuses entries over its max_line_size; 0 = never cut.",
    )
    batch_bytes: ByteSize = Field(
        1024 * 1024,
        description="Request size: this many bytes of lines and per-record attributes "
        "before compression (as the Loki sink's batch_bytes); what one delivery leaves over "
        "goes into the next request (batch_wait). At most 3MiB (Loki refuses decoded "
        "pushes over 4MiB).",
    )
    spool_dir: str = spool_dir_field("./data/spool/otlp")
    dead_letter_path: str = dead_letter_field("./data/otlp-dead-letter.jsonl")

    @field_validator("tenant_id", mode="before")
    @classmethod
    def _empty_tenant_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials: use headers_env or password_env")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        path = parts.path.rstrip("/").removesuffix(LOGS_PATH)
        return f"{parts.scheme}://{parts.netloc}{path}"

    @field_validator("resource_attributes")
    @classmethod
    def _check_attributes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, attribute in value.items():
            why = _attribute_name(name)
            if why is not None:
                raise ValueError(f"{name!r}: {why}")
            if not attribute:
                raise ValueError(f"{name!r}: empty value")
        return value

    @field_validator("relabel_configs", "metadata_relabel_configs")
    @classmethod
    def _check_relabel(cls, value: list[RelabelRule]) -> list[RelabelRule]:
        check_rules(value, _attribute_name)
        return value

    @model_validator(mode="after")
    def _check_sizes(self) -> OtlpSinkConfig:
        if not 1024 <= self.batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_bytes must be between 1KiB and 3MiB (got {self.batch_bytes})")
        if self.spool_max_bytes and self.spool_max_bytes < 2 * self.batch_bytes:
            raise ValueError("spool_max_bytes must be 0 (no spool) or at least twice batch_bytes")
        return self
