"""The positions file: delivered positions per container and stream, saved atomically.

Per stream: ``ts``/``ts_ns``/``count`` (the mark of the last line delivered) and, when
known, ``checked``/``checked_ns`` (a time before which every line of the stream was
delivered: monitor/resume.py, positions/ledger.py). A file without the checked fields
(written before they existed) loads with none; the format version stays 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field

from ..config.types import Duration, Section
from ..metrics.registry import POSITION_SAVES, POSITIONS_TRACKED
from ..timestamps import format_rfc3339_ns
from .marks import ZERO, Mark

_log = structlog.get_logger(__name__)
FORMAT_VERSION = 1

Marks = dict[str, dict[str, Mark]]
"""container id -> stream -> mark"""

Checked = dict[str, dict[str, int]]
"""container id -> stream -> checked time (ns)"""


class PositionsConfig(Section):
    path: str = Field("./data/positions.json", description="The positions file.")
    flush_interval: Duration = Field(1.0, description="How often acknowledged positions are saved.")


@dataclass
class SavedPositions:
    """What a positions file holds."""

    marks: Marks = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    sinks: dict[str, Any] = field(default_factory=dict)
    saved_at_ns: int | None = None  # when the file was last written; None: no file
    checked: Checked = field(default_factory=dict)


class PositionFile:
    """The positions file: a container's delivered marks, its name, and each sink's
    checkpoint state, written atomically. The :class:`~.ledger.Ledger` owns what is in it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> SavedPositions:
        """Read the file (absent = empty); a corrupt one is set aside and reported, never reused."""
        try:
            raw = self.path.read_text(encoding="utf-8")
            saved_at_ns = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return SavedPositions()
        try:
            saved = _decode(json.loads(raw))
            saved.saved_at_ns = saved_at_ns
            return saved
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            _log.error(
                "positions_file_corrupt", path=str(self.path), moved_to=str(aside), error=str(exc)
            )
            return SavedPositions()

    def save(self, saved: SavedPositions) -> None:
        """Write atomically (temp file, fsync, rename, fsync dir); OSError on failure."""
        text = json.dumps(_encode(saved), indent=1, sort_keys=True)
        try:
            _atomic_write(self.path, text)
        except OSError:
            POSITION_SAVES.labels("error").inc()
            raise
        POSITION_SAVES.labels("ok").inc()
        POSITIONS_TRACKED.set(len(saved.marks))


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _encode(saved: SavedPositions) -> dict[str, Any]:
    containers: dict[str, Any] = {}
    for cid, marks in saved.marks.items():
        checked = saved.checked.get(cid, {})
        streams: dict[str, Any] = {}
        for stream in sorted(set(marks) | set(checked)):
            m = marks.get(stream, ZERO)
            entry: dict[str, Any] = {
                "ts": format_rfc3339_ns(m.ts_ns),
                "ts_ns": m.ts_ns,
                "count": m.seq,
            }
            if checked.get(stream, 0) > 0:
                entry["checked"] = format_rfc3339_ns(checked[stream])
                entry["checked_ns"] = checked[stream]
            streams[stream] = entry
        containers[cid] = {"name": saved.names.get(cid, ""), "streams": streams}
    return {"version": FORMAT_VERSION, "containers": containers, "sinks": saved.sinks}


def _decode(document: Any) -> SavedPositions:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported positions format: {str(document)[:80]!r}")
    saved = SavedPositions(sinks=dict(document.get("sinks") or {}))
    for cid, entry in (document.get("containers") or {}).items():
        saved.names[cid] = str(entry.get("name", ""))
        streams = entry.get("streams") or {}
        saved.marks[cid] = {
            stream: Mark(int(m["ts_ns"]), int(m["count"])) for stream, m in streams.items()
        }
        checked = {
            stream: int(m["checked_ns"]) for stream, m in streams.items() if "checked_ns" in m
        }
        if checked:
            saved.checked[cid] = checked
    return saved
