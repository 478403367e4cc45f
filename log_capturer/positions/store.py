"""Acknowledged positions per container and stream, saved atomically.

A position advances only when every enabled sink has accepted the record (the
dispatcher calls :meth:`PositionStore.ack`), so after a crash the monitors resume
from what was delivered, not from what was read.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import Field

from ..config.types import Duration, Section
from ..metrics.registry import POSITION_SAVES, POSITIONS_TRACKED
from ..monitor.marks import Mark
from ..timestamps import format_rfc3339_ns

_log = structlog.get_logger(__name__)
FORMAT_VERSION = 1

Marks = dict[str, dict[str, Mark]]
"""container id -> stream -> mark"""


class PositionsConfig(Section):
    path: str = Field("./data/positions.json", description="The positions file.")
    flush_interval: Duration = Field(1.0, description="How often acknowledged positions are saved.")


class PositionsError(Exception):
    """The positions file exists but cannot be used."""


@dataclass
class SavedPositions:
    """What a positions file holds."""

    marks: Marks = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    sinks: dict[str, Any] = field(default_factory=dict)


class PositionStore:
    """In-memory acknowledged marks plus the file they are saved to. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._marks: Marks = {}
        self._names: dict[str, str] = {}
        self._dirty = False

    # -- loading ---------------------------------------------------------------------

    def load(self) -> SavedPositions:
        """Read the file (absent = empty); a corrupt one is set aside and reported, never reused."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return SavedPositions()
        try:
            saved = _decode(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            _log.error(
                "positions_file_corrupt", path=str(self.path), moved_to=str(aside), error=str(exc)
            )
            return SavedPositions()
        with self._lock:
            self._marks = {cid: dict(streams) for cid, streams in saved.marks.items()}
            self._names = dict(saved.names)
        POSITIONS_TRACKED.set(len(self._marks))
        return saved

    # -- updates (dispatcher thread) -------------------------------------------------

    def ack(self, records: Iterable[Any]) -> None:
        """Advance marks past accepted records (to the last source line each one holds)."""
        # The furthest position per (container, stream) first, with plain tuples: one
        # Mark per stream and batch instead of one per record.
        furthest: dict[tuple[str, str], tuple[int, int]] = {}
        names: dict[str, str] = {}
        for record in records:
            key = (record.container.id, record.stream)
            position = (record.end_ts_ns, record.end_seq)
            best = furthest.get(key)
            if best is None:
                furthest[key] = position
                names.setdefault(key[0], record.container.name)
            elif position > best:
                furthest[key] = position
        with self._lock:
            for (cid, stream), (ts_ns, count) in furthest.items():
                streams = self._marks.get(cid)
                if streams is None:
                    streams = self._marks[cid] = {}
                    self._names[cid] = names[cid]
                current = streams.get(stream)
                mark = Mark(ts_ns, count)
                if current is None or mark > current:
                    streams[stream] = mark
                    self._dirty = True

    def set_start(self, container_id: str, name: str, marks: dict[str, Mark]) -> None:
        """Record where a new container's capture starts (``start_from: now`` survives a crash)."""
        with self._lock:
            streams = self._marks.setdefault(container_id, {})
            self._names[container_id] = name
            for stream, mark in marks.items():
                if stream not in streams or mark > streams[stream]:
                    streams[stream] = mark
                    self._dirty = True

    def prune(self, container_ids: Iterable[str]) -> int:
        removed = 0
        with self._lock:
            for cid in container_ids:
                if self._marks.pop(cid, None) is not None:
                    removed += 1
                self._names.pop(cid, None)
            if removed:
                self._dirty = True
        return removed

    def marks_for(self, container_id: str) -> dict[str, Mark] | None:
        with self._lock:
            streams = self._marks.get(container_id)
            return dict(streams) if streams is not None else None

    def container_ids(self) -> list[str]:
        with self._lock:
            return list(self._marks)

    @property
    def dirty(self) -> bool:
        return self._dirty

    # -- saving ----------------------------------------------------------------------

    def save(self, sinks: dict[str, Any], force: bool = False) -> bool:
        """Write atomically (temp file, fsync, rename, fsync dir); False if nothing changed."""
        with self._lock:
            if not (self._dirty or force):
                return False
            document = _encode(self._marks, self._names, sinks)
            self._dirty = False
            count = len(self._marks)
        try:
            _atomic_write(self.path, json.dumps(document, indent=1, sort_keys=True))
        except OSError:
            with self._lock:
                self._dirty = True
            POSITION_SAVES.labels("error").inc()
            raise
        POSITION_SAVES.labels("ok").inc()
        POSITIONS_TRACKED.set(count)
        return True


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


def _encode(marks: Marks, names: dict[str, str], sinks: dict[str, Any]) -> dict[str, Any]:
    containers: dict[str, Any] = {}
    for cid, streams in marks.items():
        containers[cid] = {
            "name": names.get(cid, ""),
            "streams": {
                stream: {"ts": format_rfc3339_ns(m.ts_ns), "ts_ns": m.ts_ns, "count": m.count}
                for stream, m in streams.items()
            },
        }
    return {"version": FORMAT_VERSION, "containers": containers, "sinks": sinks}


def _decode(document: Any) -> SavedPositions:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported positions format: {str(document)[:80]!r}")
    saved = SavedPositions(sinks=dict(document.get("sinks") or {}))
    for cid, entry in (document.get("containers") or {}).items():
        saved.names[cid] = str(entry.get("name", ""))
        saved.marks[cid] = {
            stream: Mark(int(m["ts_ns"]), int(m["count"]))
            for stream, m in (entry.get("streams") or {}).items()
        }
    return saved
