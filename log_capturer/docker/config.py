"""``docker:`` config section: where the engine is and how the shared connection pool is bounded."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..config.types import Duration, Section


class PoolConfig(Section):
    """Bounds of the one pool every request and stream shares (see DockerConnectionPool)."""

    max_open: int = Field(64, ge=1, description="Hard cap on connections: streams and API calls.")
    max_idle: int = Field(16, ge=0, description="Idle connections kept for reuse; more are closed.")
    max_lifetime: Duration = Field(3600.0, description="Close a connection this old; 0 = never.")
    max_idle_time: Duration = Field(
        300.0, description="Close a connection idle this long; 0 = never."
    )
    wait_timeout: Duration = Field(
        10.0, description="How long a caller waits for a free connection."
    )
    health_check_interval: Duration = Field(
        30.0, description="How often idle connections are checked with GET /_ping; 0 = never."
    )

    @model_validator(mode="after")
    def _idle_within_open(self) -> PoolConfig:
        if self.max_idle > self.max_open:
            raise ValueError(
                f"max_idle ({self.max_idle}) must not exceed max_open ({self.max_open})"
            )
        return self


class RetryConfig(Section):
    """Retries of transient API errors (engine restarting, 5xx): capped exponential backoff."""

    attempts: int = Field(5, ge=1, description="Tries per call, the first included.")
    initial_backoff: Duration = Field(0.2, description="First wait between tries.")
    max_backoff: Duration = Field(5.0, description="Longest wait between tries.")


class TlsConfig(Section):
    """TLS towards an engine on ``tcp://`` (ignored for a unix socket)."""

    enabled: bool | None = Field(
        None,
        description="Speak TLS to a tcp:// engine. Unset: on when verify is on, any file "
        "below is set, or DOCKER_TLS is set (not empty).",
    )
    verify: bool | None = Field(
        None,
        description="Check the engine's certificate against ca_file and its name against the "
        "host. Unset: on when DOCKER_TLS_VERIFY is set (not empty), as the docker CLI reads "
        "it. Off: TLS without any check of the engine (only for a client certificate).",
    )
    ca_file: str | None = Field(
        None,
        description="The CA that signed the engine's certificate (PEM). Unset: "
        "$DOCKER_CERT_PATH/ca.pem (DOCKER_CERT_PATH defaults to ~/.docker) if it exists, "
        "else the system's CAs.",
    )
    cert_file: str | None = Field(
        None,
        description="Client certificate the engine checks (PEM; its --tlsverify). Unset: "
        "$DOCKER_CERT_PATH/cert.pem if it exists. Files are read again when they change.",
    )
    key_file: str | None = Field(
        None, description="The client certificate's key (PEM). Unset: $DOCKER_CERT_PATH/key.pem."
    )


class DockerConfig(Section):
    host: str | None = Field(
        None,
        description="The engine's address: unix:///path/to/socket or tcp://host:port (port "
        "2376 with TLS, 2375 without, when left out). Where the engine is, first match wins: "
        "this key; socket_path; the DOCKER_HOST environment variable (as the docker CLI "
        "reads it); unix:///var/run/docker.sock.",
    )
    socket_path: str | None = Field(
        None,
        description="The engine's unix socket: the older spelling of host: "
        "unix://SOCKET_PATH. Set one of the two.",
    )
    tls: TlsConfig = Field(
        default_factory=TlsConfig,
        description="TLS towards a tcp:// engine; each key unset falls back to the docker "
        "CLI's environment variables (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH).",
    )
    timeout: Duration = Field(30.0, description="Timeout of non-streaming API calls.")
    api_version: str = Field("auto", description="Engine API version, or 'auto' to negotiate.")
    pool: PoolConfig = Field(
        default_factory=PoolConfig,
        description="The one bounded pool of connections to the socket, shared by every API "
        "call and log stream (modelled on Go's database/sql).",
    )
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="Retries of transient API errors (engine restarting, 5xx), with capped "
        "exponential backoff.",
    )

    @model_validator(mode="after")
    def _one_address(self) -> DockerConfig:
        if self.host and self.socket_path:
            raise ValueError(
                "set docker.host or docker.socket_path, not both "
                "(socket_path: X is host: unix://X)"
            )
        if self.host and not self.host.startswith(("unix://", "tcp://")):
            raise ValueError(
                f"docker.host {self.host!r}: expected unix:///path or tcp://host:port"
            )
        return self
