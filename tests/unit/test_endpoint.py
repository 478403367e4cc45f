"""Where the engine is (docker.host, socket_path, DOCKER_HOST), TLS settings as the docker
CLI reads them, TLS failures named; Podman's whole-second timestamps."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydantic import ValidationError
from urllib3.exceptions import MaxRetryError, SSLError

from log_capturer.docker.config import DockerConfig
from log_capturer.docker.endpoint import (
    EndpointError,
    TlsContext,
    TlsFiles,
    resolve_endpoint,
    tls_failure,
)
from log_capturer.docker.engine import DockerEngine
from log_capturer.monitor.admit import RecentLines, StreamDedup
from log_capturer.positions.marks import ZERO

from .fake_engine import FakeEngine


def test_the_address_comes_from_host_then_socket_path_then_docker_host_then_the_default() -> None:
    env = {"DOCKER_HOST": "tcp://remote:2375"}
    assert resolve_endpoint(DockerConfig(host="unix:///a.sock"), env).address == "unix:///a.sock"
    assert resolve_endpoint(DockerConfig(socket_path="/b.sock"), env).address == "unix:///b.sock"
    endpoint = resolve_endpoint(DockerConfig(), env)
    found = (endpoint.address, endpoint.source, endpoint.tls)
    assert found == ("tcp://remote:2375", "DOCKER_HOST", None)
    default = resolve_endpoint(DockerConfig(), {})
    assert (default.address, default.source) == ("unix:///var/run/docker.sock", "default")


def test_host_and_socket_path_together_or_another_scheme_are_config_errors() -> None:
    with pytest.raises(ValidationError, match="not both"):
        DockerConfig(host="unix:///a.sock", socket_path="/b.sock")
    with pytest.raises(ValidationError, match="expected unix"):
        DockerConfig(host="ssh://me@remote")
    with pytest.raises(EndpointError, match="ssh://"):
        resolve_endpoint(DockerConfig(), {"DOCKER_HOST": "ssh://me@remote"})


def test_tls_as_the_docker_cli_reads_its_environment(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    env = {
        "DOCKER_HOST": "tcp://remote",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(tmp_path),
    }
    endpoint = resolve_endpoint(DockerConfig(), env)
    assert endpoint.port == 2376  # the CLI's TLS port when none is given
    assert endpoint.tls == TlsFiles(
        True, str(tmp_path / "ca.pem"), str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    )
    # An empty DOCKER_TLS_VERIFY is off; DOCKER_TLS alone is TLS without verification.
    plain = resolve_endpoint(DockerConfig(), {**env, "DOCKER_TLS_VERIFY": ""})
    assert (plain.port, plain.tls) == (2375, None)
    tls_only = {**env, "DOCKER_TLS_VERIFY": "", "DOCKER_TLS": "1"}
    unverified = resolve_endpoint(DockerConfig(), tls_only)
    assert unverified.tls is not None and not unverified.tls.verify
    # Config keys win over the environment, key by key.
    config = DockerConfig(tls={"ca_file": "/etc/engine-ca.pem"})
    assert resolve_endpoint(config, env).tls == TlsFiles(
        True, "/etc/engine-ca.pem", str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    )
    with pytest.raises(EndpointError, match="both cert_file and key_file"):
        resolve_endpoint(DockerConfig(tls={"cert_file": "/c.pem"}), {"DOCKER_HOST": "tcp://r"})


def test_tls_files_that_cannot_be_loaded_fail_as_a_named_tls_failure(tmp_path: Path) -> None:
    context = TlsContext(TlsFiles(True, str(tmp_path / "missing.pem"), None, None))
    with pytest.raises(ssl.SSLError) as caught:
        context.get()
    failure = tls_failure(caught.value)
    assert failure is not None and failure.reason == "load_failed", failure


def test_tls_failure_finds_the_ssl_error_under_requests_and_urllib3() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.reason = "CERTIFICATE_VERIFY_FAILED"
    verify.verify_message = "unable to get local issuer certificate"
    wrapped = requests.exceptions.SSLError(MaxRetryError(None, "/_ping", SSLError(verify)))  # type: ignore[arg-type]
    failure = tls_failure(wrapped)
    assert failure is not None
    assert failure.reason == "certificate_verify_failed"
    assert failure.detail == "unable to get local issuer certificate"
    assert "not signed by the CA we trust" in failure.cause
    eof = tls_failure(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert eof is not None and eof.vague and eof.reason == "unexpected_eof"
    assert tls_failure(requests.exceptions.ConnectionError("refused")) is None


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeEngine]:
    engine = FakeEngine(tmp_path / "engine.sock")
    yield engine
    engine.stop()


def test_with_podman_since_is_floored_to_its_second(fake: FakeEngine) -> None:
    engine = DockerEngine(DockerConfig(socket_path=fake.path, api_version="1.41"))
    try:
        since = 1_700_000_000_700_000_000
        for podman, expected in ((False, "1700000000.700000000"), (True, "1700000000.000000000")):
            engine.podman = podman
            with engine.open_logs(
                "c1", stdout=True, stderr=True, follow=False, since_ns=since,
                deadline=time.monotonic() + 5,
            ):  # fmt: skip
                pass
            assert fake.queries[-1][1]["since"] == expected
    finally:
        engine.close()


def test_with_whole_second_stamps_repeated_lines_of_a_second_are_all_new() -> None:
    second = b"2026-12-04T15:03:48.000000000Z"
    messages = [b"same", b"same", b"other", b"same"]
    docker = StreamDedup(ZERO, RecentLines())
    keep, _ = docker.admit([second] * 4, messages, 16) or ([True] * 4, [])
    assert keep == [True, False, True, True]  # the 2nd: a rotation repeat (right at 1 ns)
    podman = StreamDedup(ZERO, RecentLines(), whole_seconds=True)
    result = podman.admit([second] * 4, messages, 16)
    assert result is not None and result == ([True] * 4, [1, 2, 3, 4])
    assert podman.mark.seq == 4
