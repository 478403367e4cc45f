"""A durable on-disk FIFO of payloads, so a sink can accept batches while its server is away.

Each entry is one file, ``<seq>.seg``, written to a temporary name, fsynced, renamed
into place and the directory fsynced before :meth:`DiskSpool.append` returns: a
visible segment is always complete, and one that was being written when the process
died is only a ``*.tmp`` file, deleted at the next start. The spool never drops
anything by itself: when it is full, ``append`` raises :class:`SpoolFullError` and
the caller must push back on its producer.

Segment layout: a 20-byte header (magic ``LCSP``, CRC-32 of the payload, record
count, payload length; big-endian) followed by the payload, which is opaque here.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from ...metrics.registry import (
    SPOOL_BYTES,
    SPOOL_CAPACITY_BYTES,
    SPOOL_CORRUPT_ENTRIES,
    SPOOL_RECORDS,
)

_log = structlog.get_logger(__name__)

_MAGIC = b"LCSP"
_HEADER = struct.Struct(">4sIIQ")  # magic, crc32(payload), records, payload length
_SEGMENT = ".seg"
_TEMP = ".tmp"
_CORRUPT = ".corrupt"
_LOCK_FILE = ".lock"


class SpoolError(OSError):
    """The spool cannot store or read an entry, or cannot start (an OSError, like ENOSPC)."""


class SpoolFullError(SpoolError):
    """Appending would exceed ``max_bytes``: the caller must apply backpressure, not drop."""


class SpoolLockedError(SpoolError):
    """Another spool (in this or another process) owns the directory."""


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One stored payload, as returned by :meth:`DiskSpool.peek`."""

    seq: int
    records: int
    data: bytes
    size: int  # bytes on disk, header included


@dataclass(slots=True)
class _Segment:
    seq: int
    records: int
    size: int
    path: Path


