"""The bounded queue, the ledger of positions, and the file sink's exactly-once recovery."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from log_capturer.discovery.container import ContainerInfo
from log_capturer.pipeline.batch import LAG_SAMPLES, Batch, LineBatch
from log_capturer.pipeline.queue import BatchQueue
from log_capturer.positions.ledger import Ledger, Life, MonitorEnd
from log_capturer.positions.marks import ZERO, Mark
from log_capturer.sinks.base import observe_delivered
from log_capturer.sinks.file import FileSink, FileSinkConfig
from log_capturer.timestamps import format_rfc3339_ns
from tests.unit.batches import line_batch

INFO = ContainerInfo(id="c" * 64, name="web", image="img:1", labels={"a": "b"})
T0 = 1_795_000_000_000_000_000


def batch(*lines: tuple[int, int, str], stream: str = "stdout") -> LineBatch:
    """Lines ``(ts_ns, seq, message)`` of one stream."""
    return line_batch(INFO, [(stream, ts, m) for ts, _, m in lines], [s for _, s, _ in lines])


def wait_until(predicate: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_full_queue_blocks_until_there_is_room_and_never_drops() -> None:
    queue = BatchQueue(max_records=2, max_bytes=10**6)
    stop = threading.Event()
    a, b, c = batch((T0, 1, "a")), batch((T0, 2, "b")), batch((T0, 3, "c"))
    assert queue.put(a, stop) and queue.put(b, stop)
    done: list[bool] = []
    producer = threading.Thread(target=lambda: done.append(queue.put(c, stop)))
    producer.start()
    # blocked (backpressure) for as long as nothing is taken: the metric says it waits
    wait_until(lambda: producer.is_alive() and len(queue) == 2, "the producer to block")
    assert done == []
    assert queue.get(10, 0, 0) == [a, b]
    producer.join(10)
    assert done == [True]
    assert queue.get(10, 0, 0) == [c]


def test_queue_counts_lines_and_hands_over_whole_batches() -> None:
    queue = BatchQueue(max_records=100, max_bytes=10**6)
    stop = threading.Event()
    big = batch(*((T0 + i, 1, "x") for i in range(5)))
    small = batch((T0 + 9, 1, "y"))
    assert queue.put(big, stop) and queue.put(small, stop)
    assert len(queue) == 6
    assert queue.get(3, 0, 0) == [big]  # at least one batch, however many lines
    assert queue.get(3, 0, 0) == [small]


def test_queue_byte_bound_admits_one_oversized_batch_and_stop_unblocks() -> None:
    queue = BatchQueue(max_records=100, max_bytes=10)
    stop = threading.Event()
    huge = batch((T0, 1, "h" * 1000))
    assert queue.put(huge, stop)  # an empty queue always takes one batch
    stop.set()
    assert queue.put(batch((T0 + 1, 1, "next")), stop) is False  # full, and asked to stop
    assert queue.get(10, 0, 0) == [huge]


def test_drop_policy_drops_and_says_so() -> None:
    queue = BatchQueue(max_records=1, max_bytes=100, drop_newest=True)
    stop = threading.Event()
    a = batch((T0, 1, "a"))
    assert queue.put(a, stop)
    assert queue.put(batch((T0, 2, "b")), stop) is False
    assert queue.get(10, 0, 0) == [a]


LOUD = ContainerInfo(id="l" * 64, name="loud", image="img:1")
QUIET = ContainerInfo(id="q" * 64, name="quiet", image="img:1")


def lines_of(info: ContainerInfo, first: int, count: int) -> LineBatch:
    return line_batch(
        info, [("stdout", T0 + first + i, f"{info.name} {first + i}") for i in range(count)]
    )


def test_a_quiet_batch_goes_with_the_next_delivery_however_much_a_loud_one_queued() -> None:
    queue = BatchQueue(max_records=1000, max_bytes=10**6)
    stop = threading.Event()
    loud = [lines_of(LOUD, 10 * i, 10) for i in range(20)]  # a backlog: 200 lines
    for b in loud:
        assert queue.put(b, stop)
    quiet = lines_of(QUIET, 0, 1)
    assert queue.put(quiet, stop)
    assert queue.get(30, 0, 0) == [loud[0], quiet, loud[1]]  # not three loud ones first
    taken: list[Batch] = []
    while len(queue):
        taken += queue.get(30, 0, 0)
    assert taken == loud[2:]  # a container's batches keep their order


def test_containers_take_turns_when_their_batches_do_not_all_fit() -> None:
    queue = BatchQueue(max_records=1000, max_bytes=10**6)
    stop = threading.Event()
    a = [lines_of(LOUD, 10 * i, 5) for i in range(3)]
    b = [lines_of(QUIET, 10 * i, 5) for i in range(3)]
    for batch_ in a + b:  # all of a's first
        assert queue.put(batch_, stop)
    # Each delivery fits one batch: the container not served goes first next time.
    assert [queue.get(7, 0, 0) for _ in range(6)] == [
        [a[0]],
        [b[0]],
        [a[1]],
        [b[1]],
        [a[2]],
        [b[2]],
    ]


def test_a_container_with_lines_queued_leaves_room_for_the_others() -> None:
    queue = BatchQueue(max_records=16, max_bytes=10**6)
    stop = threading.Event()
    stop.set()  # put() returns False instead of waiting for room
    assert queue.put(lines_of(LOUD, 0, 10), stop)  # an empty queue takes any batch
    assert queue.put(lines_of(LOUD, 10, 4), stop)  # 14 of the 14 it may fill
    assert not queue.put(lines_of(LOUD, 20, 1), stop)  # the reserve is not for it
    assert queue.put(lines_of(QUIET, 0, 2), stop)  # a container with nothing queued
    assert not queue.put(lines_of(QUIET, 2, 1), stop)  # the queue is full: 16 lines


def test_the_fill_wait_counts_from_the_oldest_queued_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch queued while the dispatcher was busy has waited already: the next get()
    takes it at once instead of waiting ``max_wait`` more for company."""
    import log_capturer.pipeline.queue as queue_module

    clock = [1000.0]
    monkeypatch.setattr(queue_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    queue = BatchQueue(max_records=1000, max_bytes=10**6)
    first = lines_of(QUIET, 0, 1)
    assert queue.put(first, threading.Event())
    clock[0] += 3600  # the dispatcher was busy for an hour (the fill wait is an hour too)
    got: list[list[Batch]] = []
    taker = threading.Thread(target=lambda: got.append(queue.get(500, 3600.0, 0.0)), daemon=True)
    taker.start()
    taker.join(10)
    assert got == [[first]]


def test_positions_save_atomically_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "p" / "positions.json"
    ledger = Ledger(str(path))
    ledger.load([])
    position = ledger.begin_reading(INFO, ("stdout", "stderr"), start_now=False)
    assert position is not None and position.read == {"stdout": ZERO, "stderr": ZERO}
    ledger.acknowledge(
        [batch((T0, 1, "a"), (T0, 2, "b")), batch((T0 + 5, 1, "c"), stream="stderr")]
    )
    assert ledger.save({"file": {"offset": 3}})
    assert not ledger.save({})  # nothing changed
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["positions.json"]  # no temp files
    again = Ledger(str(path))
    saved = again.file.load()
    assert saved.marks == {INFO.id: {"stdout": Mark(T0, 2), "stderr": Mark(T0 + 5, 1)}}
    assert saved.sinks == {"file": {"offset": 3}}
    assert saved.names[INFO.id] == "web"
    again.load([])
    assert again.unfinished(INFO.id)  # known from the file, not read yet: the rest is due
    reopened = again.begin_reading(INFO, ("stdout", "stderr"), start_now=False)
    assert reopened is not None
    assert reopened.read == {"stdout": Mark(T0, 2), "stderr": Mark(T0 + 5, 1)}
    again.end_reading(INFO.id, MonitorEnd.STOPPED, "")
    again.destroyed(INFO.id)
    again.save({})
    assert Ledger(str(path)).file.load().marks == {}


def test_ledger_life_finished_runs_and_destroy_while_reading(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "positions.json"))
    stopped = ContainerInfo(INFO.id, INFO.name, INFO.image, started_at="run-1")
    position = ledger.begin_reading(stopped, ("stdout",), start_now=False)
    assert position is not None and position.life is Life.READING
    ledger.end_reading(INFO.id, MonitorEnd.EXITED, "run-1")
    assert ledger.begin_reading(stopped, ("stdout",), start_now=False) is None  # read to its end
    restarted = ContainerInfo(INFO.id, INFO.name, INFO.image, running=True, started_at="run-2")
    again = ledger.begin_reading(restarted, ("stdout",), start_now=False)
    assert again is not None  # a new run is read
    ledger.destroyed(INFO.id)  # while its monitor reads: forgotten when it ends
    assert INFO.id in ledger.container_ids()
    ledger.end_reading(INFO.id, MonitorEnd.STOPPED, "run-2")
    assert ledger.container_ids() == []
    ledger.acknowledge([batch((T0, 1, "late"))])  # a late batch does not bring it back
    assert ledger.delivered(INFO.id) is None


