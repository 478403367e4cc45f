"""Delivery to Loki through faults: real engine, real daemon, the fake Loki of tests/fake_loki.py.

Each test prints a line ``DELIVERY <case>: sent=… received=… lost=… duplicated=…
resent=…``: sent is what the containers wrote (the engine's own log), received the
distinct entries Loki stored, duplicated entries stored twice (Loki drops exact
duplicates, so this must be 0 even when the daemon re-sends), resent the entries that
reached Loki more than once over the wire (allowed: at-least-once).
"""

from __future__ import annotations

import gzip
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fake_loki import FakeLoki

from .harness import Containers, Daemon, assert_exactly_once, wait_for


@pytest.fixture
def loki() -> Iterator[FakeLoki]:
    fake = FakeLoki().start()
    yield fake
    fake.stop()


def loki_daemon(
    make_daemon: Callable[..., Daemon], loki: FakeLoki, file_sink: bool = False, **extra: Any
) -> Daemon:
    overrides: dict[str, Any] = {
        "sinks": {
            "file": {"enabled": file_sink},
            "loki": {
                "enabled": True,
                "url": loki.url,
                "host": "test-host",
                "retry_budget": "1s",
                "min_backoff": "100ms",
                "max_backoff": "1s",
                "timeout": "5s",
            },
        },
    }
    for key, value in extra.items():
        overrides[key] = value
    daemon = make_daemon(overrides)
    loki_cfg = daemon.config["sinks"]["loki"]
    loki_cfg["spool_dir"] = str(daemon.data / "spool")
    loki_cfg["dead_letter_path"] = str(daemon.data / "dead-letter.jsonl")
    return daemon


def wire_entries(loki: FakeLoki, container: str, stream: str) -> Counter[tuple[int, str]]:
    """Every (timestamp, line) that reached Loki in an accepted push, re-sends included."""
    seen: Counter[tuple[int, str]] = Counter()
    for request in loki.pushes():
        if request.status != 204:
            continue
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        for s in json.loads(body)["streams"]:
            labels = s["stream"]
            if labels.get("container_name") == container and labels.get("stream") == stream:
                for value in s["values"]:
                    seen[(int(value[0]), value[1])] += 1
    return seen


def audit(
    case: str, loki: FakeLoki, container: str, stream: str, expected: list[str]
) -> dict[str, int]:
    stored = loki.entries(container_name=container, stream=stream)
    lines = [e.line for e in sorted(stored, key=lambda e: e.ts_ns)]
    counts = Counter(lines)
    wire = wire_entries(loki, container, stream)
    result = {
        "sent": len(expected),
        "received": len(set(lines)),
        "lost": len(set(expected) - set(lines)),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "resent": sum(n - 1 for n in wire.values() if n > 1),
    }
    print(
        f"DELIVERY {case} {container}/{stream}: " + " ".join(f"{k}={v}" for k, v in result.items())
    )
    assert lines == expected, result
    return result


def paced(n: int, per_sleep: int, pause: str) -> str:
    return (
        f'i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "line $i"; '
        f"if [ $((i % {per_sleep})) -eq 0 ]; then sleep {pause}; fi; done"
    )


def numbered(n: int) -> list[str]:
    return [f"line {i}" for i in range(1, n + 1)]


def test_loki_down_30s_while_containers_keep_logging(
    make_daemon: Callable[..., Daemon], containers: Containers, loki: FakeLoki
) -> None:
    daemon = loki_daemon(make_daemon, loki).start()
    names = [f"steady{n}-{daemon.run_id}" for n in range(3)]
    running = [containers.run(paced(2000, 50, "1"), name=name) for name in names]  # ~40 s
    wait_for(lambda: loki.count() > 100, 30, what="first entries in Loki")
    loki.go_down()
    time.sleep(30)
    assert daemon.metric_sum("log_capturer_spool_records") > 0  # spooled meanwhile
    loki.come_up()
    for container in running:
        containers.wait_exit(container, timeout=120)
    wait_for(lambda: loki.count() >= 6000, 90, what="every line in Loki")
    time.sleep(2)
    for name in names:
        audit("loki-down-30s", loki, name, "stdout", numbered(2000))
    metrics = daemon.metrics()
    assert metrics.get('log_capturer_sink_batches_total{sink="loki",status="spooled"}', 0) > 0
    assert sum(v for k, v in metrics.items() if k.startswith("log_capturer_records_dropped")) == 0
    wait_for(lambda: daemon.metric_sum("log_capturer_spool_records") == 0, 30, what="empty spool")
    assert daemon.stop() == 0


