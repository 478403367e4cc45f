"""``container_monitor:`` config section: which streams, how windows run (and, from
:class:`~log_capturer.discovery.config.SelectionConfig`, which containers)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config.types import ByteSize, Duration, Section
from ..discovery.config import SelectionConfig


class _Reading(Section):
    """The section's first keys (the reference lists them before the selection's)."""

    stream_window: Duration = Field(
        30.0, gt=0, description="A log stream is closed and reopened after this long."
    )
    start_from: Literal["beginning", "now"] = Field(
        "beginning",
        description="Where to start a container already running when first seen, with no "
        "position: at the daemon's first listing, or when a reload's filters newly select it "
        "(beginning: its whole log). Containers that start later are always read from their "
        "beginning; a container selected again resumes where it was deselected.",
    )
    stdout: bool = Field(True, description="Capture stdout.")
    stderr: bool = Field(True, description="Capture stderr.")


class MonitorConfig(SelectionConfig, _Reading):
    max_line_bytes: ByteSize = Field(
        1024 * 1024, description="Longer lines are cut to this and marked truncated."
    )
    self_container_id: str = Field(
        "", description="This daemon's own container id; found automatically when empty."
    )
    retry_initial_backoff: Duration = Field(0.5, description="First wait after a stream error.")
    retry_max_backoff: Duration = Field(30.0, description="Longest wait after stream errors.")
    contended_window: Duration = Field(
        2.0,
        gt=0,
        description="While others wait for a Docker connection (more containers than "
        "docker.pool.max_open), log streams held this long are ended, oldest first, so "
        "connections take turns.",
    )
    resume_tail_lines: int = Field(
        1000,
        ge=0,
        description="Reopen with since plus a bounded tail of this many lines (more for a busy "
        "container; at most 32 for a stream silent since its last read), so the engine need "
        "not re-read a big log file from its start; a tail that comes back full is read "
        "again with a larger tail, then a plain since. 0 = always plain since.",
    )
    resume_tail_max_lines: int = Field(
        100_000, ge=1, description="The largest tail asked for a busy container."
    )
    reorder_tolerance: Duration = Field(
        1.0,
        ge=0,
        description="How far the engine may write stdout and stderr lines out of timestamp "
        "order (measured: about 1 ms); resumed reads overlap by this much.",
    )
    tail_hold_max_bytes: ByteSize = Field(
        32 * 1024 * 1024,
        description="Bytes of lines one monitor may hold back while a tail read is checked "
        "(messages plus about 120 bytes a line); a tail that holds more is read again with "
        "a plain since.",
    )
    buffer_budget: ByteSize = Field(
        64 * 1024 * 1024,
        description="Bytes of lines all monitors together may hold back while their tail "
        "reads are checked (messages plus about 120 bytes a line); a tail read whose lines "
        "do not fit is read again with a plain since, which holds nothing. What else the "
        "daemon holds besides the queue (recent lines, split lines, multiline groups) is "
        "bounded per stream; all of it is on /metrics as log_capturer_buffered_bytes.",
    )
    max_stream_hold: Duration = Field(
        600.0,
        gt=0,
        description="A log stream still reading lines older than a few seconds (a backlog) "
        "is not ended at stream_window while it delivers, up to this long: reopening a "
        "stream that is behind makes the engine search the log file for since.",
    )
    max_lines_per_second: float = Field(
        0,
        ge=0,
        description="Read at most this many lines per second of each container, on average "
        "(a second's worth may come at once); 0 = no bound. Reading is paced, nothing is "
        "dropped: the engine keeps what is not read yet, so a container over the bound is "
        "delivered later, whole (log_capturer_read_throttled_seconds_total).",
    )
    max_bytes_per_second: ByteSize = Field(
        0,
        description="The same bound in message bytes per second of each container (e.g. "
        "1MiB); 0 = no bound.",
    )
    relist_interval: Duration = Field(
        60.0, gt=0, description="The event stream is reopened and containers re-listed this often."
    )
