"""DiskSpool: FIFO order, durability across reopen, bound, corruption, locking."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from log_capturer.sinks.network.spool import (
    DiskSpool,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
)

HEADER = 20  # magic, crc32, records, length


def gauge(name: str, sink: str) -> float:
    value = REGISTRY.get_sample_value(name, {"sink": sink})
    return 0.0 if value is None else value


def drain(spool: DiskSpool) -> list[tuple[bytes, int]]:
    out = []
    while (entry := spool.peek()) is not None:
        out.append((entry.data, entry.records))
        spool.remove(entry)
    return out


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".seg"))


def test_entries_come_back_in_append_order_and_metrics_follow(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-order")
    try:
        assert spool.empty and spool.peek() is None
        spool.append([(b"one", 1), (b"two", 2)])
        spool.append([(b"three", 3)])
        assert len(spool) == 3 and spool.records == 6
        assert spool.used_bytes == 3 * HEADER + len(b"onetwothree")
        assert gauge("log_capturer_spool_records", "t-order") == 6
        assert gauge("log_capturer_spool_bytes", "t-order") == spool.used_bytes
        assert gauge("log_capturer_spool_capacity_bytes", "t-order") == 10_000
        head = spool.peek()
        assert head is not None and spool.peek() == head  # peek does not consume
        assert drain(spool) == [(b"one", 1), (b"two", 2), (b"three", 3)]
        assert spool.empty and spool.used_bytes == 0 and segments(tmp_path) == []
        assert gauge("log_capturer_spool_records", "t-order") == 0
        assert gauge("log_capturer_spool_bytes", "t-order") == 0
    finally:
        spool.close()


def test_survives_reopen_and_continues_the_sequence(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-reopen")
    spool.append([(b"a", 1), (b"b", 1), (b"c", 5)])
    first = spool.peek()
    assert first is not None
    spool.remove(first)
    spool.close()

    again = DiskSpool(tmp_path, 10_000, "t-reopen")
    try:
        assert again.records == 6 and len(again) == 2
        assert gauge("log_capturer_spool_records", "t-reopen") == 6
        again.append([(b"d", 1)])
        assert drain(again) == [(b"b", 1), (b"c", 5), (b"d", 1)]
    finally:
        again.close()


def test_half_written_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-temp")
    spool.append([(b"kept", 1)])
    spool.close()
    (tmp_path / "00000000000000000002.seg.tmp").write_bytes(b"LCSP torn")
    again = DiskSpool(tmp_path, 10_000, "t-temp")
    try:
        assert not list(tmp_path.glob("*.tmp"))
        assert drain(again) == [(b"kept", 1)]
    finally:
        again.close()


def test_a_failed_write_leaves_no_entry_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-fail")
    try:
        def broken_replace(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", broken_replace)
        with pytest.raises(SpoolError, match="No space left"):
            spool.append([(b"x", 1)])
        monkeypatch.undo()
        assert spool.empty and spool.records == 0
        assert list(tmp_path.glob("*.seg*")) == []
        spool.append([(b"y", 1)])  # the sequence is still usable
        assert drain(spool) == [(b"y", 1)]
    finally:
        spool.close()


def test_append_is_durable_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payload is fsynced before the rename, and the directory after it."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("rename")
        real_replace(src, dst)

    spool = DiskSpool(tmp_path, 10_000, "t-durable")
    try:
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        spool.append([(b"payload", 1)])
        assert events == ["fsync-file", "rename", "fsync-dir"]
    finally:
        spool.close()


def test_full_spool_raises_and_stores_nothing_of_the_append(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 3 * (HEADER + 100), "t-full")
    try:
        spool.append([(b"x" * 100, 1), (b"x" * 100, 1)])
        with pytest.raises(SpoolFullError):
            spool.append([(b"y" * 100, 1), (b"y" * 100, 1)])  # only one would fit
        assert spool.records == 2 and len(segments(tmp_path)) == 2
        spool.append([(b"z" * 100, 1)])  # exactly at capacity
        with pytest.raises(SpoolFullError):
            spool.append([(b"!", 1)])
        head = spool.peek()
        assert head is not None
        spool.remove(head)
        spool.append([(b"w" * 100, 1)])  # space freed by remove is reusable
        assert [d[:1] for d, _ in drain(spool)] == [b"x", b"z", b"w"]
    finally:
        spool.close()


def test_an_entry_larger_than_the_spool_never_fits(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 50, "t-huge")
    try:
        with pytest.raises(SpoolFullError):
            spool.append([(b"x" * 100, 1)])
        assert spool.empty
    finally:
        spool.close()


def test_corrupt_entries_are_set_aside_counted_and_skipped(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-corrupt")
    spool.append([(b"first", 1), (b"second", 1), (b"third", 1)])
    spool.close()
    names = segments(tmp_path)
    data = bytearray((tmp_path / names[0]).read_bytes())
    data[-1] ^= 0xFF  # bit rot in the payload: checksum mismatch
    (tmp_path / names[0]).write_bytes(bytes(data))
    (tmp_path / names[1]).write_bytes(b"LCSP")  # torn header: found at start

    before = gauge("log_capturer_spool_corrupt_entries_total", "t-corrupt")
    again = DiskSpool(tmp_path, 10_000, "t-corrupt")
    try:
        assert len(again) == 2  # the torn one is out at load
        assert drain(again) == [(b"third", 1)]
        assert gauge("log_capturer_spool_corrupt_entries_total", "t-corrupt") == before + 2
        assert sorted(p.name for p in tmp_path.glob("*.corrupt")) == [
            names[0] + ".corrupt", names[1] + ".corrupt"
        ]
        assert again.used_bytes == 0 and again.records == 0
    finally:
        again.close()


def test_only_the_oldest_entry_can_be_removed(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-head")
    try:
        spool.append([(b"a", 1)])
        head = spool.peek()
        assert head is not None
        spool.remove(head)
        spool.append([(b"b", 1)])
        with pytest.raises(SpoolError, match="not the oldest"):
            spool.remove(head)  # already removed: must not delete "b"
        assert drain(spool) == [(b"b", 1)]
    finally:
        spool.close()


def test_a_directory_has_one_owner_at_a_time(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000, "t-lock")
    with pytest.raises(SpoolLockedError):
        DiskSpool(tmp_path, 10_000, "t-lock")
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.append([(b"late", 1)])
    DiskSpool(tmp_path, 10_000, "t-lock").close()  # free again after close
