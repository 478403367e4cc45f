"""Delivery to the real Loki v3.4.6 (log_capturer_testkit/loki.py): real engine, daemon, Loki.

Each test pushes as a tenant of its own (or, in the tenant with small limits, under a
label of its own), audits by querying Loki's API, and prints a line
``DELIVERY <case> <container>/<stream>: sent=… stored=… lost=… extra=…``. Outages and slow
answers come from a TCP proxy in front of Loki (tests/tcp_proxy.py), so Loki itself keeps
running. Loki drops exact duplicates and its queries merge identical entries, so a line
sent twice cannot show; every line here is distinct, and a line lost or out of order does.
The 60 s outage with a SIGKILL inside it is tested for both network sinks at once, in
tests/integration/test_otlp_delivery.py.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from log_capturer.sinks.network.bisection import max_requests
from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, wait_for
from log_capturer_testkit.loki import LIMITS_TENANT, RealLoki, selector
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def proxy(real_loki: RealLoki) -> Iterator[TcpProxy]:
    with TcpProxy(real_loki.port) as front:
        yield front


def loki_daemon(
    make_daemon: Callable[..., Daemon], url: str, tenant: str, file_sink: bool = False,
    loki: dict[str, Any] | None = None, **extra: Any,
) -> Daemon:
    overrides: dict[str, Any] = {
        "sinks": {
            "file": {"enabled": file_sink},
            "loki": {
                "enabled": True,
                "url": url,
                "tenant_id": tenant,
                "host": "test-host",
                "retry_budget": "1s",
                "min_backoff": "100ms",
                "max_backoff": "1s",
                "timeout": "5s",
                **(loki or {}),
            },
        },
        **extra,
    }
    daemon = make_daemon(overrides)
    loki_cfg = daemon.config["sinks"]["loki"]
    loki_cfg["spool_dir"] = str(daemon.data / "spool")
    loki_cfg["dead_letter_path"] = str(daemon.data / "dead-letter.jsonl")
    return daemon


def stored(loki: RealLoki, tenant: str, container: str, stream: str = "stdout") -> list[str]:
    return loki.lines(selector(container_name=container, stream=stream), tenant)


def wait_stored(loki: RealLoki, tenant: str, container: str, count: int,
                stream: str = "stdout", timeout: float = 90) -> None:
    wait_for(lambda: len(stored(loki, tenant, container, stream)) >= count, timeout,
             interval=1.0, what=f"{count} lines of {container}/{stream} in Loki")


def audit(case: str, loki: RealLoki, tenant: str, container: str, stream: str,
          expected: list[str]) -> None:
    lines = stored(loki, tenant, container, stream)
    result = {
        "sent": len(expected),
        "stored": len(lines),
        "lost": len(set(expected) - set(lines)),
        "extra": len(set(lines) - set(expected)),
    }
    print(f"DELIVERY {case} {container}/{stream}: " + " ".join(f"{k}={v}" for k, v in
                                                               result.items()))
    records = [{"container_name": container, "stream": stream, "message": m} for m in lines]
    assert_exactly_once(records, container, stream, expected)


def paced(n: int, per_sleep: int, pause: str, prefix: str = "line") -> str:
    return (
        f'i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "{prefix} $i"; '
        f"if [ $((i % {per_sleep})) -eq 0 ]; then sleep {pause}; fi; done"
    )


def numbered(n: int, prefix: str = "line") -> list[str]:
    return [f"{prefix} {i}" for i in range(1, n + 1)]


def requests_by_status(daemon: Daemon) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in daemon.metrics().items():
        if key.startswith("log_capturer_sink_request_duration_seconds_count{"):
            status = key.split('status="')[1].split('"')[0]
            out[status] = out.get(status, 0) + value
    return out


def test_bulk_slow_and_both_streams_exactly_once_in_loki(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str,
) -> None:
    daemon = loki_daemon(make_daemon, real_loki.url, loki_tenant,
                         pipeline={"batch_size": 5000}).start()
    bulk, slow, both = (f"{kind}-{daemon.run_id}" for kind in ("bulk", "slow", "both"))
    running = [
        containers.run("seq 1 20000 | sed 's/^/line /'", name=bulk),
        containers.run(paced(300, 30, "0.3"), name=slow),
        containers.run(
            'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo "out $i"; echo "err $i" >&2; '
            "done", name=both),
    ]
    for container in running:
        containers.wait_exit(container)
    wait_stored(real_loki, loki_tenant, bulk, 20000)
    wait_stored(real_loki, loki_tenant, slow, 300)
    wait_stored(real_loki, loki_tenant, both, 2000, stream="stderr")
    pushes = requests_by_status(daemon)
    assert daemon.stop() == 0  # drains; nothing more can arrive after this
    audit("bulk", real_loki, loki_tenant, bulk, "stdout", numbered(20000))
    audit("slow", real_loki, loki_tenant, slow, "stdout", numbered(300))
    audit("both", real_loki, loki_tenant, both, "stdout", numbered(2000, "out"))
    audit("both", real_loki, loki_tenant, both, "stderr", numbered(2000, "err"))
    print(f"DELIVERY pushes by status: {pushes}")
    assert set(pushes) == {"204"}  # never refused, never retried


def test_refused_entries_are_dead_lettered_the_rest_stored_once_in_bounded_requests(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    run_id: str,
) -> None:
    """The tenant's limits (log_capturer_testkit/loki.py): lines up to 1,024 bytes, 4 labels."""
    daemon = loki_daemon(
        make_daemon, real_loki.url, LIMITS_TENANT,
        loki={"static_labels": {"run": run_id}, "max_line_bytes": 0},
    ).start()
    mixed, labelled = f"mixed-{daemon.run_id}", f"labelled-{daemon.run_id}"
    script = ("seq 1 10 | sed 's/^/line /'; head -c 2000 /dev/zero | tr '\\0' q; echo; "
              "seq 11 20 | sed 's/^/line /'")
    runs = [
        containers.run(script, name=mixed),
        # a compose service adds a label: container_name, compose_service, stream, host
        # and run are 5, over the tenant's limit of 4
        containers.run("seq 1 50 | sed 's/^/line /'", name=labelled,
                       labels={"com.docker.compose.service": "svc"}),
    ]
    for container in runs:
        containers.wait_exit(container)
    dead_path = daemon.data / "dead-letter.jsonl"
    wait_for(lambda: dead_path.exists() and len(dead_path.read_text().splitlines()) >= 51, 30,
             what="51 dead letters")
    wait_stored(real_loki, LIMITS_TENANT, mixed, 20, timeout=30)
    pushes = requests_by_status(daemon)
    assert daemon.stop() == 0
    assert real_loki.lines(selector(run=run_id, container_name=mixed), LIMITS_TENANT) == (
        numbered(20))
    assert real_loki.lines(selector(run=run_id, container_name=labelled), LIMITS_TENANT) == []
    dead = [json.loads(line) for line in dead_path.read_text().splitlines()]
    assert sorted(d["line"] for d in dead if d["stream"]["container_name"] == mixed) == ["q" * 2000]
    assert sorted(d["line"] for d in dead if d["stream"]["container_name"] == labelled) == sorted(
        numbered(50))
    assert not any(d.get("unresolved") for d in dead)
    refusals = [e for e in daemon.log_events() if e.get("event") == "sink_entries_dead_lettered"]
    assert refusals, "no refusal logged"
    for event in refusals:  # each refused push settled in one request: named by Loki
        assert event["requests"] == 1 <= event["max_requests"] == max_requests(
            event["batch_records"])
    print(f"DELIVERY refusals: {len(refusals)} refused pushes, requests by status {pushes}")
    assert pushes.get("400", 0) == len(refusals)
    assert sum(e["records"] for e in refusals) == 51


