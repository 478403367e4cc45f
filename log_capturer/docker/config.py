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


class DockerConfig(Section):
    socket_path: str = Field("/var/run/docker.sock", description="The engine's unix socket.")
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
