"""``sinks.loki:`` config section, and the limits of a default Loki it is checked against."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator

from ...config.types import ByteSize
from ..network.config import NetworkSinkConfig, dead_letter_field, spool_dir_field
from ..network.loki_format import (
    LABEL_NAME,
    LOKI_MAX_LABELS,
    LOKI_MAX_LINE_BYTES,
    MAX_BATCH_BYTES,
    sanitize_label_name,
)
from ..network.relabel import RelabelRule, check_rules, relabel_field

PUSH_PATH = "/loki/api/v1/push"

LABEL_SOURCES = (
    "container_name",
    "compose_service",
    "compose_project",
    "swarm_service",
    "swarm_stack",
    "stream",
    "host",
)
"""Record attributes that may become stream labels: all of them low-cardinality."""

METADATA_SOURCES = (
    "container_id",
    "container_name",
    "image",
    "compose_service",
    "compose_project",
    "swarm_service",
    "swarm_stack",
    "stream",
    "host",
    "truncated",
)
"""Record attributes that may be sent as structured metadata (``truncated`` = "true" if cut)."""

HIGH_CARDINALITY = {
    "container_id": "the container id",
    "image": "the image",
    "message": "the message",
    "ts": "the timestamp",
}
ALWAYS_PRESENT = {"container_name", "stream", "host"}

# -- configuration -------------------------------------------------------------------------


class LokiSinkConfig(NetworkSinkConfig):
    """Loki's push API. Loki itself adds a ``service_name`` label to every stream (from
    ``container_name``, or ``service``/``app``/``job``-like labels; Loki's
    ``discover_service_name``) and a ``detected_level`` structured metadata field to every
    entry (``discover_log_levels``); queries show both beside what is sent here."""

    url: str = Field(
        "http://localhost:3100",
        description="Loki base URL (http or https, no credentials); pushes go to "
        "{url}/loki/api/v1/push.",
    )
    tenant_id: str | None = Field(None, description="Sent as X-Scope-OrgID (multi-tenant Loki).")
    labels: list[str] = Field(
        default_factory=lambda: [
            "container_name", "compose_service", "swarm_service", "swarm_stack", "stream", "host"
        ],
        description="Stream labels, from: " + ", ".join(LABEL_SOURCES) + ". compose_* and "
        "swarm_* come from the container's labels com.docker.compose.service/project, "
        "com.docker.swarm.service.name (a Swarm task's service, <stack>_<service> in a stack) "
        "and com.docker.stack.namespace (its stack); host is host.name (or this sink's host). "
        "A label whose value is missing is left out (a container outside Swarm has no "
        "swarm_*). Keep this set small: every combination is a stream. "
        "Loki adds service_name (from container_name) and counts its max_label_names_per_"
        "series (15) before adding it.",
    )
    static_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra fixed labels on every stream (names are sanitized).",
    )
    host: str = Field(
        "", description="The host label (and __host__) for this sink; empty = host.name."
    )
    line_format: Literal["message", "json"] = Field(
        "message", description="message: the log line as is; json: the full record as JSON."
    )
    encoding: Literal["protobuf", "json"] = Field(
        "protobuf",
        description="protobuf: Loki's native push encoding, protobuf + snappy, as Promtail "
        "sends it (least CPU on both sides); json: JSON + gzip (smaller on the wire, for "
        "proxies that must read the body).",
    )
    structured_metadata: list[str] = Field(
        default_factory=lambda: ["truncated"],
        description="Per-entry structured metadata (Loki >= 2.9), from: "
        + ", ".join(METADATA_SOURCES)
        + ". truncated is sent (as \"true\") only on lines that were cut. The others repeat "
        "the same value on every line of a stream, and Loki counts them against its "
        "ingestion rate limit (4 MiB/s by default) and stores them per line: the 64-character "
        "container_id alone can outweigh short log lines, so container_id and image are "
        "opt-in; the container_name label already tells containers apart. Loki adds its own "
        "detected_level field. Empty for a Loki with structured metadata disabled (the sink "
        "also stops sending it when Loki answers that it is disallowed).",
    )
    relabel_configs: list[RelabelRule] = relabel_field(
        "each stream's labels (labels and static_labels are where they start). A keep or "
        "drop rule that drops a stream keeps its lines from this sink only (counted in "
        "log_capturer_sink_records_total{status=\"relabel_dropped\"}). A stream left without "
        "a label gets stream=<stdout|stderr|tty> (Loki refuses a stream without labels)"
    )
    metadata_relabel_configs: list[RelabelRule] = relabel_field(
        "each stream's structured metadata (structured_metadata, but truncated, is where it "
        "starts); truncated is still added to the lines that were cut"
    )
    max_label_values: int = Field(
        1000,
        ge=0,
        description="Cardinality guard: a label that already has this many distinct values "
        "(since start) gets no new one; streams with a new value are sent without that "
        "label (their lines are delivered), logged once per label "
        "(label_values_limit_reached) and counted in "
        "log_capturer_label_values_refused_total. 0 = no bound.",
    )
    max_line_bytes: ByteSize = Field(
        LOKI_MAX_LINE_BYTES,
        description="Longer lines are cut (and marked truncated) instead of being rejected "
        "by Loki (its max_line_size); 0 = never cut.",
    )
    batch_bytes: ByteSize = Field(
        1024 * 1024,
        validation_alias=AliasChoices("batch_bytes", "max_request_bytes"),
        description="Push size: this many bytes of lines and structured metadata before "
        "compression, counted as Promtail's batchsize (1MiB) and Loki's ingestion rate limit "
        "count them; what one delivery leaves over goes into the next push (batch_wait). "
        "At most 3MiB, and a push of tiny lines is cut before 3MiB with its framing (Loki "
        "refuses decoded pushes over 4MiB). Formerly max_request_bytes.",
    )
    spool_dir: str = spool_dir_field("./data/spool/loki")
    dead_letter_path: str = dead_letter_field("./data/loki-dead-letter.jsonl")

    @field_validator("tenant_id", mode="before")
    @classmethod
    def _empty_tenant_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials: use username and password_env")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        path = parts.path.rstrip("/").removesuffix(PUSH_PATH)
        return f"{parts.scheme}://{parts.netloc}{path}"

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: list[str]) -> list[str]:
        for name in value:
            if name in HIGH_CARDINALITY:
                raise ValueError(
                    f"{name}: {HIGH_CARDINALITY[name]} must not be a label "
                    "(too many streams); send it as structured metadata"
                )
            if name not in LABEL_SOURCES:
                raise ValueError(f"unknown label {name!r}; choose from {', '.join(LABEL_SOURCES)}")
        if len(set(value)) != len(value):
            raise ValueError("a label is listed twice")
        return value

    @field_validator("structured_metadata")
    @classmethod
    def _check_metadata(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in METADATA_SOURCES:
                raise ValueError(
                    f"unknown structured metadata {name!r}; choose from "
                    f"{', '.join(METADATA_SOURCES)}"
                )
        if len(set(value)) != len(value):
            raise ValueError("a field is listed twice")
        return value

    @field_validator("relabel_configs")
    @classmethod
    def _check_relabel(cls, value: list[RelabelRule]) -> list[RelabelRule]:
        def why(name: str) -> str | None:
            if LABEL_NAME.match(name):
                return None
            return "not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*)"

        check_rules(value, why)
        return value

    @field_validator("static_labels")
    @classmethod
    def _check_static_labels(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, label_value in value.items():
            clean = sanitize_label_name(name)
            if clean in out:
                raise ValueError(f"{name!r} and another label both become {clean!r}")
            if not label_value:
                raise ValueError(f"{name!r}: empty value (Loki drops empty labels)")
            out[clean] = label_value
        return out

    @model_validator(mode="after")
    def _check_combination(self) -> LokiSinkConfig:
        clash = set(self.labels) & set(self.static_labels)
        if clash:
            raise ValueError(f"static_labels repeat record labels: {', '.join(sorted(clash))}")
        total = len(self.labels) + len(self.static_labels)
        if total > LOKI_MAX_LABELS:
            raise ValueError(f"{total} labels; Loki accepts at most {LOKI_MAX_LABELS} per stream")
        if (not (ALWAYS_PRESENT & set(self.labels)) and not self.static_labels
                and not self.relabel_configs):
            raise ValueError(
                "labels need one of container_name, stream or host (or a static "
                "label): Loki rejects a stream without labels"
            )
        if not 1024 <= self.batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_bytes must be between 1KiB and 3MiB (got {self.batch_bytes})")
        if self.spool_max_bytes and self.spool_max_bytes < 2 * self.batch_bytes:
            raise ValueError("spool_max_bytes must be 0 (no spool) or at least twice batch_bytes")
        return self
