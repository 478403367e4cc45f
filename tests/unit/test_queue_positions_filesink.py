"""The bounded queue, atomic positions, and the file sink's exactly-once recovery."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from log_capturer.discovery.container import ContainerInfo
from log_capturer.monitor.marks import Mark
from log_capturer.pipeline.queue import RecordQueue
from log_capturer.pipeline.record import LogRecord
from log_capturer.positions.store import PositionStore
from log_capturer.sinks.file import FileSink, FileSinkConfig
from log_capturer.timestamps import format_rfc3339_ns

INFO = ContainerInfo(id="c" * 64, name="web", image="img:1", labels={"a": "b"})
T0 = 1_795_000_000_000_000_000


def rec(ts_ns: int, seq: int = 1, msg: str = "m", stream: str = "stdout") -> LogRecord:
    return LogRecord(INFO, stream, ts_ns, seq, format_rfc3339_ns(ts_ns), msg)


def test_full_queue_blocks_until_there_is_room_and_never_drops() -> None:
    queue = RecordQueue(max_records=2, max_bytes=10**6)
    stop = threading.Event()
    assert queue.put("a", 1, stop) and queue.put("b", 1, stop)
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(queue.put("c", 1, stop)))
    producer.start()
    time.sleep(0.3)
    assert done == []  # blocked: backpressure
    assert queue.get_batch(10, 0, 0) == ["a", "b"]
    producer.join(2)
    assert done == [True]
    assert queue.get_batch(10, 0, 0) == ["c"]


def test_queue_byte_bound_admits_one_oversized_item_and_stop_unblocks() -> None:
    queue = RecordQueue(max_records=100, max_bytes=10)
    stop = threading.Event()
    assert queue.put("huge", 1000, stop)  # an empty queue always takes one item
    stop.set()
    assert queue.put("next", 5, stop) is False  # full, and asked to stop
    assert queue.get_batch(10, 0, 0) == ["huge"]


def test_drop_policy_drops_and_says_so() -> None:
    queue = RecordQueue(max_records=1, max_bytes=100, drop_newest=True)
    stop = threading.Event()
    assert queue.put("a", 1, stop)
    assert queue.put("b", 1, stop) is False
    assert queue.get_batch(10, 0, 0) == ["a"]


def test_positions_save_atomically_and_reload(tmp_path: Path) -> None:
    store = PositionStore(tmp_path / "p" / "positions.json")
    store.ack([rec(T0, 1), rec(T0, 2), rec(T0 + 5, 1, stream="stderr")])
    assert store.save({"file": {"offset": 3}})
    assert not store.save({})  # nothing changed
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["positions.json"]  # no temp files
    again = PositionStore(tmp_path / "p" / "positions.json")
    saved = again.load()
    assert saved.marks == {INFO.id: {"stdout": Mark(T0, 2), "stderr": Mark(T0 + 5, 1)}}
    assert saved.sinks == {"file": {"offset": 3}}
    assert saved.names[INFO.id] == "web"
    again.prune([INFO.id])
    again.save({})
    assert PositionStore(tmp_path / "p" / "positions.json").load().marks == {}


def test_corrupt_positions_are_set_aside_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    path.write_text("{not json")
    assert PositionStore(path).load().marks == {}
    assert not path.exists()
    assert len(list(tmp_path.glob("positions.json.corrupt-*"))) == 1


def sink_at(tmp_path: Path, **kw: object) -> FileSink:
    return FileSink(FileSinkConfig(path=str(tmp_path / "logs.jsonl"), **kw))  # type: ignore[arg-type]


def test_file_sink_recovers_what_it_wrote_after_the_checkpoint(tmp_path: Path) -> None:
    """Crash between a write and the positions save: nothing written twice after restart."""
    sink = sink_at(tmp_path)
    sink.write([rec(T0, 1, "a"), rec(T0, 2, "b")])
    state = sink.checkpoint()
    acked = {INFO.id: {"stdout": Mark(T0, 2)}}
    sink.write([rec(T0, 3, "c"), rec(T0 + 1, 1, "d")])  # then: kill -9 before the save
    sink._fh.close()  # type: ignore[union-attr]  # (the process died)
    with open(tmp_path / "logs.jsonl", "ab") as fh:
        fh.write(b'{"ts": "torn')  # a write cut by the crash

    restarted = sink_at(tmp_path)
    marks = restarted.recover(acked, state)
    assert marks[INFO.id]["stdout"] == Mark(T0 + 1, 1)
    # The engine re-sends from the acknowledged position; only the new line is written.
    restarted.write([rec(T0, 3, "c"), rec(T0 + 1, 1, "d"), rec(T0 + 2, 1, "e")])
    restarted.close()
    lines = [json.loads(x) for x in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert [x["message"] for x in lines] == ["a", "b", "c", "d", "e"]


def test_file_sink_recovers_when_the_checkpoint_predates_the_file(tmp_path: Path) -> None:
    sink = sink_at(tmp_path)
    state = sink.checkpoint()
    assert state == {"path": str(tmp_path / "logs.jsonl"), "inode": None, "offset": 0}
    sink.write([rec(T0, 1, "first")])
    sink.close()
    marks = sink_at(tmp_path).recover({}, state)
    assert marks == {INFO.id: {"stdout": Mark(T0, 1)}}


def test_file_sink_rotates_only_after_a_checkpoint_and_keeps_max_files(tmp_path: Path) -> None:
    sink = sink_at(tmp_path, max_bytes=200, max_files=2, compress=True)
    for n in range(12):
        if sink.wants_checkpoint():
            sink.checkpoint()
        sink.write([rec(T0 + n, 1, "x" * 100)])
    sink.close()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "logs.jsonl")
    assert len(rotated) == 2 and all(name.endswith(".gz") for name in rotated)
    assert os.path.getsize(tmp_path / "logs.jsonl") > 0


def test_file_sink_record_format(tmp_path: Path) -> None:
    sink = sink_at(tmp_path)
    info = ContainerInfo(
        id="d" * 64,
        name="api",
        image="shop/api:2",
        labels={"com.docker.compose.service": "api", "com.docker.compose.project": "shop"},
    )
    record = LogRecord(
        info, "stderr", T0, 1, format_rfc3339_ns(T0), "bad \ufffd utf8", truncated=True
    )
    sink.write([record])
    sink.close()
    doc = json.loads((tmp_path / "logs.jsonl").read_text())
    assert doc == {
        "ts": format_rfc3339_ns(T0),
        "container_id": "d" * 64,
        "container_name": "api",
        "image": "shop/api:2",
        "stream": "stderr",
        "message": "bad \ufffd utf8",
        "labels": info.labels,
        "compose_service": "api",
        "compose_project": "shop",
        "truncated": True,
    }
