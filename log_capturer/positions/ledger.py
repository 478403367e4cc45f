"""The one owner of every container's position and life.

Per container it holds where reading got to (``read``: what entered the queue), what
every sink accepted (``delivered``: what the positions file saves), and where the
container is in its life (:class:`Life`). Discovery asks it whether and from where to
read a container, monitors move ``read``, the dispatcher moves ``delivered``, sinks
report at start what they already hold (``Sink.recover``), and the dispatcher saves it
with the sinks' checkpoints. Nothing else keeps a copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any

import structlog

from ..metrics.registry import POSITIONS_TRACKED
from .marks import ZERO, Mark, StreamMarks
from .store import Marks, PositionFile, SavedPositions

if TYPE_CHECKING:
    from ..discovery.container import ContainerInfo
    from ..pipeline.batch import Batch
    from ..sinks.base import Sink

_log = structlog.get_logger(__name__)


class Life(Enum):
    """Where a container is, as far as capture goes."""

    IDLE = "idle"  # known (from the positions file, or its monitor ended), not being read
    READING = "reading"  # a monitor reads it
    FINISHED = "finished"  # read to its end after it stopped (the run of ``finished_run``)
    DESTROYED = "destroyed"  # gone from the engine while a monitor still read it


class MonitorEnd(StrEnum):
    """Why a container's monitor ended (the value is what its log line says)."""

    EXITED = "exited"  # the container stopped and its log was read to the end
    STOPPED = "stopped"  # the daemon is stopping
    GONE = "gone"  # the container was removed
    ERROR = "error"  # an unexpected error (logged)


@dataclass(slots=True)
class ContainerPosition:
    """One container's positions. ``read`` is written only by the container's monitor
    thread while it is ``READING`` (and by the ledger otherwise); ``delivered`` only
    under the ledger's lock."""

    id: str
    name: str
    read: StreamMarks = field(default_factory=dict)
    delivered: StreamMarks = field(default_factory=dict)
    life: Life = Life.IDLE
    finished_run: str | None = None  # StartedAt of the run read to its end


class Ledger:
    """Positions and life of every container; thread-safe."""

    def __init__(self, path: str) -> None:
        self.file = PositionFile(path)
        self._lock = threading.Lock()
        self._containers: dict[str, ContainerPosition] = {}
        self._dirty = False
        self.down_since_ns: int | None = None
        """When the daemon last saved positions before this start (None: a first start)."""

    # -- start ---------------------------------------------------------------------------

    def load(self, sinks: Sequence[Sink]) -> None:
        """Read the positions file; each sink reports what it already holds (at least the
        saved marks), and a stream resumes from the lowest of them."""
        saved = self.file.load()
        self.down_since_ns = saved.saved_at_ns
        per_sink = [sink.recover(saved.marks, saved.sinks.get(sink.name)) for sink in sinks]
        per_sink = per_sink or [saved.marks]
        with self._lock:
            for cid, streams in _lowest(per_sink).items():
                self._containers[cid] = ContainerPosition(
                    cid, saved.names.get(cid, ""), dict(streams), dict(streams)
                )
        POSITIONS_TRACKED.set(len(self._containers))

    # -- discovery and monitors ----------------------------------------------------------

    def open(
        self, info: ContainerInfo, streams: Sequence[str], start_now: bool
    ) -> ContainerPosition | None:
        """A monitor is about to read ``info``: its position (``READING`` from now on),
        or None when this run of the container was already read to its end.

        A container not known yet starts at its beginning, or (``start_now``) at this
        moment, which is saved at once so a crash does not read its history after all.
        """
        with self._lock:
            entry = self._containers.get(info.id)
            if (
                entry is not None
                and entry.life is Life.FINISHED
                and not info.running
                and entry.finished_run == info.started_at
            ):
                return None
            if entry is None:
                start = Mark(time.time_ns(), 0) if start_now else ZERO
                entry = self._containers[info.id] = ContainerPosition(info.id, info.name)
                entry.read = {s: start for s in streams}
                if start_now:
                    entry.delivered = dict(entry.read)
                    self._dirty = True
            for stream in streams:
                entry.read.setdefault(stream, ZERO)
            entry.name = info.name
            entry.life = Life.READING
            entry.finished_run = None
            return entry

    def close(self, container_id: str, end: MonitorEnd, run: str) -> None:
        """The container's monitor ended; ``run`` is the StartedAt of the run it read."""
        with self._lock:
            entry = self._containers.get(container_id)
            if entry is None:
                return
            if end is MonitorEnd.GONE or entry.life is Life.DESTROYED:
                self._forget(container_id)
            elif end is MonitorEnd.EXITED:
                entry.life = Life.FINISHED
                entry.finished_run = run
            else:
                entry.life = Life.IDLE

    def destroyed(self, container_id: str) -> None:
        """The engine removed the container: forget it now, or once its monitor ends."""
        with self._lock:
            entry = self._containers.get(container_id)
            if entry is None:
                return
            if entry.life is Life.READING:
                entry.life = Life.DESTROYED
            else:
                self._forget(container_id)

    def unfinished(self, container_id: str) -> bool:
        """Known, not being read and not read to its end: it stopped while the daemon was
        down (or its monitor failed), so the rest of its log is still to read."""
        with self._lock:
            entry = self._containers.get(container_id)
            return entry is not None and entry.life is Life.IDLE

    def prune(self, gone: Iterable[str]) -> int:
        """Forget containers the engine no longer has (found at the first listing)."""
        with self._lock:
            stale = [
                cid
                for cid in gone
                if cid in self._containers and self._containers[cid].life is not Life.READING
            ]
            for cid in stale:
                self._forget(cid)
        return len(stale)

    def _forget(self, container_id: str) -> None:
        del self._containers[container_id]
        self._dirty = True
        POSITIONS_TRACKED.set(len(self._containers))

    # -- delivery ------------------------------------------------------------------------

    def acknowledge(self, batches: Iterable[Batch]) -> None:
        """Every sink accepted these batches: their streams are delivered up to their ends.
        (Batches of a container forgotten meanwhile change nothing.)"""
        with self._lock:
            for batch in batches:
                entry = self._containers.get(batch.container.id)
                if entry is None:
                    continue
                delivered = entry.delivered
                for stream, end in batch.ends.items():
                    if end > delivered.get(stream, ZERO):
                        delivered[stream] = end
                        self._dirty = True

    def delivered(self, container_id: str) -> StreamMarks | None:
        with self._lock:
            entry = self._containers.get(container_id)
            return dict(entry.delivered) if entry is not None else None

    def container_ids(self) -> list[str]:
        with self._lock:
            return list(self._containers)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def save(self, sinks: dict[str, Any], force: bool = False) -> bool:
        """Write delivered positions and the sinks' states; False if nothing changed.
        Call it from one thread (the dispatcher), after the sinks' checkpoints."""
        with self._lock:
            if not (self._dirty or force):
                return False
            saved = SavedPositions(
                {cid: dict(e.delivered) for cid, e in self._containers.items() if e.delivered},
                {cid: e.name for cid, e in self._containers.items() if e.delivered},
                sinks,
            )
            self._dirty = False
        try:
            self.file.save(saved)
        except OSError:
            self._dirty = True
            raise
        return True


def _lowest(per_sink: list[Marks]) -> Marks:
    """Per stream, the lowest mark over the sinks (a stream missing in one sink starts at zero)."""
    result: Marks = {}
    for cid in set().union(*per_sink):
        streams = set().union(*(m.get(cid, {}) for m in per_sink))
        result[cid] = {s: min(m.get(cid, {}).get(s, ZERO) for m in per_sink) for s in streams}
    return result