def test_loki_down_across_a_daemon_restart_the_spool_replays(
    make_daemon: Callable[..., Daemon], containers: Containers, loki: FakeLoki
) -> None:
    loki.go_down()
    daemon = loki_daemon(make_daemon, loki)
    daemon.start(wait_ready=True)
    name = f"spooled-{daemon.run_id}"
    containers.wait_exit(containers.run(paced(600, 100, "0.2"), name=name))
    wait_for(lambda: daemon.metric_sum("log_capturer_spool_records") >= 600, 30, what="600 spooled")
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0  # Loki still down: the spool stays on disk
    assert time.monotonic() - started < 10
    assert list((daemon.data / "spool").iterdir())
    daemon.start()
    time.sleep(2)
    assert loki.count() == 0
    loki.come_up()
    wait_for(lambda: loki.count() >= 600, 60, what="the spool replayed")
    time.sleep(2)
    audit("loki-down-across-restart", loki, name, "stdout", numbered(600))
    assert daemon.stop() == 0


def test_sigkill_during_slow_batches_file_exactly_once_loki_exact(
    make_daemon: Callable[..., Daemon], containers: Containers, loki: FakeLoki
) -> None:
    loki.delay(0.3)  # every push takes a while: kills land mid-batch
    daemon = loki_daemon(make_daemon, loki, file_sink=True)
    daemon.start()
    name = f"killed-{daemon.run_id}"
    container = containers.run(paced(3000, 100, "0.2"), name=name)
    for _ in range(3):
        wait_for(lambda: len(daemon.records()) > 300, 30, what="records")
        time.sleep(1.1)
        daemon.kill()
        time.sleep(0.5)
        daemon.start()
    containers.wait_exit(container)
    wait_for(lambda: len(daemon.records()) >= 3000, 60, what="every line in the file")
    wait_for(lambda: loki.count() >= 3000, 60, what="every line in Loki")
    time.sleep(2.5)
    assert_exactly_once(daemon.records(), name, "stdout", numbered(3000))
    result = audit("sigkill-mid-batch", loki, name, "stdout", numbered(3000))
    print(
        f"DELIVERY sigkill-mid-batch file: sent=3000 received={len(daemon.records())} "
        f"lost=0 duplicated=0 (loki resent {result['resent']})"
    )
    assert daemon.stop() == 0


def test_full_queue_blocks_monitors_and_drops_nothing(
    make_daemon: Callable[..., Daemon], containers: Containers, loki: FakeLoki
) -> None:
    # A slow sink: a tenth of a second per push of at most 16 KiB. The queue holds one
    # socket read (a batch always fits an empty queue), so a backlog of 20,000 lines (some
    # 60 pushes) keeps the monitor waiting for room most of the time.
    loki.delay(0.1)
    daemon = loki_daemon(
        make_daemon, loki, pipeline={"queue_records": 20, "batch_size": 10, "batch_wait": "10ms"}
    )
    daemon.config["sinks"]["loki"]["max_request_bytes"] = "16KiB"
    daemon.start()
    name = f"flood-{daemon.run_id}"
    containers.wait_exit(containers.run("seq 1 20000 | sed 's/^/line /'", name=name))
    wait_for(lambda: loki.count() >= 20000, 120, what="all lines despite the slow sink")
    time.sleep(1)
    audit("queue-full", loki, name, "stdout", numbered(20000))
    metrics = daemon.metrics()
    assert metrics["log_capturer_queue_blocked_seconds_total"] > 1  # monitors waited
    assert sum(v for k, v in metrics.items() if k.startswith("log_capturer_records_dropped")) == 0
    assert metrics["log_capturer_queue_capacity_records"] == 20
    assert daemon.stop() == 0


def test_a_10_mib_line_reaches_loki_cut_to_its_limit_and_marked(
    make_daemon: Callable[..., Daemon], containers: Containers, loki: FakeLoki
) -> None:
    daemon = loki_daemon(make_daemon, loki).start()
    name = f"bigloki-{daemon.run_id}"
    script = "head -c 10485760 /dev/zero | tr '\\0' q; echo; seq 1 10 | sed 's/^/line /'"
    containers.wait_exit(containers.run(script, name=name), timeout=120)
    wait_for(lambda: loki.count() >= 11, 60, what="11 entries")
    time.sleep(1)
    entries = sorted(loki.entries(container_name=name), key=lambda e: e.ts_ns)
    assert len(entries) == 11
    big = entries[0]
    assert set(big.line) == {"q"} and len(big.line.encode()) <= 262_144
    assert big.metadata is not None and big.metadata.get("truncated") == "true"
    assert [e.line for e in entries[1:]] == numbered(10)
    assert not (daemon.data / "dead-letter.jsonl").exists()
    assert daemon.stop() == 0
