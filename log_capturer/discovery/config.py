"""The keys of ``container_monitor:`` that choose which containers are captured (read by
:class:`~log_capturer.discovery.filters.ContainerFilter`)."""

from __future__ import annotations

from pydantic import Field

from ..config.types import Section


class SelectionConfig(Section):
    include_names: list[str] = Field(
        default_factory=list, description="Glob patterns on container names; empty = all."
    )
    exclude_names: list[str] = Field(default_factory=list, description="Glob patterns to skip.")
    include_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels that must all be present; value '' or '*' matches any value.",
    )
    exclude_labels: dict[str, str] = Field(
        default_factory=dict,
        description="A container with any of these labels is skipped; value '' or '*' "
        "matches any value. A container labelled io.log_capturer.exclude=true is always "
        "skipped, without any setting here.",
    )
    include_images: list[str] = Field(
        default_factory=list, description="Glob patterns on image names; empty = all."
    )
    exclude_images: list[str] = Field(default_factory=list, description="Glob patterns to skip.")
