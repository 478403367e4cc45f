"""Reopening with ``since`` plus a bounded ``tail``: cheap when it can be proven, exact always.

The tail makes a reopen cost the engine the last N lines instead of the whole log
file; a tail that may have skipped lines must fall back to a plain ``since`` read.
Both paths are forced here against the real engine, and every line must still
arrive exactly once, in order per stream. A quiet log after a burst must reopen
cheaply with short windows and after a restart: its checked times are moved past the
burst by a proof read and saved with the positions (monitor/resume.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from log_capturer.timestamps import parse_docker_ts
from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, metric_total, wait_for

from .socket_proxy import EngineProxy, HoldPastUntil

# 30 bursts of 100 line pairs on both streams, half a second apart (~15 s, 15 windows).
BURSTS = (
    'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; '
    "if [ $((i % 100)) -eq 0 ]; then sleep 0.5; fi; done"
)
# A backlog of 20000 lines at once, a pause, then a trickle on both streams.
BACKLOG_THEN_TRICKLE = (
    "awk 'BEGIN { for (i = 1; i <= 20000; i++) print \"big \" i }'; sleep 2.5; "
    'i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo "out $i"; '
    'if [ $((i % 6)) -eq 0 ]; then echo "err $i" >&2; fi; sleep 0.1; done'
)


def numbered(prefix: str, numbers: range) -> list[str]:
    return [f"{prefix} {i}" for i in numbers]


def test_a_tail_too_small_for_the_bursts_falls_back_and_loses_nothing(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon(
        {
            "container_monitor": {
                "stream_window": "1s",
                "resume_tail_lines": 20,
                "resume_tail_max_lines": 20,
                "reorder_tolerance": "200ms",
            }
        }
    ).start()
    name = f"bursts-{daemon.run_id}"
    containers.wait_exit(containers.run(BURSTS, name=name), timeout=120)
    daemon.wait_captured(6000, timeout=90)
    metrics = daemon.metrics()
    records = daemon.stop_and_read()
    assert_exactly_once(records, name, "stdout", numbered("out", range(1, 3001)))
    assert_exactly_once(records, name, "stderr", numbered("err", range(1, 3001)))
    assert metrics["log_capturer_stream_tail_reads_total"] >= 5
    # 100-line bursts between windows overflow a 20-line tail: the check must catch it.
    assert metrics['log_capturer_stream_tail_fallbacks_total{reason="full"}'] >= 1


def test_a_big_backlog_is_reopened_with_a_tail_and_resumes_exactly(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon(
        {"container_monitor": {"stream_window": "1s", "reorder_tolerance": "200ms"}}
    ).start()
    name = f"backlog-{daemon.run_id}"
    containers.wait_exit(containers.run(BACKLOG_THEN_TRICKLE, name=name), timeout=120)
    daemon.wait_captured(20000 + 60 + 10, timeout=90)
    metrics = daemon.metrics()
    records = daemon.stop_and_read()
    expected_out = numbered("big", range(1, 20001)) + numbered("out", range(1, 61))
    assert_exactly_once(records, name, "stdout", expected_out)
    assert_exactly_once(records, name, "stderr", numbered("err", range(6, 61, 6)))
    tail_reads = metrics.get("log_capturer_stream_tail_reads_total", 0)
    fallback_count = fallbacks(metrics)
    # Most reopens are the cheap kind; right after the burst a fallback is allowed.
    assert tail_reads >= 4, metrics
    assert fallback_count <= tail_reads / 2, metrics


def test_tail_reads_past_the_buffer_budget_are_read_plain_and_lose_nothing(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    # A budget too small for one held line: every tail read that must hold a line while
    # it is checked gives up and is read again with a plain since (buffers.py).
    daemon = make_daemon(
        {
            "container_monitor": {
                "stream_window": "1s",
                "reorder_tolerance": "200ms",
                "buffer_budget": "100",
            }
        }
    ).start()
    name = f"budget-{daemon.run_id}"
    containers.wait_exit(containers.run(BACKLOG_THEN_TRICKLE, name=name), timeout=120)
    daemon.wait_captured(20000 + 60 + 10, timeout=90)
    metrics = daemon.metrics()
    records = daemon.stop_and_read()
    expected_out = numbered("big", range(1, 20001)) + numbered("out", range(1, 61))
    assert_exactly_once(records, name, "stdout", expected_out)
    assert_exactly_once(records, name, "stderr", numbered("err", range(6, 61, 6)))
    refused = metrics.get('log_capturer_stream_tail_fallbacks_total{reason="budget"}', 0)
    assert refused >= 1, stream_metrics(metrics)
    # Every monitor has ended: nothing is held or remembered any more.
    held = {k: v for k, v in metrics.items() if k.startswith("log_capturer_buffered_bytes{")}
    assert len(held) == 4 and set(held.values()) == {0}, held
    assert metrics["log_capturer_buffer_budget_bytes"] == 100


def test_a_tail_read_that_reaches_the_engine_after_its_until_falls_back_and_loses_nothing(
    make_daemon: Callable[..., Daemon], containers: Fleet, tmp_path: Path
) -> None:
    # A reopen's ``until`` is set before its request waits for a pooled connection. When
    # the wait outlasts it, the engine takes the tail with ``until`` already passed,
    # stops at the first tail line stamped after it and ends the body at once, short of
    # the tail: that end proves nothing about the tail and must not pass for a short one
    # (monitor/resume.py ended_before_until). The proxy makes it happen every run: it
    # holds the first two tail reads until 0.4 s after their ``until`` (4 s windows give
    # the read 1 s of grace, so the answer still comes before the read's deadline).
    # 20-line tails against ~200 lines/s: had the early end passed for proof, the
    # window's lines would be skipped.
    hold = HoldPastUntil(limit=2, margin=0.4)
    proxy = EngineProxy(tmp_path / "engine.sock", hold=hold)
    proxy.up()
    daemon = make_daemon(
        {
            "docker": {"socket_path": proxy.path},
            "container_monitor": {
                "stream_window": "4s",
                "resume_tail_lines": 20,
                "resume_tail_max_lines": 20,
                "reorder_tolerance": "200ms",
            },
        }
    ).start()
    name = f"late-{daemon.run_id}"
    script = (
        'i=0; while [ $i -lt 3600 ]; do i=$((i+1)); echo "out $i"; '
        'if [ $((i % 10)) -eq 0 ]; then echo "err $i" >&2; fi; '
        "if [ $((i % 20)) -eq 0 ]; then sleep 0.1; fi; done"
    )
    container = containers.run(script, name=name)
    containers.wait_exit(container, timeout=120)
    daemon.wait_monitors_done()  # it ran for 18 s: seen, read to its end
    metrics = daemon.metrics()
    records = daemon.stop_and_read()
    proxy.down()
    assert_exactly_once(records, name, "stdout", numbered("out", range(1, 3601)))
    assert_exactly_once(records, name, "stderr", numbered("err", range(10, 3601, 10)))
    assert hold.held == 2, "the container ended before two tail reads were made"
    # Each held read ended early at its passed until and was re-read without a tail.
    assert metrics['log_capturer_stream_tail_fallbacks_total{reason="until"}'] == hold.held
    assert metrics["log_capturer_stream_tail_reads_total"] > hold.held


def burst(prefix: str, lines: int) -> str:
    """awk writing ``lines`` numbered lines to stdout at once, every 10th also to stderr."""
    return (
        f'awk \'BEGIN {{ for (i = 1; i <= {lines}; i++) {{ print "{prefix} " i; '
        f'if (i % 10 == 0) print "e{prefix} " i > "/dev/stderr" }} }}\''
    )


def logged(container: Any, count: int) -> bool:
    """Whether the engine holds at least ``count`` lines of the container's log."""
    return len(container.logs(stdout=True, stderr=True).splitlines()) >= count


