"""``pipeline:`` config section: the bounded queue between monitors and sinks, and batching."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.types import ByteSize, Duration, Section
from .stages.config import StagesConfig


class PipelineConfig(Section):
    queue_records: int = Field(
        100_000,
        ge=1,
        description="Queue bound in lines. The queue holds a batch per socket read (up to "
        "thousands of lines); a batch always fits an empty queue.",
    )
    queue_bytes: ByteSize = Field(
        64 * 1024 * 1024, description="Queue bound in message bytes (a batch always fits an "
        "empty queue)."
    )
    batch_size: int = Field(
        10_000,
        ge=1,
        description="Lines handed to the sinks at once (whole batches: at least one, however "
        "large): one file write; the network sinks cut their pushes of batch_bytes across "
        "these deliveries.",
    )
    batch_wait: Duration = Field(
        0.2,
        description="Longest a queued line waits for others to make up batch_size (counted "
        "from when it was queued: a line queued while the sinks were busy goes with the next "
        "delivery).",
    )
    when_full: Literal["block", "drop_newest"] = Field(
        "block",
        description="block: monitors wait (backpressure, nothing lost); "
        "drop_newest: a batch that does not fit is dropped and its lines counted.",
    )
    drain_timeout: Duration = Field(
        10.0, description="At shutdown, longest time to deliver what is queued."
    )
    stages: StagesConfig = Field(
        default_factory=StagesConfig,
        description="Multiline merge, JSON parsing and redaction, in that order (all off).",
    )
