"""``container_monitor:`` config section: which containers, which streams, how windows run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.types import ByteSize, Duration, Section


class MonitorConfig(Section):
    stream_window: Duration = Field(
        30.0, gt=0, description="A log stream is closed and reopened after this long."
    )
    start_from: Literal["beginning", "now"] = Field(
        "beginning",
        description="Where to start a container already running when first seen; containers "
        "that start later are always read from their beginning.",
    )
    stdout: bool = Field(True, description="Capture stdout.")
    stderr: bool = Field(True, description="Capture stderr.")
    include_names: list[str] = Field(
        default_factory=list, description="Glob patterns on container names; empty = all."
    )
    exclude_names: list[str] = Field(default_factory=list, description="Glob patterns to skip.")
    include_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels that must all be present; value '' or '*' matches any value.",
    )
    exclude_labels: dict[str, str] = Field(
        default_factory=dict, description="A container with any of these labels is skipped."
    )
    include_images: list[str] = Field(
        default_factory=list, description="Glob patterns on image names; empty = all."
    )
    exclude_images: list[str] = Field(default_factory=list, description="Glob patterns to skip.")
    max_line_bytes: ByteSize = Field(
        1024 * 1024, description="Longer lines are cut to this and marked truncated."
    )
    self_container_id: str = Field(
        "", description="This daemon's own container id; found automatically when empty."
    )
    retry_initial_backoff: Duration = Field(0.5, description="First wait after a stream error.")
    retry_max_backoff: Duration = Field(30.0, description="Longest wait after stream errors.")
    relist_interval: Duration = Field(
        60.0, gt=0, description="The event stream is reopened and containers re-listed this often."
    )
