"""``sinks.loki:`` config section, and the limits of a default Loki it is checked against."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ...config.types import ByteSize, Duration, Section

PUSH_PATH = "/loki/api/v1/push"
LOKI_MAX_LABELS = 15  # Loki's default max_label_names_per_series
LOKI_MAX_LINE_BYTES = 262_144  # Loki's default max_line_size (bytes of the line)
LOKI_MAX_BODY_BYTES = 4 * 1024 * 1024  # decoded push bodies above this fail with a 500
LOKI_MAX_LABEL_VALUE = 2048  # Loki's default max_label_value_length

LABEL_SOURCES = ("container_name", "compose_service", "compose_project", "stream", "host")
"""Record attributes that may become stream labels: all of them low-cardinality."""

METADATA_SOURCES = (
    "container_id",
    "container_name",
    "image",
    "compose_service",
    "compose_project",
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
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# -- configuration -------------------------------------------------------------------------


def sanitize_label_name(name: str) -> str:
    """A valid Loki label name: invalid characters become ``_``, a leading digit gets ``_``."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


class LokiSinkConfig(Section):
    enabled: bool = Field(False, description="Push records to Grafana Loki.")
    url: str = Field(
        "http://localhost:3100",
        description="Loki base URL (http or https, no credentials); pushes go to "
        "{url}/loki/api/v1/push.",
    )
    tenant_id: str | None = Field(None, description="Sent as X-Scope-OrgID (multi-tenant Loki).")
    username: str | None = Field(
        None, description="Basic auth user; the password comes from password_env or password_file."
    )
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the basic auth password."
    )
    password_file: str | None = Field(None, description="File holding the basic auth password.")
    bearer_token_env: str | None = Field(
        None, description="Name of the environment variable holding a bearer token."
    )
    bearer_token_file: str | None = Field(None, description="File holding a bearer token.")
    ca_file: str | None = Field(None, description="CA bundle for https; default: system CAs.")
    labels: list[str] = Field(
        default_factory=lambda: ["container_name", "compose_service", "stream", "host"],
        description="Stream labels, from: " + ", ".join(LABEL_SOURCES) + ". A label whose "
        "value is missing is left out. Keep this set small: every combination is a stream.",
    )
    static_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra fixed labels on every stream (names are sanitized).",
    )
    host: str = Field("", description="Value of the host label; empty = this machine's hostname.")
    line_format: Literal["message", "json"] = Field(
        "message", description="message: the log line as is; json: the full record as JSON."
    )
    structured_metadata: list[str] = Field(
        default_factory=lambda: ["container_id", "image", "compose_project", "truncated"],
        description="Per-entry structured metadata, from: "
        + ", ".join(METADATA_SOURCES)
        + ". Empty for Loki before 2.9 or with structured metadata disabled.",
    )
    max_line_bytes: ByteSize = Field(
        LOKI_MAX_LINE_BYTES,
        description="Longer lines are cut (and marked truncated) instead of being rejected "
        "by Loki; 0 = never cut.",
    )
    max_request_bytes: ByteSize = Field(
        1024 * 1024,
        description="Largest uncompressed push body; bigger batches are split (Loki's limit "
        "is 4MiB). A single larger entry is sent alone.",
    )
    timeout: Duration = Field(10.0, description="Read timeout of one push request.")
    connect_timeout: Duration = Field(3.0, description="Connect timeout of one push request.")
    min_backoff: Duration = Field(0.5, description="First wait before retrying a failed push.")
    max_backoff: Duration = Field(30.0, description="Longest wait between retries.")
    retry_budget: Duration = Field(
        5.0,
        description="How long a batch is retried before it goes to the spool (or, without "
        "a spool, before the dispatcher is told to retry).",
    )
    spool_dir: str = Field("./data/spool/loki", description="Directory of the disk spool.")
    spool_max_bytes: ByteSize = Field(
        1024**3,
        description="Disk spool bound; a full spool makes the sink push back. 0 = no spool.",
    )
    dead_letter_path: str = Field(
        "./data/loki-dead-letter.jsonl",
        description="JSON-lines file of the entries Loki rejected, with its reason.",
    )
    close_timeout: Duration = Field(5.0, description="At shutdown, longest wait for the replayer.")

    @field_validator(
        "tenant_id",
        "username",
        "password_env",
        "password_file",
        "bearer_token_env",
        "bearer_token_file",
        "ca_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
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
        if not (ALWAYS_PRESENT & set(self.labels)) and not self.static_labels:
            raise ValueError(
                "labels need one of container_name, stream or host (or a static "
                "label): Loki rejects a stream without labels"
            )
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("password_env/password_file need username")
        if self.username and bool(self.password_env) == bool(self.password_file):
            raise ValueError("username needs exactly one of password_env or password_file")
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("set bearer_token_env or bearer_token_file, not both")
        if self.username and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("use basic auth (username) or a bearer token, not both")
        if not 1024 <= self.max_request_bytes <= LOKI_MAX_BODY_BYTES:
            raise ValueError(
                f"max_request_bytes must be between 1KiB and 4MiB (got {self.max_request_bytes})"
            )
        if self.spool_max_bytes and self.spool_max_bytes < 2 * self.max_request_bytes:
            raise ValueError(
                "spool_max_bytes must be 0 (no spool) or at least twice max_request_bytes"
            )
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff is larger than max_backoff")
        return self