def stream_metrics(metrics: dict[str, float]) -> str:
    """The stream_* counters, for a failure message that names what happened."""
    return " ".join(
        f"{k.removeprefix('log_capturer_stream_')}={v:g}"
        for k, v in metrics.items()
        if k.startswith("log_capturer_stream_") and "_created" not in k
    )


def fallbacks(metrics: dict[str, float]) -> float:
    return metric_total(metrics, "log_capturer_stream_tail_fallbacks_total")


SHORT_WINDOWS = {
    "stream_window": "1s",
    "reorder_tolerance": "200ms",
    "resume_tail_lines": 100,
    "resume_tail_max_lines": 20000,
}


def test_short_windows_after_a_burst_reopen_with_a_tail_and_never_fall_back(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    # A burst of 3,300 lines within a few ms of its last one, then 8 s of quiet (eight
    # 1 s windows), then one line per stream. Without a proof, each quiet reopen asks
    # for the tail behind the last line, finds it full, and reads again.
    script = f'{burst("a", 3000)}; sleep 8; echo "tail 1"; echo "etail 1" >&2; sleep 2'
    container = containers.run(script, name=f"quiet-{time.monotonic_ns()}")
    wait_for(lambda: logged(container, 3300), 60, what="the burst in the engine's log")
    daemon = make_daemon({"container_monitor": SHORT_WINDOWS}).start()
    wait_for(lambda: daemon.finished_container(container.name), 90, what="the container read")
    metrics = daemon.metrics()
    assert daemon.stop() == 0
    records = daemon.records()
    assert_exactly_once(
        records, container.name, "stdout", [*numbered("a", range(1, 3001)), "tail 1"]
    )
    assert_exactly_once(
        records, container.name, "stderr", [*numbered("ea", range(10, 3001, 10)), "etail 1"]
    )
    assert fallbacks(metrics) == 0, stream_metrics(metrics)
    # The case: quiet windows after the burst, reopened with a tail, settled by a proof.
    proofs = metrics.get('log_capturer_stream_proof_reads_total{reason="resend"}', 0)
    assert proofs >= 1, stream_metrics(metrics)
    assert metrics["log_capturer_stream_tail_reads_total"] >= 5, stream_metrics(metrics)


def saved_streams(daemon: Daemon, container_id: str) -> dict[str, Any]:
    try:
        document = json.loads((daemon.data / "positions.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    streams: dict[str, Any] = document["containers"].get(container_id, {}).get("streams", {})
    return streams


def test_a_restart_on_a_burst_written_log_reopens_with_a_tail_and_never_falls_back(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    tolerance_ns = 500_000_000
    config = {
        "container_monitor": {
            "stream_window": "1s",
            "reorder_tolerance": "500ms",
            "resume_tail_lines": 100,
            "resume_tail_max_lines": 2000,
        }
    }
    script = (
        f"{burst('big', 20000)}; while [ ! -e /tmp/go ]; do sleep 0.1; done; "
        'i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo "after $i"; echo "eafter $i" >&2; done'
    )
    container = containers.run(script, name=f"restart-{time.monotonic_ns()}")
    wait_for(lambda: logged(container, 22000), 60, what="the burst in the engine's log")
    daemon = make_daemon(config).start()

    def proven_past_last_lines() -> bool:
        # Delivered, and each stream's checked time saved past its last line: a restart
        # then starts after the burst.
        streams = saved_streams(daemon, container.id)
        return len(streams) == 2 and all(
            s.get("checked_ns", 0) > s["ts_ns"] + 2 * tolerance_ns for s in streams.values()
        )

    wait_for(proven_past_last_lines, 60, what="checked times saved past the last lines")
    assert daemon.stop() == 0
    records = daemon.records()
    assert len(records) == 22000
    # The case: a reopen from the marks alone (as before checked times were saved) would
    # find more lines within two tolerances of the last line than the largest tail.
    stamps = [parse_docker_ts(r["ts"].encode()) for r in records]
    near_end = sum(1 for ts in stamps if ts >= max(stamps) - 2 * tolerance_ns)
    assert near_end > 2000, near_end

    daemon.start()  # the same positions and file sink
    wait_for(
        lambda: daemon.metric_sum("log_capturer_stream_windows_total") >= 3, 30, what="3 reopens"
    )
    # The restart's reopens: tail reads, none given up (a burst the container writes
    # later may need a larger tail: that is not the restart's cost).
    metrics = daemon.metrics()
    assert metrics["log_capturer_stream_tail_reads_total"] >= 3, metrics
    assert fallbacks(metrics) == 0, stream_metrics(metrics)
    resent = [k for k in metrics if k.startswith("log_capturer_lines_deduplicated_total")]
    assert sum(metrics[k] for k in resent) == 0, metrics  # the tail sent no known line again
    container.exec_run(["sh", "-c", ": > /tmp/go"])
    wait_for(lambda: daemon.finished_container(container.name), 60, what="the container read")
    assert daemon.stop() == 0
    records = daemon.records()
    name = container.name
    assert_exactly_once(
        records, name, "stdout", numbered("big", range(1, 20001)) + numbered("after", range(1, 21))
    )
    assert_exactly_once(
        records,
        name,
        "stderr",
        numbered("ebig", range(10, 20001, 10)) + numbered("eafter", range(1, 21)),
    )
