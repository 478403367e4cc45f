"""The file sink: JSON lines on local disk, exactly once across crashes.

Exactly once, not just at least once: positions are saved with the file's inode and
offset (after an fsync), and at start the sink reads what it wrote after that
checkpoint. Records found there are not written again when the engine re-sends
them, and a line torn by a crash mid-write is cut off. A write the disk cannot take
(full, quota) is undone, back to the last whole record, and the batch is retried.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from io import FileIO
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import Field

from ..config.types import ByteSize, Section
from ..metrics.registry import FILE_SINK_WRITE_ERRORS, SINK_UP
from ..pipeline.batch import Batch
from ..positions.marks import Mark
from ..positions.store import Marks
from ..timestamps import TimestampError, parse_docker_ts
from .base import Sink, SinkError, observe_delivered

_log = structlog.get_logger(__name__)
_IOV_MAX = 1024  # pieces one writev takes (Linux's IOV_MAX)


class FileSinkConfig(Section):
    enabled: bool = Field(True, description="Write records to a local JSON-lines file.")
    path: str = Field("./data/logs.jsonl", description="The file records are appended to.")
    max_bytes: ByteSize = Field(0, description="Rotate once the file reaches this size; 0 = never.")
    max_files: int = Field(5, ge=1, description="Rotated files kept; older ones are deleted.")
    compress: bool = Field(False, description="gzip rotated files (in the background).")
    fsync: Literal["checkpoint", "batch", "never"] = Field(
        "checkpoint",
        description="checkpoint: fsync before every positions save (positions never point past "
        "durable data); batch: after every batch too; never: leave it to the OS.",
    )


class FileSink(Sink):
    name = "file"

    def __init__(self, config: FileSinkConfig) -> None:
        self.config = config
        self.path = Path(config.path).absolute()
        self._fh: FileIO | None = None
        self._size = 0  # of the open file: where the last whole record ends
        self._torn_at: int | None = None  # a failed write could not be cut back to here
        self._failing = False
        self._rotate_pending = False
        self._skip: dict[tuple[str, str], Mark] = {}
        self._compressor: ThreadPoolExecutor | None = None
        self._compressions: list[Future[None]] = []

    # -- start-up --------------------------------------------------------------------

    def recover(self, acked: Marks, state: Any) -> Marks:
        """Cut a torn last line; read records written after the checkpoint; return the marks."""
        if not self.path.exists():
            return acked
        _truncate_torn_tail(self.path)
        if not isinstance(state, dict) or state.get("path") != str(self.path):
            return acked
        stat = self.path.stat()
        # A different inode (rotated right after the checkpoint), or no file at all when
        # the checkpoint was taken (inode None): everything in this file came after it.
        offset = int(state.get("offset", 0)) if stat.st_ino == state.get("inode") else 0
        if offset > stat.st_size:
            _log.warning(
                "file_sink_shorter_than_checkpoint",
                path=str(self.path),
                checkpoint_offset=offset,
                size=stat.st_size,
            )
            offset = 0
        marks = {cid: dict(streams) for cid, streams in acked.items()}
        found = 0
        for cid, stream, ts_ns, end in _scan_records(self.path, offset):
            streams = marks.setdefault(cid, {})
            mark = streams.get(stream)
            if end is not None:  # a merged record says where its last line was
                if mark is None or end > mark:
                    streams[stream] = end
            elif mark is None or ts_ns > mark.ts_ns:
                streams[stream] = Mark(ts_ns, 1)
            elif ts_ns == mark.ts_ns:
                streams[stream] = Mark(ts_ns, mark.seq + 1)
            found += 1
        for cid, streams in marks.items():
            for stream, mark in streams.items():
                before = acked.get(cid, {}).get(stream)
                if before is None or mark > before:
                    self._skip[(cid, stream)] = mark
        if found:
            _log.info(
                "file_sink_recovered",
                path=str(self.path),
                records_after_checkpoint=found,
                streams_ahead=len(self._skip),
            )
        return marks

    # -- writing ---------------------------------------------------------------------

    def write(self, batches: list[Batch]) -> None:
        if self._skip:
            batches = self._unskipped(batches)
        parts = [batch.jsonl() for batch in batches]
        if not any(parts):
            return
        self._write_bytes(parts)
        observe_delivered(self.name, batches)

    def _write_bytes(self, data: list[bytes]) -> None:
        """Write whole records (``data``, pieces in order) to the file, all or nothing;
        rotate first if due. Raises SinkError, and then the file holds nothing of them."""
        try:
            if self._rotate_pending:
                self._rotate()
            self._append(data)
        except OSError as exc:
            raise self._write_failed(exc) from exc
        if self._failing:
            self._failing = False
            SINK_UP.labels(self.name).set(1)
        if self.config.max_bytes and self._size >= self.config.max_bytes:
            self._rotate_pending = True

    def _append(self, data: list[bytes]) -> None:
        """Append ``data`` (whole records, in pieces written with one writev each, not
        joined first) entirely or not at all; raises OSError.

        A full disk takes part of a write: that part is cut off again before the error
        goes up, so the retry does not glue a whole record to a torn one (nor write
        twice what an fsync failed on). The file is unbuffered: a buffered writer would
        keep the bytes it could not write and write them again at its next flush. The
        bytes are in the OS when this returns: a kill -9 loses nothing.
        """
        fh = self._open()
        if self._torn_at is not None:
            self._cut_back(fh, self._torn_at)
        fd = fh.fileno()
        start = os.fstat(fd).st_size  # not a cached size: the file may have been cut outside
        pending = [memoryview(piece) for piece in data if piece]
        done = 0
        try:
            while pending:  # O_APPEND: at the end; short on a full disk
                written = os.writev(fd, pending[:_IOV_MAX])
                done += written
                while pending and written >= len(pending[0]):
                    written -= len(pending.pop(0))
                if written:
                    pending[0] = pending[0][written:]
            if self.config.fsync == "batch":
                os.fsync(fd)
        except OSError:
            self._torn_at = start
            # A failed cut-back is logged and retried before the next write; the write's
            # own error is the one to report.
            with contextlib.suppress(OSError):
                self._cut_back(fh, start)
            raise
        self._size = start + done

    def _cut_back(self, fh: FileIO, size: int) -> None:
        """Truncate the file to ``size`` (where the last whole record ends), never extend
        it (a copytruncate outside may have emptied it). If that fails too, the next
        :meth:`_append` tries again before writing anything."""
        try:
            if os.fstat(fh.fileno()).st_size > size:
                os.ftruncate(fh.fileno(), size)
        except OSError as exc:
            _log.error(
                "file_sink_cut_back_failed", path=str(self.path), size=size, error=str(exc)
            )
            raise
        self._torn_at = None

    def _write_failed(self, exc: OSError) -> SinkError:
        """Count a failed write (nothing of it is left in the file); the dispatcher
        retries the batch and logs the episode."""
        FILE_SINK_WRITE_ERRORS.labels(errno.errorcode.get(exc.errno or 0, "unknown")).inc()
        if not self._failing:
            self._failing = True
            SINK_UP.labels(self.name).set(0)
        return SinkError(f"file sink {self.path}: {exc}")

    def _unskipped(self, batches: list[Batch]) -> list[Batch]:
        """Without the records written before a crash, after the last checkpoint."""
        out: list[Batch] = []
        for batch in batches:
            cid = batch.container.id
            if not any((cid, stream) in self._skip for stream in batch.ends):
                out.append(batch)
                continue
            keep: list[bool] = []
            for stream, position in zip(batch.streams, batch.positions(), strict=True):
                mark = self._skip.get((cid, stream))
                if mark is not None and mark.covers(*position):
                    keep.append(False)
                    continue
                if mark is not None:
                    del self._skip[(cid, stream)]
                keep.append(True)
            kept = batch.select(keep)
            if kept is not None:
                out.append(kept)
        return out

    def _open(self) -> FileIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: _append decides exactly which bytes reach the file.
            self._fh = open(self.path, "ab", buffering=0)  # noqa: SIM115 - owned until close()
            self._size = os.fstat(self._fh.fileno()).st_size
            self._torn_at = None
        return self._fh

    # -- rotation --------------------------------------------------------------------

    def wants_checkpoint(self) -> bool:
        # Rotation happens only right after a checkpoint, so a checkpoint never refers
        # to a file that received records after it (see recover()).
        return self._rotate_pending

    def _rotate(self) -> None:
        self._rotate_pending = False
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if not self.path.exists():
            return
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() % 10**9:09d}Z"
        rotated = self.path.with_name(f"{self.path.name}.{stamp}")
        os.replace(self.path, rotated)
        if self.config.compress:
            if self._compressor is None:
                self._compressor = ThreadPoolExecutor(1, thread_name_prefix="file-sink-gzip")
            # One worker: pruning runs after the compression, never under its feet.
            self._compressions.append(self._compressor.submit(_gzip_file, rotated))
            self._compressions.append(self._compressor.submit(self._prune_rotated))
        else:
            self._prune_rotated()

    def _prune_rotated(self) -> None:
        rotated = sorted(
            p for p in self.path.parent.glob(f"{self.path.name}.*") if not p.name.endswith(".tmp")
        )
        for old in rotated[: max(0, len(rotated) - self.config.max_files)]:
            old.unlink(missing_ok=True)

    # -- durability ------------------------------------------------------------------

    def checkpoint(self) -> Any:
        self._reap_compressions()
        if self._fh is not None and self.config.fsync != "never":
            os.fsync(self._fh.fileno())
        return self.state()

    def state(self) -> Any:
        if self._fh is not None:
            stat = os.fstat(self._fh.fileno())
            return {"path": str(self.path), "inode": stat.st_ino, "offset": self._size}
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {"path": str(self.path), "inode": None, "offset": 0}
        return {"path": str(self.path), "inode": stat.st_ino, "offset": stat.st_size}

    def _reap_compressions(self) -> None:
        pending = []
        for future in self._compressions:
            if not future.done():
                pending.append(future)
            elif future.exception() is not None:
                _log.error("file_sink_gzip_failed", error=repr(future.exception()))
        self._compressions = pending

    def close(self) -> None:
        if self._fh is not None:
            try:
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
                self._fh = None
        if self._compressor is not None:
            self._compressor.shutdown(wait=True)
            self._compressor = None
            self._reap_compressions()


def _truncate_torn_tail(path: Path) -> None:
    """Cut the end of the file back to its last newline (a write torn by a crash)."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        pos = size
        block = 64 * 1024
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                end = start + nl + 1
                if end != size:
                    _log.warning("file_sink_torn_line_removed", path=str(path), bytes=size - end)
                    fh.truncate(end)
                return
            pos = start
        _log.warning("file_sink_torn_line_removed", path=str(path), bytes=size)
        fh.truncate(0)


def _scan_records(path: Path, offset: int) -> Iterator[tuple[str, str, int, Mark | None]]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        for line in fh:
            try:
                doc = json.loads(line)
                end = None
                if "end_ts" in doc:
                    end = Mark(parse_docker_ts(doc["end_ts"].encode()), int(doc["end_seq"]))
                ts_ns = parse_docker_ts(doc["ts"].encode())
                yield doc["container_id"], doc["stream"], ts_ns, end
            except (ValueError, KeyError, TypeError, TimestampError) as exc:
                _log.warning("file_sink_unreadable_line", path=str(path), error=str(exc))


def _gzip_file(path: Path) -> None:
    tmp = path.with_name(path.name + ".gz.tmp")
    with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
    os.replace(tmp, path.with_name(path.name + ".gz"))
    path.unlink(missing_ok=True)
