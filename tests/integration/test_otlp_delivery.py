"""The OTLP sink into the real Loki v3.4.6 (its /otlp/v1/logs): real engine, real daemon.

As tests/integration/test_loki_delivery.py: a tenant per test, audits by querying Loki,
``DELIVERY <case> <container>/<stream>: sent=… stored=… lost=… extra=…`` lines, outages
from a TCP proxy in front of Loki. Through OTLP, Loki makes a container's stdout and
stderr one stream (the iostream is structured metadata, ``log_iostream``), so a stream's
lines are selected with ``| log_iostream="stderr"``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from log_capturer.sinks.network.bisection import max_requests
from log_capturer_testkit import Daemon, Fleet, assert_exactly_once, wait_for
from log_capturer_testkit.loki import OTLP_LIMITS_TENANT, RealLoki, selector
from tests.tcp_proxy import TcpProxy

from .test_loki_delivery import numbered, paced, requests_by_status


@pytest.fixture
def proxy(real_loki: RealLoki) -> Iterator[TcpProxy]:
    with TcpProxy(real_loki.port) as front:
        yield front


def otlp_daemon(
    make_daemon: Callable[..., Daemon], url: str, tenant: str, otlp: dict[str, Any] | None = None,
    **extra: Any,
) -> Daemon:
    daemon = make_daemon({
        "sinks": {
            "file": {"enabled": False},
            "otlp": {
                "enabled": True,
                "endpoint": f"{url}/otlp",
                "tenant_id": tenant,
                "host": "test-host",
                "retry_budget": "1s",
                "min_backoff": "100ms",
                "max_backoff": "1s",
                "timeout": "5s",
                **(otlp or {}),
            },
        },
        **extra,
    })
    config = daemon.config["sinks"]["otlp"]
    config["spool_dir"] = str(daemon.data / "spool")
    config["dead_letter_path"] = str(daemon.data / "dead-letter.jsonl")
    return daemon


def query(container: str, stream: str) -> str:
    return selector(container_name=container) + f' | log_iostream="{stream}"'


def stored(loki: RealLoki, tenant: str, container: str, stream: str = "stdout") -> list[str]:
    return loki.lines(query(container, stream), tenant)


def wait_stored(loki: RealLoki, tenant: str, container: str, count: int,
                stream: str = "stdout", timeout: float = 60) -> None:
    wait_for(lambda: len(stored(loki, tenant, container, stream)) >= count, timeout,
             interval=1.0, what=f"{count} lines of {container}/{stream} in Loki")


def audit(case: str, loki: RealLoki, tenant: str, container: str, stream: str,
          expected: list[str]) -> None:
    lines = stored(loki, tenant, container, stream)
    result = {"sent": len(expected), "stored": len(lines),
              "lost": len(set(expected) - set(lines)), "extra": len(set(lines) - set(expected))}
    print(f"DELIVERY otlp-{case} {container}/{stream}: "
          + " ".join(f"{k}={v}" for k, v in result.items()))
    records = [{"container_name": container, "stream": stream, "message": m} for m in lines]
    assert_exactly_once(records, container, stream, expected)


def test_bulk_slow_and_both_streams_exactly_once_through_otlp(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str,
) -> None:
    daemon = otlp_daemon(make_daemon, real_loki.url, loki_tenant,
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
    requests = requests_by_status(daemon)
    assert daemon.stop() == 0  # drains; nothing more can arrive after this
    audit("bulk", real_loki, loki_tenant, bulk, "stdout", numbered(20000))
    audit("slow", real_loki, loki_tenant, slow, "stdout", numbered(300))
    audit("both", real_loki, loki_tenant, both, "stdout", numbered(2000, "out"))
    audit("both", real_loki, loki_tenant, both, "stderr", numbered(2000, "err"))
    print(f"DELIVERY otlp requests by status: {requests}")
    assert set(requests) == {"204"}  # Loki answers an OTLP push 204; never refused or retried


def test_which_attributes_loki_makes_labels_and_which_structured_metadata(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str,
) -> None:
    """Loki 3.4.6's default otlp_config, as the real binary applies it: the resource
    attributes in its list become labels (dots written _), every other resource attribute
    and every log record attribute becomes structured metadata on each line."""
    daemon = otlp_daemon(make_daemon, real_loki.url, loki_tenant, otlp={
        "resource_attributes": {"deployment.environment": "test"},
        "relabel_configs": [  # a container label as an attribute Loki indexes, one it does not
            {"source_labels": ["__meta_docker_container_label_team"],
             "target_label": "service.namespace"},
            {"source_labels": ["__meta_docker_container_label_team"], "target_label": "team"},
        ],
        "metadata_relabel_configs": [
            {"source_labels": ["__meta_docker_container_label_version"],
             "target_label": "service.version"},
        ],
    }).start()
    name = f"attrs-{daemon.run_id}"
    container = containers.run(
        'echo "to stdout"; echo "to stderr" >&2; head -c 300000 /dev/zero | tr "\\0" q; echo',
        name=name, labels={"com.docker.compose.service": "shop-web", "team": "payments",
                           "version": "1.2.3"})
    containers.wait_exit(container)
    wait_stored(real_loki, loki_tenant, name, 2)
    wait_stored(real_loki, loki_tenant, name, 1, stream="stderr")
    assert daemon.stop() == 0
    container.reload()
    entries = real_loki.entries(selector(container_name=name), loki_tenant)
    assert sorted(e.line[:9] for e in entries) == ["qqqqqqqqq", "to stderr", "to stdout"]
    labels = {json.dumps(e.labels, sort_keys=True) for e in entries}
    assert labels == {json.dumps({
        "container_name": name,
        "deployment_environment": "test",
        "service_name": "shop-web",  # service.name: the compose service
        "service_namespace": "payments",
    }, sort_keys=True)}
    common = {
        "container_id": container.id,
        "container_image_name": container.attrs["Config"]["Image"],
        "host_name": "test-host",
        "team": "payments",
        "service_version": "1.2.3",  # a log record attribute
        "detected_level": "unknown",  # Loki's own
    }
    by_line = {e.line[:9]: e.metadata for e in entries}
    assert by_line["to stdout"] == {**common, "log_iostream": "stdout"}
    assert by_line["to stderr"] == {**common, "log_iostream": "stderr"}
    # cut to max_line_bytes (256 KiB, Loki's max_line_size) and marked
    assert by_line["qqqqqqqqq"] == {**common, "log_iostream": "stdout", "truncated": "true"}
    big = next(e for e in entries if e.line.startswith("q"))
    assert len(big.line) == 262_144


def test_entries_loki_refuses_are_dead_lettered_the_rest_stored_once(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    run_id: str,
) -> None:
    """The tenant's lines are at most 1,024 bytes; Loki refuses the long one and stores the
    others of the same push (its 400 is per entry over OTLP too)."""
    daemon = otlp_daemon(make_daemon, real_loki.url, OTLP_LIMITS_TENANT,
                         otlp={"max_line_bytes": 0}).start()
    name = f"refused-{run_id}"
    script = ("seq 1 10 | sed 's/^/line /'; head -c 2000 /dev/zero | tr '\\0' q; echo; "
              "seq 11 20 | sed 's/^/line /'")
    containers.wait_exit(containers.run(script, name=name))
    dead_path = daemon.data / "dead-letter.jsonl"
    wait_for(lambda: dead_path.exists(), 30, what="a dead letter")
    wait_stored(real_loki, OTLP_LIMITS_TENANT, name, 20, timeout=30)
    requests = requests_by_status(daemon)
    assert daemon.stop() == 0
    assert stored(real_loki, OTLP_LIMITS_TENANT, name) == numbered(20)
    dead = [json.loads(line) for line in dead_path.read_text().splitlines()]
    assert [(d["body"], d["status"], d["sink"], d["resource"]["container.name"]) for d in dead
            ] == [("q" * 2000, 400, "otlp", name)]
    assert "Max entry size '1024' bytes exceeded" in dead[0]["error"]
    assert not dead[0].get("unresolved")
    (refusal,) = [e for e in daemon.log_events() if e.get("event") == "sink_entries_dead_lettered"]
    assert refusal["requests"] == 1 <= refusal["max_requests"] == max_requests(
        refusal["batch_records"])  # named by Loki's text: settled in the refused request
    assert requests.get("400") == 1


def test_a_60s_outage_with_a_sigkill_inside_every_line_once_after_in_both_sinks(
    make_daemon: Callable[..., Daemon], containers: Fleet, real_loki: RealLoki,
    loki_tenant: str, proxy: TcpProxy,
) -> None:
    """Both network sinks of one daemon behind the same proxy, each with its own spool:
    Loki goes away for 60 s, the daemon is killed (SIGKILL) 30 s into it and restarted;
    afterwards every line is in Loki exactly once through each sink (the Loki push streams
    carry a ``stream`` label, the OTLP stream a ``log_iostream`` field). Loki drops exact
    duplicates, so what it stores cannot show one: the lines each sink took over both
    runs are counted too (the container is paused for the count before the kill), and
    must be the lines written, once. One outage for both keeps the suite short."""
    daemon = otlp_daemon(make_daemon, proxy.url, loki_tenant)
    daemon.config["sinks"]["loki"] = {
        "enabled": True, "url": proxy.url, "tenant_id": loki_tenant, "host": "test-host",
        "retry_budget": "1s", "min_backoff": "100ms", "max_backoff": "1s", "timeout": "5s",
        "spool_dir": str(daemon.data / "spool-loki"),
        "dead_letter_path": str(daemon.data / "dead-letter-loki.jsonl"),
    }
    daemon.start()
    name = f"outage-{daemon.run_id}"

    def pushed() -> list[str]:
        return real_loki.lines(selector(container_name=name, stream="stdout"), loki_tenant)

    def taken() -> dict[str, float]:
        """Lines each network sink took (sent, or spooled) in this run of the daemon."""
        series = 'log_capturer_sink_records_total{{sink="{}",status="accepted"}}'
        return {sink: daemon.metric(series.format(sink)) for sink in ("otlp", "loki")}

    looks: list[dict[str, float]] = []

    def first_run_settled() -> bool:
        """Nothing queued, and what the sinks took unchanged over three looks."""
        if daemon.metric("log_capturer_queue_records", -1) != 0:
            return False
        looks.append(taken())
        return len(looks) >= 3 and looks[-3] == looks[-1]

    container = containers.run(paced(1300, 20, "1"), name=name)  # about 65 s of logging
    wait_for(lambda: len(stored(real_loki, loki_tenant, name)) >= 20 and len(pushed()) >= 20,
             30, interval=0.5, what="first lines in Loki through both sinks")
    proxy.down()
    outage_started = time.monotonic()
    def spooled(sink: str) -> float:
        return daemon.metric(f'log_capturer_spool_records{{sink="{sink}"}}')

    wait_for(lambda: spooled("otlp") >= 60 and spooled("loki") >= 60, 40,
             what="lines spooled by both sinks while Loki is away")
    during = (len(stored(real_loki, loki_tenant, name)), len(pushed()))
    time.sleep(max(0.0, 29 - (time.monotonic() - outage_started)))
    container.pause()  # what the first run took can be counted exactly
    wait_for(first_run_settled, 20, interval=0.3, what="the sinks done with what was read")
    first_run = looks[-1]
    daemon.kill()  # SIGKILL inside the outage: the spools and the positions are on disk
    container.unpause()
    assert list((daemon.data / "spool").glob("*.seg"))
    assert list((daemon.data / "spool-loki").glob("*.seg"))
    daemon.start()
    time.sleep(max(0.0, 60 - (time.monotonic() - outage_started)))  # the outage is 60 s long
    # Loki really was away: nothing more reached it through the proxy.
    assert (len(stored(real_loki, loki_tenant, name)), len(pushed())) == during
    proxy.up()
    containers.wait_exit(container, timeout=60)
    wait_stored(real_loki, loki_tenant, name, 1300)
    wait_for(lambda: len(pushed()) >= 1300, 60, interval=1.0, what="1300 pushed lines")
    wait_for(lambda: daemon.metric_sum("log_capturer_spool_records") == 0, 30,
             what="empty spools")
    second_run = taken()
    sent = {sink: first_run[sink] + second_run[sink] for sink in first_run}
    print(f"DELIVERY otlp/loki-outage-60s-sigkill {name}: taken by each sink {sent}")
    assert sent == {"otlp": 1300, "loki": 1300}, (first_run, second_run)
    assert daemon.stop() == 0
    audit("outage-60s-sigkill", real_loki, loki_tenant, name, "stdout", numbered(1300))
    lines = pushed()
    print(f"DELIVERY loki-outage-60s-sigkill {name}/stdout: sent=1300 stored={len(lines)}")
    assert_exactly_once([{"container_name": name, "stream": "stdout", "message": m}
                         for m in lines], name, "stdout", numbered(1300))
