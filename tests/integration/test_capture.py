"""Capture correctness against the real engine: every line exactly once, in order per stream.

All daemons here run with ``stream_window: 2s`` (see log_capturer_testkit.Daemon), so
every test that runs longer than a few seconds crosses several window boundaries. Each
audit reads the output of a stopped daemon (SIGTERM drains; exit 0 checked): all it
delivered, so a duplicate cannot arrive after the audit.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

from log_capturer.timestamps import parse_docker_ts
from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, by_stream, wait_for
from log_capturer_testkit.sink import parse_ts

# ~8 s of numbered lines on both streams, a line pair every ~4 ms: crosses 4 windows.
PAIRS = 2000
PACED_BOTH = (
    f'i=0; while [ $i -lt {PAIRS} ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; '
    "if [ $((i % 50)) -eq 0 ]; then sleep 0.2; fi; done"
)


def numbered(prefix: str, n: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(1, n + 1)]


def wait_records(daemon: Daemon, count: int, timeout: float = 60) -> list[dict]:  # type: ignore[type-arg]
    return wait_for(
        lambda: (r := daemon.records()) and len(r) >= count and r, timeout, what=f"{count} records"
    )


def test_stdout_and_stderr_lines_arrive_exactly_once_in_order(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    with open(f"/proc/{daemon.pid}/environ", "rb") as fh:  # it started itself again with them
        assert b"GLIBC_TUNABLES=glibc.malloc.tcache_count=0" in fh.read().split(b"\0")
    labels = {
        "com.docker.compose.service": "web",
        "com.docker.compose.project": "shop",
        "team": "core",
    }
    container = containers.run(PACED_BOTH, name=f"both-{daemon.run_id}", labels=labels)
    assert containers.wait_exit(container) == 0
    daemon.wait_captured(2 * PAIRS)
    eof_windows = daemon.metric('log_capturer_stream_windows_total{end="eof"}')
    records = daemon.stop_and_read()
    name = f"both-{daemon.run_id}"
    assert_exactly_once(records, name, "stdout", numbered("out", PAIRS))
    assert_exactly_once(records, name, "stderr", numbered("err", PAIRS))
    assert len(records) == 2 * PAIRS
    first = records[0]
    container.reload()
    assert first["container_id"] == container.id
    assert first["container_name"] == name
    assert first["image"] == "log-capturer-test/busybox:1"
    assert first["labels"]["team"] == "core"
    assert first["compose_service"] == "web" and first["compose_project"] == "shop"
    assert first["ts"].endswith("Z") and len(first["ts"]) == 30  # nanoseconds
    assert eof_windows >= 1


def test_tty_container(make_daemon: Callable[..., Daemon], containers: Fleet) -> None:
    daemon = make_daemon().start()
    name = f"tty-{daemon.run_id}"
    script = 'i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo "tty $i"; sleep 0.01; done'
    containers.wait_exit(containers.run(script, name=name, tty=True))
    daemon.wait_captured(300)
    records = daemon.stop_and_read()
    assert_exactly_once(records, name, "tty", numbered("tty", 300))


def test_lines_over_16k_are_joined(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    name = f"long-{daemon.run_id}"
    script = (
        "echo before; "
        "head -c 20480 /dev/zero | tr '\\0' a; echo; "
        "echo middle; "
        "head -c 204800 /dev/zero | tr '\\0' b; echo; "
        "echo after"
    )
    containers.wait_exit(containers.run(script, name=name))
    daemon.wait_captured(5)
    records = daemon.stop_and_read()
    assert_exactly_once(
        records, name, "stdout", ["before", "a" * 20480, "middle", "b" * 204800, "after"]
    )
    assert not any(r.get("truncated") for r in records)


def test_tty_lines_over_16k_are_joined(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    name = f"ttylong-{daemon.run_id}"
    script = "echo x; head -c 40000 /dev/zero | tr '\\0' c; echo; echo y"
    containers.wait_exit(containers.run(script, name=name, tty=True))
    daemon.wait_captured(3)
    assert_exactly_once(daemon.stop_and_read(), name, "tty", ["x", "c" * 40000, "y"])


def test_container_that_lives_under_a_second_is_captured_completely(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    names = []
    for n in range(3):
        name = f"brief{n}-{daemon.run_id}"
        names.append(name)
        container = containers.run("seq 1 1000", name=name)
        containers.wait_exit(container)
        container.reload()
        state = container.attrs["State"]
        lived = parse_ts(state["FinishedAt"].encode()) - parse_ts(state["StartedAt"].encode())
        assert lived < 1, f"{name} lived {lived:.2f}s: not the case under test"
    daemon.wait_captured(3000)
    records = daemon.stop_and_read()
    for name in names:
        assert_exactly_once(records, name, "stdout", [str(i) for i in range(1, 1001)])


def test_quiet_longer_than_a_window(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    name = f"quiet-{daemon.run_id}"
    container = containers.run("echo one; sleep 5; echo two >&2; sleep 5; echo three", name=name)
    wait_for(
        lambda: by_stream(daemon.records()).get((name, "stdout")) == ["one"],
        10,
        interval=0.05,
        what="the first line",
    )
    # Delivered while the container was still quiet (it writes again after 5 s).
    assert container.logs(stdout=False, stderr=True) == b""
    containers.wait_exit(container)
    daemon.wait_captured(3)
    # The engine never ends a quiet follow stream: our deadline did.
    deadline_windows = daemon.metric('log_capturer_stream_windows_total{end="deadline"}')
    records = daemon.stop_and_read()
    assert_exactly_once(records, name, "stdout", ["one", "three"])
    assert_exactly_once(records, name, "stderr", ["two"])
    assert deadline_windows >= 2


def test_sigkill_mid_stream_then_restart_delivers_exactly_once(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon()
    daemon.start()
    name = f"kill-{daemon.run_id}"
    container = containers.run(PACED_BOTH, name=name)
    for _ in range(2):
        wait_for(lambda: len(daemon.records()) > 200, 30, what="some records")
        time.sleep(0.7)
        container.reload()
        assert container.status == "running", "the container ended before the kill"
        daemon.kill()  # SIGKILL: no flush, no positions save
        time.sleep(1.5)  # the container keeps writing meanwhile
        daemon.start()
    containers.wait_exit(container)
    daemon.wait_captured(2 * PAIRS)
    records = daemon.stop_and_read()
    assert_exactly_once(records, name, "stdout", numbered("out", PAIRS))
    assert_exactly_once(records, name, "stderr", numbered("err", PAIRS))


def test_sigterm_exits_zero_quickly_and_saves_positions(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon({"container_monitor": {"stream_window": "30s"}}).start()
    running = [
        containers.run("while true; do echo tick; sleep 0.1; done", name=f"t{n}-{daemon.run_id}")
        for n in range(5)
    ]
    wait_for(
        lambda: len({r["container_name"] for r in daemon.records()}) == 5,
        30,
        what="all containers captured",
    )
    # 30 s windows, none over yet: the stop must cut them, not wait for them.
    assert daemon.metric('log_capturer_stream_windows_total{end="deadline"}') == 0
    assert daemon.stop(signal.SIGTERM) == 0
    stopped = [e for e in daemon.log_events() if e["event"] == "monitor_stopped"]
    assert sorted((e["container_name"], e["reason"], e["windows"]) for e in stopped) == sorted(
        (c.name, "stopped", 1) for c in running
    ), stopped
    positions = json.loads((daemon.data / "positions.json").read_text())
    ids = {c.id for c in running}
    assert ids <= set(positions["containers"])
    delivered = {r["container_id"]: r for r in daemon.records()}
    for cid in ids:
        saved = positions["containers"][cid]["streams"]["stdout"]["ts"]
        assert saved == delivered[cid]["ts"]  # positions = exactly what was delivered
    events = [e["event"] for e in daemon.log_events()]
    assert "stopped" in events


def test_restarted_container_is_captured_across_runs(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    name = f"again-{daemon.run_id}"
    container = containers.run("seq 1 100", name=name)
    containers.wait_exit(container)
    wait_records(daemon, 100)
    container.start()
    containers.wait_exit(container)
    daemon.wait_captured(200)
    got = by_stream(daemon.stop_and_read())[(name, "stdout")]
    assert got == [str(i) for i in range(1, 101)] * 2


def test_a_container_that_exits_while_the_daemon_is_down_is_read_to_its_end(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    daemon = make_daemon().start()
    name = f"downexit-{daemon.run_id}"
    script = (
        'seq 1 200 | sed "s/^/before /"; '
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; "  # until the daemon is down
        'seq 1 300 | sed "s/^/after /"'
    )
    container = containers.run(script, name=name)
    wait_for(lambda: len(daemon.records()) >= 200, 30, what="the lines before the stop")
    assert daemon.stop() == 0  # drains and saves positions
    container.exec_run(["sh", "-c", "echo > /tmp/go"])
    assert containers.wait_exit(container) == 0
    container.reload()
    exited_ns = parse_docker_ts(container.attrs["State"]["FinishedAt"].encode())
    # A start replays the engine's events of the last second: let the exit be older, so
    # only the positions file can tell the daemon to read the rest.
    wait_for(lambda: time.time_ns() - exited_ns > 2e9, 10, what="the exit 2 s old")
    daemon.start()
    wait_for(lambda: daemon.finished_container(name), 60, what="the rest read to its end")
    assert daemon.stop() == 0
    expected = [f"before {i}" for i in range(1, 201)] + [f"after {i}" for i in range(1, 301)]
    assert_exactly_once(daemon.records(), name, "stdout", expected)
    started = [
        e["running"]
        for e in daemon.log_events()
        if e["event"] == "monitor_started" and e["container_name"] == name
    ]
    assert started == [True, False]  # the second start found it stopped


def test_a_container_that_starts_and_exits_while_the_daemon_is_down_is_read(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    """Not in the positions file and no event for it: the first listing after the restart
    treats the time the daemon was down (since its last save) as an event gap."""
    daemon = make_daemon().start()
    seen = containers.run("echo seen", name=f"seen-{daemon.run_id}")
    assert containers.wait_exit(seen) == 0
    wait_for(lambda: len(daemon.records()) >= 1, 30, what="a first line: a positions file")
    assert daemon.stop() == 0  # drains and saves positions
    name = f"whiledown-{daemon.run_id}"
    container = containers.run('seq 1 300 | sed "s/^/down /"', name=name)
    assert containers.wait_exit(container) == 0
    container.reload()
    exited_ns = parse_docker_ts(container.attrs["State"]["FinishedAt"].encode())
    # A start replays the engine's events of the last second: let the exit be older, so
    # only the downtime gap can find it.
    wait_for(lambda: time.time_ns() - exited_ns > 2e9, 10, what="the exit 2 s old")
    daemon.start()
    wait_for(lambda: daemon.finished_container(name), 60, what="the container read to its end")
    assert daemon.stop() == 0
    assert_exactly_once(daemon.records(), name, "stdout", [f"down {i}" for i in range(1, 301)])


def test_quick_restarts_by_a_restart_policy_are_all_captured(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    """Four runs of one container, restarted by the engine 100-400 ms apart."""
    daemon = make_daemon().start()  # relist_interval stays 60 s: no help from re-listing
    name = f"crashy-{daemon.run_id}"
    script = (
        "n=$(cat /tmp/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/n; "
        'seq 1 50 | sed "s/^/run $n line /"; exit 1'
    )
    container = containers.run(
        script, name=name, restart_policy={"Name": "on-failure", "MaximumRetryCount": 3}
    )
    expected = [f"run {n} line {i}" for n in range(1, 5) for i in range(1, 51)]
    wait_for(lambda: len(daemon.records()) >= 200, 30, what="all four runs")
    assert containers.wait_exit(container) == 1  # the last run: no restart after it
    container.reload()
    assert container.attrs["RestartCount"] == 3
    daemon.wait_captured(200)
    assert_exactly_once(daemon.stop_and_read(), name, "stdout", expected)


def test_a_rate_bounded_container_is_read_slower_and_delivered_exactly_once(
    make_daemon: Callable[..., Daemon], containers: Fleet
) -> None:
    """container_monitor.max_lines_per_second: the monitor waits between reads (counted),
    the engine keeps what is not read yet, and every line still arrives once, in order."""
    daemon = make_daemon({"container_monitor": {"max_lines_per_second": 1000}}).start()
    name = f"bounded-{daemon.run_id}"
    lines = 3000  # at once: three times the bound, so the reads must wait about 2 s
    script = (
        f"awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) {{ printf \"out %d\\n\", i; "
        f"if (i % 10 == 0) printf \"err %d\\n\", i > \"/dev/stderr\" }} }}'"
    )
    assert containers.wait_exit(containers.run(script, name=name)) == 0
    daemon.wait_captured(lines + lines // 10)
    throttled = daemon.metric("log_capturer_read_throttled_seconds_total")
    records = daemon.stop_and_read()
    assert_exactly_once(records, name, "stdout", numbered("out", lines))
    assert_exactly_once(records, name, "stderr", numbered("err", lines)[9::10])
    assert throttled >= 1.0  # the bound held reading back (3300 lines, a 1000-line burst)