def test_structured_metadata_on_and_off_as_loki_shows_it(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    run_id: str,
) -> None:
    on_tenant, off_tenant = f"meta-on-{run_id}", f"meta-off-{run_id}"
    on = loki_daemon(make_daemon, real_loki.url, on_tenant,
                     loki={"structured_metadata": ["container_id", "image", "truncated"]})
    off = loki_daemon(make_daemon, real_loki.url, off_tenant)
    on.start()
    off.start()
    name = f"meta-{run_id}"
    container = containers.run("seq 1 20 | sed 's/^/line /'", name=name)
    containers.wait_exit(container)
    wait_stored(real_loki, on_tenant, name, 20, timeout=30)
    wait_stored(real_loki, off_tenant, name, 20, timeout=30)
    assert on.stop() == 0 and off.stop() == 0
    with_meta = real_loki.entries(selector(container_name=name), on_tenant)
    without = real_loki.entries(selector(container_name=name), off_tenant)
    assert [e.line for e in with_meta] == [e.line for e in without] == numbered(20)
    container.reload()
    assert {json.dumps(e.metadata, sort_keys=True) for e in with_meta} == {json.dumps(
        {"container_id": container.id, "image": container.attrs["Config"]["Image"],
         "detected_level": "unknown"}, sort_keys=True)}
    assert {json.dumps(e.metadata) for e in without} == {'{"detected_level": "unknown"}'}
    # and the service_name label Loki adds
    assert {e.labels["service_name"] for e in with_meta + without} == {name}


