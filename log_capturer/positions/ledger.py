"""The one owner of every container's position and life.

Per container it holds where reading got to (``read``: what entered the queue), what
every sink accepted (``delivered``: what the positions file saves), per stream a
*checked time* true of what was delivered (``checked``: saved too, see below), and
where the container is in its life (:class:`Life`). Discovery asks it whether and from
where to read a container, monitors move ``read`` and report their proofs
(:meth:`Ledger.note_checked`), the dispatcher moves ``delivered``, sinks report at
start what they already hold (``Sink.recover``), and the dispatcher saves it with the
sinks' checkpoints. Nothing else keeps a copy.

Checked times (monitor/resume.py) let a reopen start past a stream's last line. A
monitor's proof says "every line of the stream stamped before C has been *read*",
and the stream's read position was P then: every line it read is at or before P. The
ledger keeps C pending until ``delivered`` reaches P, and only then makes it the
stream's saved checked time: a crash can make a restart skip no undelivered line
(exactly as far as ``delivered`` itself: a line a clock stamped in the past, behind
its stream's mark, is past both). A proof about several streams (one read) is saved
for all of them at once, when all are delivered: a quiet stderr's saved time never
runs ahead of a busy stdout's (after a crash, plan_window would read stdout alone,
without a tail). Only the newest value matters, so at most two pending proofs are
kept per container (the oldest, which is acknowledged first, and the newest).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
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
    # stream -> checked time (ns) true of what was delivered (saved), under the lock
    checked: dict[str, int] = field(default_factory=dict)
    # proofs not yet delivered, oldest first: (read positions then, checked times)
    proofs: list[tuple[StreamMarks, dict[str, int]]] = field(default_factory=list)


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
        saved marks), and a stream resumes from the lowest of them. A saved checked time
        is kept where the stream resumes at or after its saved mark (what it was true
        of) and it is not in the future (a wall clock set back since: the marks decide)."""
        saved = self.file.load()
        self.down_since_ns = saved.saved_at_ns
        per_sink = [sink.recover(saved.marks, saved.sinks.get(sink.name)) for sink in sinks]
        per_sink = per_sink or [saved.marks]
        now = time.time_ns()
        future = 0
        with self._lock:
            for cid, streams in _lowest(per_sink).items():
                entry = ContainerPosition(
                    cid, saved.names.get(cid, ""), dict(streams), dict(streams)
                )
                saved_marks = saved.marks.get(cid, {})
                for stream, checked_ns in saved.checked.get(cid, {}).items():
                    if checked_ns > now:
                        future += 1
                    elif streams.get(stream, ZERO) >= saved_marks.get(stream, ZERO):
                        entry.checked[stream] = checked_ns
                self._containers[cid] = entry
        if future:
            _log.warning("positions_checked_in_future", streams=future)
        POSITIONS_TRACKED.set(len(self._containers))

    # -- discovery and monitors ----------------------------------------------------------

    def begin_reading(
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

    def end_reading(self, container_id: str, end: MonitorEnd, run: str) -> None:
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
        """Every sink accepted these batches: their streams are delivered up to their ends,
        and checked times proven up to there become saved ones. (Batches of a container
        forgotten meanwhile change nothing.)"""
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
                if entry.proofs:
                    self._promote(entry)

    def note_checked(
        self, container_id: str, checked: Mapping[str, int], read: Mapping[str, Mark]
    ) -> None:
        """A monitor proved every line of each stream stamped before ``checked[stream]``
        read, with the streams' read positions at ``read``: the times are saved once all
        those positions are delivered (at once if they are)."""
        with self._lock:
            entry = self._containers.get(container_id)
            if entry is None:
                return
            at = {s: read.get(s, ZERO) for s in checked}
            proof = (at, dict(checked))
            pending = entry.proofs
            if pending and pending[-1][0] == at:
                old = pending[-1][1]
                pending[-1] = (at, {s: max(t, old.get(s, 0)) for s, t in checked.items()})
            elif len(pending) >= 2:
                pending[-1] = proof  # the middle one is superseded by the newest
            else:
                pending.append(proof)
            self._promote(entry)

    def _promote(self, entry: ContainerPosition) -> None:
        """Proofs whose read positions are all delivered become saved checked times. The
        file is due when a stream's time first passes its last delivered line (a restart
        then skips its history); later moves of a quiet stream go with the next save."""
        delivered = entry.delivered
        pending = entry.proofs
        while pending and all(m <= delivered.get(s, ZERO) for s, m in pending[0][0].items()):
            for stream, checked_ns in pending.pop(0)[1].items():
                old = entry.checked.get(stream, 0)
                if checked_ns > old:
                    entry.checked[stream] = checked_ns
                    if old <= delivered.get(stream, ZERO).ts_ns < checked_ns:
                        self._dirty = True

    def checked_times(self, container_id: str) -> dict[str, int]:
        """Per stream, the checked time true of what was delivered (0 if none)."""
        with self._lock:
            entry = self._containers.get(container_id)
            return dict(entry.checked) if entry is not None else {}

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
            kept = [e for e in self._containers.values() if e.delivered or e.checked]
            saved = SavedPositions(
                {e.id: dict(e.delivered) for e in kept},
                {e.id: e.name for e in kept},
                sinks,
                checked={e.id: dict(e.checked) for e in kept if e.checked},
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
