"""The settings every network sink shares: credentials, TLS, timeouts, retries, spool, dead letters.

A network sink's section (``sinks.loki``, ``sinks.otlp``) subclasses
:class:`NetworkSinkConfig` and adds what is its own (URL, labels, encoding). Fields whose
default names the sink (``spool_dir``, ``dead_letter_path``) are declared by the subclass
with :func:`spool_dir_field` and :func:`dead_letter_field`, so their description is
written once, here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from ...config.types import ByteSize, Duration, Section

_SPOOL_DIR = (
    "Directory of the disk spool: the encoded requests the server could not take within "
    "retry_budget, replayed in order when it is back (they survive restarts)."
)
_DEAD_LETTER = (
    "JSON-lines file of the entries the server refused for good, each with the server's "
    "reason (fsynced before the batch counts as delivered)."
)


def spool_dir_field(default: str) -> Any:
    return Field(default, description=_SPOOL_DIR)


def dead_letter_field(default: str) -> Any:
    return Field(default, description=_DEAD_LETTER)


class NetworkSinkConfig(Section):
    enabled: bool = Field(False, description="Send records to this sink.")
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
    headers_env: str | None = Field(
        None,
        description="Name of the environment variable holding extra request headers (API "
        "keys, a tenant header), as OpenTelemetry's OTEL_EXPORTER_OTLP_HEADERS writes them: "
        "name=value pairs separated by commas, values percent-encoded (api-key=s3cr%3Dt). "
        "Read once at start; never logged.",
    )
    headers_file: str | None = Field(
        None,
        description="File holding extra request headers, as headers_env (pairs separated by "
        "commas or newlines).",
    )
    ca_file: str | None = Field(None, description="CA bundle for https; default: system CAs.")
    timeout: Duration = Field(10.0, description="Read timeout of one request.")
    connect_timeout: Duration = Field(3.0, description="Connect timeout of one request.")
    min_backoff: Duration = Field(0.5, description="First wait before retrying a failed request.")
    max_backoff: Duration = Field(30.0, description="Longest wait between retries.")
    retry_budget: Duration = Field(
        5.0,
        description="How long a batch is retried (connection errors, timeouts, 408, 429, 5xx) "
        "before it goes to the spool (or, without a spool, before the dispatcher is told to "
        "retry).",
    )
    spool_max_bytes: ByteSize = Field(
        1024**3,
        description="Disk spool bound; a full spool makes the sink push back. 0 = no spool.",
    )
    batch_wait: Duration = Field(
        0.2,
        description="Longest wait for more lines to fill a request of batch_bytes (Promtail's "
        "batchwait, 1s there): what is left of a delivery waits this long for the next "
        "before it is sent as it is.",
    )
    close_timeout: Duration = Field(
        5.0, description="At shutdown, longest wait for the request in flight and the replayer."
    )

    @field_validator(
        "username",
        "password_env",
        "password_file",
        "bearer_token_env",
        "bearer_token_file",
        "headers_env",
        "headers_file",
        "ca_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_network(self) -> NetworkSinkConfig:
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("password_env/password_file need username")
        if self.username and bool(self.password_env) == bool(self.password_file):
            raise ValueError("username needs exactly one of password_env or password_file")
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("set bearer_token_env or bearer_token_file, not both")
        if self.headers_env and self.headers_file:
            raise ValueError("set headers_env or headers_file, not both")
        if self.username and (self.bearer_token_env or self.bearer_token_file):
            raise ValueError("use basic auth (username) or a bearer token, not both")
        if self.min_backoff > self.max_backoff:
            raise ValueError("min_backoff is larger than max_backoff")
        return self
