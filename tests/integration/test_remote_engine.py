"""A remote engine over TLS: a second, real dockerd with --tlsverify on 127.0.0.1.

The daemon is pointed at it only the way the docker CLI is (DOCKER_HOST,
DOCKER_TLS_VERIFY, DOCKER_CERT_PATH); certificates are made by openssl for the test.
The shared engine has none of these containers, so a daemon that read the local socket
would capture nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from log_capturer_testkit import (
    TEST_IMAGE,
    Daemon,
    Fleet,
    assert_exactly_once,
    metric_total,
    wait_for,
)
from log_capturer_testkit.engines import CertSet, TlsDockerd, make_certs


def require(ok: bool, reason: str) -> None:
    """Skip where the tool is missing; in CI (CI=true) that is a failure."""
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the test needs it)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    require(shutil.which("openssl") is not None, "openssl is not installed")
    return make_certs(tmp_path_factory.mktemp("tls") / "engine", "engine")


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    """Another CA, which signed neither the engine nor anything the engine trusts."""
    return make_certs(tmp_path_factory.mktemp("tls") / "other", "other")


@pytest.fixture(scope="module")
def tls_engine(certs: CertSet, docker_client: docker.DockerClient) -> Iterator[TlsDockerd]:
    require(shutil.which("dockerd") is not None, "dockerd is not installed")
    require(os.geteuid() == 0, "a second dockerd needs root")
    engine = TlsDockerd(certs)
    try:
        engine.start()
        engine.load_image(docker_client, TEST_IMAGE)
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def remote_fleet(tls_engine: TlsDockerd, run_id: str) -> Iterator[Fleet]:
    fleet = Fleet(tls_engine.client(), run_id)
    yield fleet
    fleet.remove_all()


def docker_env(engine: TlsDockerd, cert_dir: Path) -> dict[str, str]:
    return {
        "DOCKER_HOST": engine.host,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(cert_dir),
    }


def numbered(prefix: str, n: int) -> list[str]:
    return [f"{prefix} {i}" for i in range(1, n + 1)]


TLS_ERRORS = "log_capturer_docker_tls_errors_total"
SCRIPT = (
    'i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo "out $i"; '
    'if [ $((i % 10)) = 0 ]; then echo "err $i" >&2; fi; sleep 0.02; done'
)


def test_capture_over_tls_set_up_as_for_the_docker_cli_with_the_pool_and_its_limits(
    make_daemon: Callable[..., Daemon],
    tls_engine: TlsDockerd,
    certs: CertSet,
    remote_fleet: Fleet,
    tmp_path: Path,
) -> None:
    # Three connections for four containers and the event stream: monitors wait, and
    # the turn keeper cuts streams from its own thread (a shutdown of a TLS socket).
    daemon = make_daemon(
        {
            "docker": {"pool": {"max_open": 3, "max_idle": 3, "wait_timeout": "1s"}},
            "container_monitor": {"stream_window": "5s", "contended_window": "500ms"},
        },
        env=docker_env(tls_engine, certs.client_dir(tmp_path / "docker-certs")),
    ).start()
    lines = 250
    names = [f"tls{n}-{daemon.run_id}" for n in range(4)]
    running = [remote_fleet.run(SCRIPT.format(n=lines), name=name) for name in names]
    for container in running:
        remote_fleet.wait_exit(container, timeout=120)
    daemon.wait_captured(4 * (lines + lines // 10), timeout=120)
    metrics = daemon.metrics()
    records = daemon.stop_and_read()
    for name in names:
        assert_exactly_once(records, name, "stdout", numbered("out", lines))
        assert_exactly_once(records, name, "stderr", [f"err {i}" for i in range(10, lines + 1, 10)])
    engine = next(e for e in daemon.log_events() if e["event"] == "docker_engine")
    assert (engine["engine"], engine["source"], engine["tls"]) == (
        tls_engine.host,
        "DOCKER_HOST",
        "verify",
    )
    # The pool's contract and metrics over TLS as over the socket.
    assert metrics["log_capturer_docker_pool_max_open"] == 3
    assert metrics["log_capturer_docker_pool_open_connections"] <= 3
    assert metrics["log_capturer_docker_pool_waits_total"] > 0
    assert metrics['log_capturer_docker_pool_reuses_total{kind="stream"}'] > 0
    assert metrics['log_capturer_stream_windows_total{end="turn"}'] > 0
    assert metrics.get('log_capturer_stream_windows_total{end="error"}', 0) == 0
    assert metric_total(metrics, TLS_ERRORS) == 0


@pytest.mark.parametrize("case", ["engine_from_another_ca", "client_cert_refused"])
def test_a_certificate_refused_either_way_is_named_retried_and_recovers_when_fixed(
    case: str,
    make_daemon: Callable[..., Daemon],
    tls_engine: TlsDockerd,
    certs: CertSet,
    other_certs: CertSet,
    remote_fleet: Fleet,
    tmp_path: Path,
) -> None:
    cert_dir = tmp_path / "docker-certs"
    if case == "engine_from_another_ca":
        certs.client_dir(cert_dir, ca=other_certs.ca)  # we trust a CA that did not sign it
        expected = "certificate_verify_failed"
        cause = "not signed by the CA we trust"
    else:
        other_certs.client_dir(cert_dir, ca=certs.ca)  # our certificate: a CA it never saw
        expected = "bad_certificate"
        cause = "refused our client certificate"
    daemon = make_daemon(env=docker_env(tls_engine, cert_dir)).start(wait_ready=False)
    name = f"fixed-{daemon.run_id}"
    # Lines written while the daemon cannot connect, and after it can (a container that
    # stopped before the daemon's first listing would be left alone: see the README).
    script = (
        'seq 1 100 | sed "s/^/line /"; '
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; "
        'seq 101 200 | sed "s/^/line /"'
    )
    container = remote_fleet.run(script, name=name)

    def tls_errors() -> float:
        return metric_total(daemon.metrics(), TLS_ERRORS)

    wait_for(lambda: daemon.http_status("/health") == 200, 30, what="the daemon's server")
    def named() -> list[dict[str, str]]:
        """The errors logged that name the cause (the engine may also just hang up:
        logged once as a bare EOF, and again when its alert names the cause)."""
        return [
            e
            for e in daemon.log_events()
            if e["event"] == "engine_tls_error" and expected in e["reason"]
        ]

    wait_for(lambda: tls_errors() >= 3 and named(), 30, what="the TLS failure named, retried")
    assert daemon.running
    assert daemon.http_status("/ready") == 503
    assert daemon.http_status("/health") == 200  # running, retrying: not to be restarted
    assert cause in named()[0]["cause"], named()
    # One error per episode, not one per try.
    errors = [e for e in daemon.log_events() if e["event"] == "engine_tls_error"]
    assert len(errors) <= 2 < tls_errors(), (errors, tls_errors())
    assert not any(e["event"] == "engine_tls_recovered" for e in daemon.log_events())

    certs.client_dir(cert_dir)  # the right files, read again without a restart
    daemon.wait_ready(60)
    container.exec_run(["sh", "-c", "echo > /tmp/go"])
    remote_fleet.wait_exit(container)
    daemon.wait_captured(200)
    assert_exactly_once(daemon.stop_and_read(), name, "stdout", numbered("line", 200))
    assert any(e["event"] == "engine_tls_recovered" for e in daemon.log_events())