class DiskSpool:
    """A bounded, crash-safe FIFO in ``directory``; one appender and one consumer thread.

    Entries come back in append order, across restarts. Removing the head is not
    fsynced: after a crash an entry may be replayed twice, never lost (at-least-once).
    The directory is locked (``flock``) while the spool is open, so two daemons with
    the same configuration cannot replay the same entries.
    """

    def __init__(self, directory: str | Path, max_bytes: int, name: str) -> None:
        self.directory = Path(directory).absolute()
        self.max_bytes = max_bytes
        self.name = name
        self._mutex = threading.Lock()
        self._segments: deque[_Segment] = deque()
        self._bytes = 0
        self._records = 0
        self._next_seq = 1
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _lock_directory(self.directory)
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        SPOOL_CAPACITY_BYTES.labels(name).set(max_bytes)
        self._publish()

    # -- state -----------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        return self._bytes

    @property
    def records(self) -> int:
        return self._records

    @property
    def empty(self) -> bool:
        return not self._segments

    def __len__(self) -> int:
        return len(self._segments)

    def _publish(self) -> None:
        SPOOL_BYTES.labels(self.name).set(self._bytes)
        SPOOL_RECORDS.labels(self.name).set(self._records)

    # -- start-up --------------------------------------------------------------------

    def _load(self) -> None:
        """Index the segments left by a previous run; delete half-written temp files."""
        found: list[_Segment] = []
        for path in self.directory.iterdir():
            if path.name.endswith(_TEMP):
                _log.warning("spool_temp_file_removed", sink=self.name, path=str(path))
                path.unlink(missing_ok=True)
                continue
            if not path.name.endswith(_SEGMENT):
                continue
            try:
                seq = int(path.name[: -len(_SEGMENT)])
            except ValueError:
                _log.warning("spool_unknown_file_ignored", sink=self.name, path=str(path))
                continue
            header = _read_header(path)
            if header is None:
                self._quarantine(path, "unreadable header")
                continue
            records, length = header
            found.append(_Segment(seq, records, _HEADER.size + length, path))
        found.sort(key=lambda s: s.seq)
        self._segments.extend(found)
        self._bytes = sum(s.size for s in found)
        self._records = sum(s.records for s in found)
        if found:
            self._next_seq = found[-1].seq + 1
            _log.info("spool_loaded", sink=self.name, entries=len(found), records=self._records,
                      bytes=self._bytes, directory=str(self.directory))
        if self._bytes > self.max_bytes:
            _log.warning("spool_over_capacity", sink=self.name, bytes=self._bytes,
                         max_bytes=self.max_bytes)

    # -- appending -------------------------------------------------------------------

    def append(self, items: Sequence[tuple[bytes, int]]) -> None:
        """Store ``(payload, records)`` items durably, in order, before returning.

        Capacity is checked for all items first, so a full spool stores none of them.
        Raises :class:`SpoolFullError` when they do not fit, :class:`SpoolError` on a
        disk error (items stored before the error stay in the spool).
        """
        if not items:
            return
        needed = sum(_HEADER.size + len(data) for data, _ in items)
        with self._mutex:
            if self._lock_fd is None:
                raise SpoolError(f"spool {self.directory} is closed")
            if self._bytes + needed > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} is full: {self._bytes} of {self.max_bytes} bytes "
                    f"used, {needed} more needed"
                )
            appended = 0
            try:
                for data, records in items:
                    self._append_one(data, records)
                    appended += 1
            finally:
                self._publish()
                if appended:
                    _fsync_directory(self.directory)

    def _append_one(self, data: bytes, records: int) -> None:
        seq = self._next_seq
        path = self.directory / f"{seq:020d}{_SEGMENT}"
        temp = self.directory / f"{seq:020d}{_SEGMENT}{_TEMP}"
        header = _HEADER.pack(_MAGIC, zlib.crc32(data), records, len(data))
        try:
            with open(temp, "wb") as fh:
                fh.write(header)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise SpoolError(f"cannot write spool entry {path}: {exc}") from exc
        self._next_seq = seq + 1
        size = len(header) + len(data)
        self._segments.append(_Segment(seq, records, size, path))
        self._bytes += size
        self._records += records

    # -- consuming -------------------------------------------------------------------

    def peek(self) -> SpoolEntry | None:
        """The oldest entry, or None. Corrupt entries are moved aside and skipped."""
        while True:
            with self._mutex:
                if not self._segments:
                    return None
                segment = self._segments[0]
            try:
                raw = segment.path.read_bytes()
            except OSError as exc:
                raise SpoolError(f"cannot read spool entry {segment.path}: {exc}") from exc
            entry = _parse(segment, raw)
            if entry is not None:
                return entry
            with self._mutex:
                if self._segments and self._segments[0] is segment:
                    self._drop_head()
            self._quarantine(segment.path, "checksum or length mismatch")

    def remove(self, entry: SpoolEntry) -> None:
        """Delete ``entry``, which must be the oldest (the one :meth:`peek` returned)."""
        with self._mutex:
            if not self._segments or self._segments[0].seq != entry.seq:
                raise SpoolError(f"spool entry {entry.seq} is not the oldest entry")
            segment = self._drop_head()
        try:
            segment.path.unlink()
        except FileNotFoundError:
            _log.warning("spool_entry_already_gone", sink=self.name, path=str(segment.path))
        except OSError as exc:
            raise SpoolError(f"cannot delete spool entry {segment.path}: {exc}") from exc

    def set_aside(self, entry: SpoolEntry, reason: str) -> None:
        """Move ``entry`` (the oldest) out of the FIFO as ``*.corrupt``: its payload is unusable."""
        with self._mutex:
            if not self._segments or self._segments[0].seq != entry.seq:
                raise SpoolError(f"spool entry {entry.seq} is not the oldest entry")
            segment = self._drop_head()
        self._quarantine(segment.path, reason)

    def _drop_head(self) -> _Segment:
        segment = self._segments.popleft()
        self._bytes -= segment.size
        self._records -= segment.records
        self._publish()
        return segment

    def _quarantine(self, path: Path, reason: str) -> None:
        """Keep a corrupt segment for inspection, out of the FIFO; count and report it."""
        SPOOL_CORRUPT_ENTRIES.labels(self.name).inc()
        target = path.with_name(path.name + _CORRUPT)
        _log.error("spool_entry_corrupt", sink=self.name, path=str(path), moved_to=str(target),
                   reason=reason)
        try:
            os.replace(path, target)
        except OSError as exc:
            _log.error("spool_quarantine_failed", sink=self.name, path=str(path), error=str(exc))

    # -- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Release the directory lock; entries stay on disk for the next start."""
        with self._mutex:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise SpoolLockedError(f"spool {directory} is in use by another spool: {exc}") from exc
    return fd


def _read_header(path: Path) -> tuple[int, int] | None:
    """``(records, payload length)`` if the header is readable and matches the file size."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
            size = os.fstat(fh.fileno()).st_size
    except OSError:
        return None
    if len(head) != _HEADER.size:
        return None
    magic, _crc, records, length = _HEADER.unpack(head)
    if magic != _MAGIC or size != _HEADER.size + length:
        return None
    return records, length


def _parse(segment: _Segment, raw: bytes) -> SpoolEntry | None:
    if len(raw) < _HEADER.size:
        return None
    magic, crc, records, length = _HEADER.unpack_from(raw)
    data = raw[_HEADER.size:]
    if magic != _MAGIC or len(data) != length or zlib.crc32(data) != crc:
        return None
    return SpoolEntry(segment.seq, records, data, len(raw))


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable: without this a crash can forget a renamed segment."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise SpoolError(f"cannot open spool directory {directory}: {exc}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SpoolError(f"cannot fsync spool directory {directory}: {exc}") from exc
    finally:
        os.close(fd)
