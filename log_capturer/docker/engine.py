"""The process's one Docker API client: one requests session over one bounded pool.

What docker-py is used for: only its error classes. A failed request's ``HTTPError``
becomes ``docker.errors.create_api_error_from_http_exception(...)`` (``NotFound`` for
404, ``APIError`` with ``status_code`` and the engine's ``message`` otherwise), which
``is_transient`` and the 404 handling below rely on; tests/unit/test_docker_errors.py
checks that contract against the installed docker-py. ``docker.APIClient`` is not
used: its stock adapter opens a pool per request URL (see adapter.py), its versioned
calls need a negotiated version set through a private attribute, and its streams
need private helpers (``_url``, ``_get``, ``_raise_for_status``). The seven endpoints
used here are one request each, built below.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import docker.errors
import requests
import structlog
from tenacity import (
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from ..backoff import capped_backoff, retrying
from ..metrics.registry import (
    DOCKER_API_ERRORS,
    DOCKER_API_REQUESTS,
    DOCKER_API_RETRIES,
    STREAM_HEADER_TIMEOUTS,
)
from ..timestamps import format_api_ts
from .adapter import PooledUnixAdapter
from .config import DockerConfig
from .endpoint import Endpoint, resolve_endpoint
from .errors import ContainerGoneError, EngineUnavailableError, PoolClosedError, PoolExhaustedError
from .pool import DockerConnectionPool
from .stream import ManagedResponse, StreamCut, StreamEnd

_log = structlog.get_logger(__name__)
T = TypeVar("T")

# The adapter sends every request to the one pool (its engine) whatever the host: this
# is only what requests needs to route ``http+docker://`` to our adapter.
BASE_URL = "http+docker://localhost"


def _user_agent() -> str:
    try:
        return f"log-capturer/{version('log-capturer')}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "log-capturer"


def raise_for_status(response: requests.Response) -> None:
    """Raise docker-py's ``APIError`` (``NotFound`` for 404) for a 4xx/5xx response."""
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        docker.errors.create_api_error_from_http_exception(exc)  # always raises
        raise  # pragma: no cover - only if docker-py stopped raising (the test catches it)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the engine is restarting or overloaded. Not: 4xx, pool exhaustion."""
    if isinstance(exc, PoolExhaustedError | PoolClosedError):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code
        return status is not None and status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