def test_a_10_mib_line_reaches_loki_cut_to_its_limit_and_marked(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str,
) -> None:
    daemon = loki_daemon(make_daemon, real_loki.url, loki_tenant).start()
    name = f"bigloki-{daemon.run_id}"
    script = "head -c 10485760 /dev/zero | tr '\\0' q; echo; seq 1 10 | sed 's/^/line /'"
    containers.wait_exit(containers.run(script, name=name), timeout=120)
    wait_stored(real_loki, loki_tenant, name, 11, timeout=60)
    assert daemon.stop() == 0
    entries = real_loki.entries(selector(container_name=name), loki_tenant)
    assert len(entries) == 11
    big = entries[0]
    assert set(big.line) == {"q"} and len(big.line.encode()) <= 262_144
    assert big.metadata.get("truncated") == "true"
    assert [e.line for e in entries[1:]] == numbered(10)
    assert all("truncated" not in e.metadata for e in entries[1:])
    assert not (daemon.data / "dead-letter.jsonl").exists()


def test_sigkill_during_slow_pushes_file_exactly_once_loki_exact(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str, proxy: TcpProxy,
) -> None:
    """Three SIGKILLs, each while a push is in flight: the proxy holds Loki's answers
    until the daemon is dead (Loki has the push, the daemon never learns it), so each
    restart sends it again. The file sink beside it holds every line once; Loki, which
    drops exact duplicates, every line."""
    proxy.delay(0.3)  # every push takes a while
    daemon = loki_daemon(make_daemon, proxy.url, loki_tenant, file_sink=True)
    daemon.start()
    name = f"killed-{daemon.run_id}"
    container = containers.run(paced(3000, 50, "0.2"), name=name)  # 12 s: pushes all along
    for _ in range(3):
        wait_for(lambda: len(daemon.records()) > 300, 30, what="records")
        time.sleep(1.1)
        proxy.hold()
        wait_for(lambda: proxy.in_flight() > 0, 30, what="a push in flight")
        daemon.kill()  # mid-push: its request is at Loki, the answer held back
        proxy.release()
        time.sleep(0.5)
        daemon.start()
    containers.wait_exit(container)
    wait_for(lambda: len(daemon.records()) >= 3000, 60, what="every line in the file")
    wait_stored(real_loki, loki_tenant, name, 3000, timeout=60)
    assert daemon.stop(signal.SIGTERM) == 0
    assert_exactly_once(daemon.records(), name, "stdout", numbered(3000))
    audit("sigkill-mid-push", real_loki, loki_tenant, name, "stdout", numbered(3000))


def test_full_queue_blocks_monitors_and_drops_nothing(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str, proxy: TcpProxy,
) -> None:
    # A slow sink: a tenth of a second more per push of about 16 KiB. The queue holds one
    # socket read (a batch always fits an empty queue), so a backlog of 20,000 lines (some
    # 30 pushes) leaves the monitor waiting for room. How long it waits depends on how the
    # engine splits the backlog into reads (reads grow while full), so the test asserts
    # that it waited at all (the counter only moves on a put that found the queue full),
    # not for how long: a wall-clock share is the benchmarks' business.
    proxy.delay(0.1)
    daemon = loki_daemon(
        make_daemon, proxy.url, loki_tenant,
        pipeline={"queue_records": 20, "batch_size": 10, "batch_wait": "10ms"},
    )
    daemon.config["sinks"]["loki"]["batch_bytes"] = "16KiB"
    daemon.start()
    name = f"flood-{daemon.run_id}"
    containers.wait_exit(containers.run("seq 1 20000 | sed 's/^/line /'", name=name))
    wait_stored(real_loki, loki_tenant, name, 20000, timeout=120)
    metrics = daemon.metrics()
    assert daemon.stop() == 0
    audit("queue-full", real_loki, loki_tenant, name, "stdout", numbered(20000))
    assert metrics["log_capturer_queue_blocked_seconds_total"] > 0  # monitors waited
    assert sum(v for k, v in metrics.items() if k.startswith("log_capturer_records_dropped")) == 0
    assert metrics["log_capturer_queue_capacity_records"] == 20
