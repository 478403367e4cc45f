"""``pipeline:`` config section: the bounded queue between monitors and sinks, and batching."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.types import ByteSize, Duration, Section
from .stages.config import StagesConfig


class PipelineConfig(Section):
    queue_records: int = Field(10000, ge=1, description="Queue bound in records.")
    queue_bytes: ByteSize = Field(
        64 * 1024 * 1024, description="Queue bound in message bytes (one record always fits)."
    )
    batch_size: int = Field(500, ge=1, description="Most records handed to the sinks at once.")
    batch_wait: Duration = Field(0.2, description="Longest wait to fill a batch.")
    when_full: Literal["block", "drop_newest"] = Field(
        "block",
        description="block: monitors wait (backpressure, nothing lost); "
        "drop_newest: the new record is dropped and counted.",
    )
    drain_timeout: Duration = Field(
        10.0, description="At shutdown, longest time to deliver what is queued."
    )
    stages: StagesConfig = Field(
        default_factory=StagesConfig,
        description="Multiline merge, JSON parsing and redaction, in that order (all off).",
    )
