"""A full disk under the file sink, the positions file and the spool.

On a real (small) tmpfs where the fault is a real ENOSPC; with an injected fault only
where a real file system cannot fail on demand (a truncate or an fsync that fails).
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY

from log_capturer.discovery.container import ContainerInfo
from log_capturer.pipeline.batch import Batch, RecordBatch
from log_capturer.pipeline.config import PipelineConfig
from log_capturer.pipeline.dispatcher import Dispatcher
from log_capturer.pipeline.queue import BatchQueue
from log_capturer.pipeline.record import LogRecord
from log_capturer.positions.ledger import Ledger
from log_capturer.positions.marks import Mark
from log_capturer.sinks.base import Sink, SinkError
from log_capturer.sinks.file import FileSink, FileSinkConfig
from log_capturer.sinks.network.spool import DiskSpool, SpoolError
from log_capturer.timestamps import format_rfc3339_ns
from tests.tmpfs import fill, free_bytes, small_tmpfs

INFO = ContainerInfo(id="c" * 64, name="web", image="img:1", labels={"a": "b"})
T0 = 1_795_000_000_000_000_000
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def rec(n: int, size: int = 400) -> LogRecord:
    """Record ``n``: its own timestamp, a message of about ``size`` bytes."""
    return LogRecord(INFO, "stdout", T0 + n, 1, format_rfc3339_ns(T0 + n), f"{n} " + "x" * size)


def batch(first: int, count: int) -> list[Batch]:
    """Records ``first`` .. as the dispatcher hands them to a sink (a batch)."""
    return RecordBatch.group([rec(n) for n in range(first, first + count)])


def joined(buffers: Any) -> bytes:
    """What one writev would write: its buffers, in order."""
    return b"".join(bytes(b) for b in buffers)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def messages(path: Path) -> list[int]:
    """The record numbers in the file; every line must be one whole JSON record."""
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), f"partial record at the end: {raw[-80:]!r}"
    return [int(json.loads(line)["message"].split()[0]) for line in raw.splitlines()]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", 256 * 1024) as mount_point:
        yield mount_point


def sink_at(directory: Path, **kw: Any) -> FileSink:
    return FileSink(FileSinkConfig(path=str(directory / "logs.jsonl"), **kw))


# -- the file sink -----------------------------------------------------------------------


def test_a_batch_the_disk_cannot_hold_leaves_nothing_and_the_retry_writes_it_once(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_at(disk)
    sink.write(batch(1, 10))
    before = (disk / "logs.jsonl").read_bytes()
    filler = fill(disk, leave=8 * 1024)
    short_writes: list[tuple[int, int]] = []
    real_writev = os.writev

    def spy(fd: int, buffers: Any) -> int:
        written = real_writev(fd, buffers)
        if written < len(joined(buffers)):
            short_writes.append((written, len(joined(buffers))))
        return written

    monkeypatch.setattr(os, "writev", spy)
    errors = sample("log_capturer_file_sink_write_errors_total", errno="ENOSPC")
    big = batch(11, 100)  # ~50 KB: part of it fits, the rest does not
    for _ in range(2):
        with pytest.raises(SinkError, match="No space left on device"):
            sink.write(big)
        assert (disk / "logs.jsonl").read_bytes() == before  # not a byte of it stays
    assert short_writes, "the disk never took part of a write: the case was not reached"
    assert sample("log_capturer_file_sink_write_errors_total", errno="ENOSPC") == errors + 2
    assert sample("log_capturer_sink_up", sink="file") == 0

    filler.unlink()  # the space comes back
    sink.write(big)
    assert sample("log_capturer_sink_up", sink="file") == 1
    sink.write(batch(111, 5))
    state = sink.checkpoint()
    sink.close()
    assert messages(disk / "logs.jsonl") == list(range(1, 116))
    assert state["offset"] == (disk / "logs.jsonl").stat().st_size


def test_a_failed_cut_back_is_retried_before_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected: a write the disk takes half of, then a truncate that fails once."""
    sink = sink_at(tmp_path)
    sink.write(batch(1, 3))
    real_write, real_ftruncate = os.write, os.ftruncate
    faults = {"write": 1, "ftruncate": 1}

    def half_then_full(fd: int, buffers: Any) -> int:
        data = joined(buffers)
        if faults["write"] == 1:
            faults["write"] = 2
            return real_write(fd, data[: len(data) // 2])
        if faults["write"] == 2:
            faults["write"] = 0
            raise ENOSPC
        return real_write(fd, data)

    def ftruncate_once(fd: int, size: int) -> None:
        if faults["ftruncate"]:
            faults["ftruncate"] = 0
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_ftruncate(fd, size)

    monkeypatch.setattr(os, "writev", half_then_full)
    monkeypatch.setattr(os, "ftruncate", ftruncate_once)
    with structlog.testing.capture_logs() as logs, pytest.raises(SinkError, match="No space"):
        sink.write(batch(4, 3))
    assert [e["event"] for e in logs] == ["file_sink_cut_back_failed"]
    assert not (tmp_path / "logs.jsonl").read_bytes().endswith(b"\n")  # torn, for now
    sink.write(batch(4, 3))  # the retry cuts the torn part off first
    sink.close()
    assert messages(tmp_path / "logs.jsonl") == [1, 2, 3, 4, 5, 6]


def test_a_crash_after_a_failed_cut_back_is_repaired_at_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_at(tmp_path)
    sink.write(batch(1, 3))
    state = sink.checkpoint()
    acked = {INFO.id: {"stdout": Mark(T0 + 3, 1)}}
    sink.write(batch(4, 2))  # after the checkpoint, before the crash
    real_write = os.write

    def torn(fd: int, buffers: Any) -> int:
        real_write(fd, joined(buffers)[:30])
        raise ENOSPC

    monkeypatch.setattr(os, "writev", torn)
    monkeypatch.setattr(os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(ENOSPC))
    with pytest.raises(SinkError):
        sink.write(batch(6, 2))
    monkeypatch.undo()
    assert sink._fh is not None
    sink._fh.close()  # the process died here

    restarted = sink_at(tmp_path)
    with structlog.testing.capture_logs() as logs:
        marks = restarted.recover(acked, state)
    assert "file_sink_torn_line_removed" in [e["event"] for e in logs]
    assert marks[INFO.id]["stdout"] == Mark(T0 + 5, 1)
    restarted.write(batch(4, 4))  # the engine re-sends from the acknowledged position
    restarted.close()
    assert messages(tmp_path / "logs.jsonl") == [1, 2, 3, 4, 5, 6, 7]


def test_a_failed_write_after_a_copytruncate_does_not_extend_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate's copytruncate empties the file under the open sink: undoing a failed
    write must cut back to where that write began, not to the size the sink last saw."""
    sink = sink_at(tmp_path)
    sink.write(batch(1, 20))
    os.truncate(tmp_path / "logs.jsonl", 0)  # copytruncate
    real_write = os.write

    def half_then_full(fd: int, buffers: Any) -> int:
        monkeypatch.setattr(os, "writev", lambda fd, buffers: (_ for _ in ()).throw(ENOSPC))
        data = joined(buffers)
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "writev", half_then_full)
    with pytest.raises(SinkError):
        sink.write(batch(21, 2))
    assert (tmp_path / "logs.jsonl").read_bytes() == b""  # no hole of NULs, no torn part
    monkeypatch.undo()
    sink.write(batch(21, 2))
    sink.close()
    assert messages(tmp_path / "logs.jsonl") == [21, 22]


def test_a_failed_fsync_leaves_nothing_of_the_batch_for_the_retry_to_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = sink_at(tmp_path, fsync="batch")
    sink.write(batch(1, 2))

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(SinkError, match="Input/output error"):
        sink.write(batch(3, 2))
    monkeypatch.undo()
    sink.write(batch(3, 2))
    sink.close()
    assert messages(tmp_path / "logs.jsonl") == [1, 2, 3, 4]


# -- positions and spool -----------------------------------------------------------------


def test_positions_on_a_full_disk_keep_the_previous_file_and_save_later(disk: Path) -> None:
    path = disk / "positions.json"
    store = Ledger(str(path))
    assert store.begin_reading(INFO, ("stdout",), start_now=False) is not None
    store.acknowledge(batch(1, 1))
    assert store.save({"file": {"offset": 1}})
    saved = path.read_bytes()
    filler = fill(disk)
    store.acknowledge(batch(2, 1))
    errors = sample("log_capturer_position_saves_total", result="error")
    with pytest.raises(OSError, match="No space left"):
        store.save({"file": {"offset": 2}})
    assert path.read_bytes() == saved
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "positions.json"]  # no temp
    assert store.file.load().marks == {INFO.id: {"stdout": Mark(T0 + 1, 1)}}
    assert sample("log_capturer_position_saves_total", result="error") == errors + 1
    assert store.dirty  # tried again at the next flush
    filler.unlink()
    assert store.save({"file": {"offset": 2}})
    assert store.file.load().marks == {INFO.id: {"stdout": Mark(T0 + 2, 1)}}


def test_the_spool_on_a_full_disk_refuses_cleanly_and_keeps_its_entries(disk: Path) -> None:
    spool = DiskSpool(disk / "spool", 10**6, "t-full-disk")
    try:
        spool.append([(b"first", 1)])
        filler = fill(disk)
        with pytest.raises(SpoolError, match="No space left"):
            spool.append([(b"y" * 20_000, 3)])
        assert spool.records == 1
        assert [p.name for p in (disk / "spool").iterdir() if p.name.endswith(".tmp")] == []
        filler.unlink()
        spool.append([(b"second", 1)])
        out = []
        while (entry := spool.peek()) is not None:
            out.append(entry.data)
            spool.remove(entry)
        assert out == [b"first", b"second"]
    finally:
        spool.close()


# -- the dispatcher ----------------------------------------------------------------------


class MemorySink(Sink):
    name = "memory"

    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def write(self, batches: list[Batch]) -> None:
        for batch in batches:
            self.records.extend(batch.records())


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_dispatcher_outlives_positions_it_cannot_save(disk: Path) -> None:
    """Positions on the full disk: delivery goes on, one warning, saved once there is room."""
    queue = BatchQueue(1000, 10**6)
    sink = MemorySink()
    positions = Ledger(str(disk / "positions.json"))
    assert positions.begin_reading(INFO, ("stdout",), start_now=False) is not None
    dispatcher = Dispatcher(queue, [sink], positions, PipelineConfig(batch_wait=0.01), 0.02)
    filler = fill(disk)
    assert free_bytes(disk) == 0
    stop = threading.Event()
    def save_errors() -> float:
        return sample("log_capturer_position_saves_total", result="error")

    errors = save_errors()
    with structlog.testing.capture_logs() as logs:
        dispatcher.start()
        try:
            for n in range(1, 6):
                (one,) = batch(n, 1)
                assert queue.put(one, stop)
            wait_for(lambda: len(sink.records) == 5)
            # Saves every 20 ms: wait for a few to fail.
            wait_for(lambda: save_errors() > errors + 2)
            assert dispatcher.alive
            assert not (disk / "positions.json").exists()
            filler.unlink()
            wait_for(lambda: (disk / "positions.json").exists())
        finally:
            dispatcher.stop()
    events = [e["event"] for e in logs]
    assert events.count("checkpoint_failed") == 1 and "checkpoint_recovered" in events
    assert Ledger(str(disk / "positions.json")).file.load().marks == {
        INFO.id: {"stdout": Mark(T0 + 5, 1)}
    }


def test_a_short_writev_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery of several batches is one writev of their pieces; the kernel may take
    part of it (a signal, a pipe): the rest follows, from the byte where it stopped."""
    sink = sink_at(tmp_path)
    real_write = os.write
    calls: list[int] = []

    def stingy(fd: int, buffers: Any) -> int:
        data = joined(buffers)
        calls.append(len(buffers))
        return real_write(fd, data[: max(1, len(data) // 3)])  # a third at a time

    monkeypatch.setattr(os, "writev", stingy)
    sink.write([*batch(1, 3), *batch(4, 5), *batch(9, 2)])
    monkeypatch.undo()
    sink.close()
    assert messages(tmp_path / "logs.jsonl") == list(range(1, 11))
    assert calls[0] == 3 and len(calls) > 3  # three pieces, written in several calls
