"""The one thing log_capturer takes from docker-py at run time: its API error classes.

``log_capturer.docker.engine.raise_for_status`` turns a failed response into
``docker.errors.create_api_error_from_http_exception(...)``; ``is_transient`` reads
``status_code`` and the engine maps ``NotFound`` to ``ContainerGoneError``. If a
docker-py release changes any of that, these tests name what changed and the version.
"""

from __future__ import annotations

import json
from importlib.metadata import version

import docker.errors
import pytest
import requests

from log_capturer.docker.engine import is_transient, raise_for_status

DOCKER_PY = version("docker")


def response(status: int, body: bytes, content_type: str = "application/json") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body  # a finished body, as requests stores it
    r.headers["Content-Type"] = content_type
    r.url = "http+docker://localhost/v1.41/containers/abc/json"
    r.reason = "reason"
    return r


def raised(r: requests.Response) -> BaseException:
    try:
        raise_for_status(r)
    except BaseException as exc:
        return exc
    raise AssertionError(
        f"docker-py {DOCKER_PY}: create_api_error_from_http_exception no longer raises "
        f"for HTTP {r.status_code}"
    )


def test_404_becomes_not_found_with_the_engines_message() -> None:
    exc = raised(response(404, json.dumps({"message": "No such container: abc"}).encode()))
    assert isinstance(exc, docker.errors.NotFound), (
        f"docker-py {DOCKER_PY}: create_api_error_from_http_exception(404) gave "
        f"{type(exc).__name__}, not docker.errors.NotFound (ContainerGoneError depends on it)"
    )
    assert isinstance(exc, docker.errors.APIError), (
        f"docker-py {DOCKER_PY}: docker.errors.NotFound is no longer an APIError"
    )
    assert exc.status_code == 404, f"docker-py {DOCKER_PY}: APIError.status_code changed"
    assert exc.explanation == "No such container: abc", (
        f"docker-py {DOCKER_PY}: APIError.explanation no longer carries the engine's message"
    )
    assert not is_transient(exc)


@pytest.mark.parametrize(("status", "transient"), [(500, True), (503, True), (409, False)])
def test_other_errors_are_api_errors_with_their_status(status: int, transient: bool) -> None:
    exc = raised(response(status, json.dumps({"message": "boom"}).encode()))
    assert isinstance(exc, docker.errors.APIError) and type(exc) is docker.errors.APIError, (
        f"docker-py {DOCKER_PY}: create_api_error_from_http_exception({status}) gave "
        f"{type(exc).__name__}, not docker.errors.APIError"
    )
    assert exc.status_code == status, f"docker-py {DOCKER_PY}: APIError.status_code changed"
    assert is_transient(exc) is transient


def test_a_plain_text_error_body_is_the_explanation() -> None:
    exc = raised(response(500, b"engine exploded\n", "text/plain"))
    assert isinstance(exc, docker.errors.APIError)
    assert exc.explanation == "engine exploded", (
        f"docker-py {DOCKER_PY}: a non-JSON error body is no longer the explanation"
    )


def test_success_raises_nothing() -> None:
    raise_for_status(response(200, b"[]"))
