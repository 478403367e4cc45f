"""Reopening with ``since`` plus a bounded ``tail``: cheap when it can be proven, exact always.

The tail makes a reopen cost the engine the last N lines instead of the whole log
file; a tail that may have skipped lines must fall back to a plain ``since`` read.
Both paths are forced here against the real engine, and every line must still
arrive exactly once, in order per stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, wait_for

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


def settle(daemon: Daemon, count: int) -> list[dict]:  # type: ignore[type-arg]
    wait_for(lambda: len(daemon.records()) >= count, 90, what=f"{count} records")
    time.sleep(2.5)  # a duplicate would arrive within a window
    return daemon.records()


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
    records = settle(daemon, 6000)
    assert_exactly_once(records, name, "stdout", numbered("out", range(1, 3001)))
    assert_exactly_once(records, name, "stderr", numbered("err", range(1, 3001)))
    assert daemon.metric("log_capturer_stream_tail_reads_total") >= 5
    # 100-line bursts between windows overflow a 20-line tail: the check must catch it.
    assert daemon.metric('log_capturer_stream_tail_fallbacks_total{reason="full"}') >= 1
    assert daemon.stop() == 0


def test_a_big_backlog_is_reopened_with_a_tail_and_resumes_exactly(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon(
        {"container_monitor": {"stream_window": "1s", "reorder_tolerance": "200ms"}}
    ).start()
    name = f"backlog-{daemon.run_id}"
    containers.wait_exit(containers.run(BACKLOG_THEN_TRICKLE, name=name), timeout=120)
    records = settle(daemon, 20000 + 60 + 10)
    expected_out = numbered("big", range(1, 20001)) + numbered("out", range(1, 61))
    assert_exactly_once(records, name, "stdout", expected_out)
    assert_exactly_once(records, name, "stderr", numbered("err", range(6, 61, 6)))
    metrics = daemon.metrics()
    tail_reads = metrics.get("log_capturer_stream_tail_reads_total", 0)
    fallbacks = sum(
        v for k, v in metrics.items() if k.startswith("log_capturer_stream_tail_fallbacks_total")
    )
    # Most reopens are the cheap kind; right after the burst a fallback is allowed.
    assert tail_reads >= 4, metrics
    assert fallbacks <= tail_reads / 2, metrics
    assert daemon.stop() == 0


def test_a_reopen_that_waited_past_its_until_for_a_connection_loses_nothing(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    # One connection for two busy monitors (the event stream holds the other), 1 s
    # windows and no early turns: each request waits about a window for the connection,
    # so its ``until`` (set before the wait) has passed when the engine reads the tail.
    # The engine then ends the body at once, and that end must not pass for a short tail.
    daemon = make_daemon(
        {
            "docker": {"pool": {"max_open": 2, "max_idle": 2, "wait_timeout": "10s"}},
            "container_monitor": {
                "stream_window": "1s",
                "contended_window": "30s",
                "resume_tail_lines": 20,
                "resume_tail_max_lines": 20,
                "reorder_tolerance": "200ms",
            },
        }
    ).start()
    script = (
        'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo "n $i"; '
        "if [ $((i % 20)) -eq 0 ]; then sleep 0.1; fi; done"
    )
    names = [f"waiter{n}-{daemon.run_id}" for n in range(2)]
    running = [containers.run(script, name=name) for name in names]
    for container in running:
        containers.wait_exit(container, timeout=120)
    records = settle(daemon, 4000)
    for name in names:
        assert_exactly_once(records, name, "stdout", numbered("n", range(1, 2001)))
    # The engine cutting the tail at a passed ``until`` happens in most runs here, not
    # all (it depends on timing): the rule is pinned by test_resume.py; this test holds
    # the monitors, waiting on one connection with tail reads, to exactly once.
    metrics = daemon.metrics()
    assert metrics["log_capturer_docker_pool_waits_total"] > 0
    assert metrics["log_capturer_stream_tail_reads_total"] > 0
    assert daemon.stop() == 0