def test_start_from_now_is_saved_at_once(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path / "positions.json"))
    position = ledger.begin_reading(INFO, ("stdout",), start_now=True)
    assert position is not None and position.read["stdout"].ts_ns > 0
    assert ledger.save({})
    assert ledger.file.load().marks == {INFO.id: position.read}


def test_corrupt_positions_are_set_aside_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    path.write_text("{not json")
    assert Ledger(str(path)).file.load().marks == {}
    assert not path.exists()
    assert len(list(tmp_path.glob("positions.json.corrupt-*"))) == 1


def sink_at(tmp_path: Path, **kw: object) -> FileSink:
    return FileSink(FileSinkConfig(path=str(tmp_path / "logs.jsonl"), **kw))  # type: ignore[arg-type]


def test_file_sink_recovers_what_it_wrote_after_the_checkpoint(tmp_path: Path) -> None:
    """Crash between a write and the positions save: nothing written twice after restart."""
    sink = sink_at(tmp_path)
    sink.write([batch((T0, 1, "a"), (T0, 2, "b"))])
    state = sink.checkpoint()
    acked = {INFO.id: {"stdout": Mark(T0, 2)}}
    sink.write([batch((T0, 3, "c"), (T0 + 1, 1, "d"))])  # then: kill -9 before the save
    sink._fh.close()  # type: ignore[union-attr]  # (the process died)
    with open(tmp_path / "logs.jsonl", "ab") as fh:
        fh.write(b'{"ts": "torn')  # a write cut by the crash

    restarted = sink_at(tmp_path)
    marks = restarted.recover(acked, state)
    assert marks[INFO.id]["stdout"] == Mark(T0 + 1, 1)
    # The engine re-sends from the acknowledged position; only the new line is written.
    restarted.write([batch((T0, 3, "c"), (T0 + 1, 1, "d"), (T0 + 2, 1, "e"))])
    restarted.close()
    lines = [json.loads(x) for x in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert [x["message"] for x in lines] == ["a", "b", "c", "d", "e"]


def test_file_sink_recovers_when_the_checkpoint_predates_the_file(tmp_path: Path) -> None:
    sink = sink_at(tmp_path)
    state = sink.checkpoint()
    assert state == {"path": str(tmp_path / "logs.jsonl"), "inode": None, "offset": 0}
    sink.write([batch((T0, 1, "first"))])
    sink.close()
    marks = sink_at(tmp_path).recover({}, state)
    assert marks == {INFO.id: {"stdout": Mark(T0, 1)}}


def test_file_sink_rotates_only_after_a_checkpoint_and_keeps_max_files(tmp_path: Path) -> None:
    sink = sink_at(tmp_path, max_bytes=200, max_files=2, compress=True)
    for n in range(12):
        if sink.wants_checkpoint():
            sink.checkpoint()
        sink.write([batch((T0 + n, 1, "x" * 100))])
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
        host="node-1",
    )
    sink.write([line_batch(info, [("stderr", T0, b"bad \xff utf8")], truncated=[True])])
    sink.close()
    doc = json.loads((tmp_path / "logs.jsonl").read_text())
    assert doc == {
        "ts": format_rfc3339_ns(T0),
        "host": "node-1",
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


def test_file_sink_record_of_a_swarm_task(tmp_path: Path) -> None:
    """A Swarm task's service and stack, from the labels Swarm and ``docker stack deploy``
    set; the task's ids stay in labels only."""
    sink = sink_at(tmp_path)
    labels = {
        "com.docker.swarm.service.name": "shop_api",
        "com.docker.stack.namespace": "shop",
        "com.docker.swarm.task.id": "t" * 25,
    }
    info = ContainerInfo(id="d" * 64, name="shop_api.1." + "t" * 25, image="shop/api:2",
                         labels=labels, host="node-1")
    sink.write([line_batch(info, [("stdout", T0, b"up")])])
    sink.close()
    text = (tmp_path / "logs.jsonl").read_text()
    assert json.loads(text) == {
        "ts": format_rfc3339_ns(T0),
        "host": "node-1",
        "container_id": "d" * 64,
        "container_name": info.name,
        "image": "shop/api:2",
        "stream": "stdout",
        "message": "up",
        "labels": labels,
        "swarm_service": "shop_api",
        "swarm_stack": "shop",
    }
    assert text.startswith(f'{{"ts":"{format_rfc3339_ns(T0)}","host":"node-1",')


def test_delivery_lag_is_observed_on_a_few_lines_spread_over_the_delivery() -> None:
    """Up to about LAG_SAMPLES lines of a delivery, whatever its batches: 20 per batch
    cost a fifth of the dispatcher's time in a backlog (reads of ~270 lines)."""
    def observed(sink: str) -> float:
        value = REGISTRY.get_sample_value(
            "log_capturer_delivery_lag_seconds_count", {"sink": sink}
        )
        return value or 0.0

    # 37 batches of 270 lines, each line 1 ms after the one before it.
    batches = [
        batch(*((T0 + (b * 270 + i) * 1_000_000, 1, "m") for i in range(270)))
        for b in range(37)
    ]
    observe_delivered("lag-test", batches)
    assert LAG_SAMPLES <= observed("lag-test") <= LAG_SAMPLES + 1  # not 20 per batch
    # Spread: the lags' sum is that of lines evenly spaced over the whole delivery.
    total = REGISTRY.get_sample_value("log_capturer_delivery_lag_seconds_sum", {"sink": "lag-test"})
    assert total is not None
    lags = total / observed("lag-test")
    newest = (T0 + 37 * 270 * 1_000_000) / 1e9
    mean_age = time.time() - newest  # the mean lag if every sample were the newest line
    assert lags - mean_age > 3  # the samples reach back over the delivery's 10 s
    small = [batch((T0 + i, 1, "m")) for i in range(5)]
    observe_delivered("lag-small", small)
    assert observed("lag-small") == 5  # a small delivery: every line