class DockerEngine:
    """Owns the HTTP session, its pool, and the thread that maintains the pool.

    API calls go through :meth:`call`, which retries transient failures with capped
    exponential backoff (tenacity) and counts every call and failure; streams are
    opened with :meth:`open_logs` and :meth:`open_events` and owned by the returned
    :class:`ManagedResponse`.
    """

    def __init__(self, config: DockerConfig, endpoint: Endpoint | None = None) -> None:
        """``endpoint``: where the engine is; by default resolved from the config and the
        environment (:func:`~.endpoint.resolve_endpoint`, which may raise
        :class:`~.endpoint.EndpointError`)."""
        self.config = config
        self.endpoint = endpoint or resolve_endpoint(config)
        tls = self.endpoint.tls
        _log.info(
            "docker_engine",
            engine=self.endpoint.address,
            source=self.endpoint.source,
            tls="off" if tls is None else ("verify" if tls.verify else "no_verify"),
            ca_file=tls.ca_file if tls else None,
            cert_file=tls.cert_file if tls else None,
        )
        self.pool = DockerConnectionPool(self.endpoint, config.pool, timeout=config.timeout)
        self.adapter = PooledUnixAdapter(self.pool)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no .netrc credentials: the pool is the route
        self.session.headers["User-Agent"] = _user_agent()
        self.session.mount("http+docker://", self.adapter)
        self._stop = threading.Event()
        self._maintainer: threading.Thread | None = None
        self._version_lock = threading.Lock()
        self._api_version = None if config.api_version == "auto" else config.api_version
        self.podman: bool | None = None  # known from the first answer (see get)

    def ensure_api_version(self) -> str:
        """With ``api_version: auto``, ask the engine once (retried like any API call).

        Not done in the constructor: building the daemon must not need the engine.
        Every versioned URL asks for it (:meth:`url`), so no call goes out before it.
        """
        with self._version_lock:
            if self._api_version is None:
                url = self.url("/version", versioned=False)
                self._api_version = str(
                    self.call("version", lambda: self._get_json(url)["ApiVersion"])
                )
            return self._api_version

    # -- requests ------------------------------------------------------------------------

    def url(self, path_format: str, *args: str, versioned: bool = True) -> str:
        """The URL of an API path; ``{0}``, ``{1}``... are replaced by the quoted ``args``."""
        path = path_format.format(*(urllib.parse.quote(a, safe="") for a in args))
        if versioned:
            path = f"/v{self.ensure_api_version()}{path}"
        return BASE_URL + path

    def get(
        self,
        url: str,
        params: dict[str, Any] | None = None,
        *,
        stream: bool = False,
        timeout: float | tuple[float, float | None] | None = None,
    ) -> requests.Response:
        """One GET through the pool, status not checked (see :func:`raise_for_status`)."""
        response = self.session.get(
            url,
            params=params,
            stream=stream,
            timeout=self.config.timeout if timeout is None else timeout,
        )
        if self.podman is None:
            # Podman names itself in every answer; discovery's first call (before any
            # log request) settles it.
            self.podman = "Libpod-Api-Version" in response.headers
        return response

    @property
    def whole_second_timestamps(self) -> bool:
        """The engine's log timestamps are whole seconds (Podman 4's Docker API writes
        them as RFC 3339 without a fraction, though it applies ``since`` and ``until``
        to the nanosecond): see :meth:`open_logs` and monitor/admit.py."""
        return bool(self.podman)

    def _get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        with self.get(url, params) as response:
            raise_for_status(response)
            return response.json()

    # -- API calls with retry ------------------------------------------------------------

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one API call, retrying transient errors; raise the permanent ones as they are.

        Each try counts in ``log_capturer_docker_api_requests_total{operation}``."""
        retry = self.config.retry

        def on_retry(exc: BaseException | None, state: RetryCallState) -> None:
            DOCKER_API_RETRIES.labels(operation).inc()
            _log.warning(
                "docker_api_retry",
                operation=operation,
                attempt=state.attempt_number,
                error=repr(exc),
            )

        attempts = retrying(
            on_retry,
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(retry.attempts),
            wait=capped_backoff(retry.initial_backoff, retry.max_backoff),
        )
        try:
            for attempt in attempts:
                with attempt:
                    DOCKER_API_REQUESTS.labels(operation).inc()
                    try:
                        return fn()
                    except Exception as exc:
                        kind = "transient" if is_transient(exc) else "permanent"
                        DOCKER_API_ERRORS.labels(operation, kind).inc()
                        raise
        except Exception as exc:
            if is_transient(exc):
                raise EngineUnavailableError(f"{operation} failed: {exc}") from exc
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> bool:
        """One try, no retries: used for readiness."""
        DOCKER_API_REQUESTS.labels("ping").inc()
        try:
            with self.get(self.url("/_ping", versioned=False)) as response:
                raise_for_status(response)
                return response.text == "OK"
        except Exception as exc:
            kind = "transient" if is_transient(exc) else "permanent"
            DOCKER_API_ERRORS.labels("ping", kind).inc()
            _log.debug("docker_ping_failed", error=repr(exc))
            return False

    def info(self) -> dict[str, Any]:
        """``GET /info``: the engine's system information (``Name``, ``Swarm``...), retried
        like any API call."""
        url = self.url("/info")
        result: dict[str, Any] = self.call("info", lambda: self._get_json(url))
        return result

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        """``GET /containers/{id}/json``; :class:`ContainerGoneError` when the engine has no
        such container."""
        url = self.url("/containers/{0}/json", container_id)
        try:
            result: dict[str, Any] = self.call("inspect_container", lambda: self._get_json(url))
        except docker.errors.NotFound as exc:
            raise ContainerGoneError(container_id) from exc
        return result

    def list_containers(
        self, all: bool = False, filters: dict[str, list[str]] | None = None
    ) -> list[dict[str, Any]]:
        """``GET /containers/json``: summaries (Id, Names, Image, ImageID, Labels, State...)
        of the containers that pass the engine's ``filters`` (see discovery/filters.py)."""
        params: dict[str, Any] = {"all": int(all)}
        if filters:
            params["filters"] = json.dumps(filters)
        url = self.url("/containers/json")
        result: list[dict[str, Any]] = self.call(
            "list_containers", lambda: self._get_json(url, params)
        )
        return result

    # -- streams -------------------------------------------------------------------------

    def open_logs(
        self,
        container_id: str,
        *,
        stdout: bool,
        stderr: bool,
        follow: bool,
        since_ns: int = 0,
        until_ns: int = 0,
        tail: int = 0,
        deadline: float | None = None,
        priority: bool = False,
        wait_timeout: float = 0,
        cut: StreamCut | None = None,
    ) -> ManagedResponse:
        """Open ``/containers/{id}/logs`` with timestamps; the caller owns the response.

        ``tail`` > 0: only the last ``tail`` lines of the log (before ``since`` applies).
        ``priority``/``wait_timeout``: how this request waits for a pooled connection.
        ``cut``: interrupts the request from another thread, also before its response.

        Podman sends a log stream's response headers only with its first line (Docker
        sends them at once): a follow request for a quiet container, or a scan that
        finds nothing before the deadline, gets no answer at all by then. That is the
        quiet window it would be on Docker, not a failure: the response returned has
        ended with ``deadline`` (counted in ``log_capturer_stream_header_timeouts_total``),
        and the connection, its request still pending on the engine, is closed. A cut
        while waiting returns a response ended by the cut.
        """
        params: dict[str, Any] = {
            "stdout": int(stdout),
            "stderr": int(stderr),
            "follow": int(follow),
            "timestamps": 1,
        }
        if self.whole_second_timestamps:
            # Lines come stamped with their second only: a since inside a second would
            # leave out lines that carry that second's stamp, and the marks' counts of
            # lines at a stamp would then drop new lines. From the second's start, every
            # line of that stamp comes again, as the dedup expects.
            since_ns -= since_ns % 1_000_000_000
        if since_ns > 0:
            params["since"] = format_api_ts(since_ns)
        if until_ns > 0:
            params["until"] = format_api_ts(until_ns)
        if tail > 0:
            params["tail"] = tail
        read_timeout = None if deadline is None else max(0.05, deadline - time.monotonic())
        url = self.url("/containers/{0}/logs", container_id)
        cut = cut or StreamCut()
        with self.pool.checkout(priority=priority, wait_timeout=wait_timeout, cut=cut):
            try:
                return self._open_stream(url, params, read_timeout, container_id, cut)
            except requests.exceptions.ReadTimeout:
                if cut.interrupted:
                    return ManagedResponse.ended(cut.reason(), cut)
                if deadline is None:
                    raise
                STREAM_HEADER_TIMEOUTS.inc()
                return ManagedResponse.ended(StreamEnd.DEADLINE, cut)
            except requests.exceptions.ConnectionError:
                if cut.interrupted:  # the socket was shut down under the request
                    return ManagedResponse.ended(cut.reason(), cut)
                raise

    def open_events(self, since_ns: int, filters: dict[str, list[str]]) -> ManagedResponse:
        """Open ``/events`` (JSON objects, one per line) replaying from ``since_ns``."""
        params: dict[str, Any] = {"filters": json.dumps(filters)}
        if since_ns > 0:
            params["since"] = format_api_ts(since_ns)
        with self.pool.checkout(priority=True):  # discovery goes before taking turns
            return self._open_stream(self.url("/events"), params, None, None)

    def _open_stream(
        self,
        url: str,
        params: dict[str, Any],
        read_timeout: float | None,
        container_id: str | None,
        cut: StreamCut | None = None,
    ) -> ManagedResponse:
        response = self.get(url, params, stream=True, timeout=(self.config.timeout, read_timeout))
        managed = ManagedResponse(response, cut)
        try:
            raise_for_status(response)
        except docker.errors.NotFound as exc:
            managed.close()
            if container_id is not None:
                raise ContainerGoneError(container_id) from exc
            raise
        except BaseException:
            managed.close()
            raise
        return managed

    # -- lifecycle -----------------------------------------------------------------------

    def start_maintenance(self, interval: float = 1.0) -> None:
        """Start the thread that expires and health-checks idle connections."""
        if self._maintainer is not None:
            return
        self._maintainer = threading.Thread(
            target=self._maintain_loop,
            args=(interval,),
            name="docker-pool-maintenance",
            daemon=True,
        )
        self._maintainer.start()

    def _maintain_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.pool.maintain()
            except Exception:
                _log.exception("docker_pool_maintenance_failed")

    def close(self) -> None:
        """Stop maintenance and close the pool: waiters fail, idle sockets close now."""
        self._stop.set()
        if self._maintainer is not None:
            self._maintainer.join(timeout=10)
            self._maintainer = None
        self.pool.close()
        self.session.close()
