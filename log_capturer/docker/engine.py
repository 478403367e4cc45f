"""The process's one Docker API client: one ``docker.APIClient`` over one bounded pool."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from ..backoff import capped_backoff
from ..metrics.registry import DOCKER_API_ERRORS, DOCKER_API_RETRIES
from ..timestamps import format_api_ts
from .adapter import PooledUnixAdapter
from .config import DockerConfig
from .errors import ContainerGoneError, EngineUnavailableError, PoolClosedError, PoolExhaustedError
from .pool import DockerConnectionPool
from .stream import ManagedResponse

_log = structlog.get_logger(__name__)
T = TypeVar("T")

# docker-py refuses versions below this; used only until the real one is negotiated.
_BOOTSTRAP_API_VERSION = "1.24"


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
    """Owns the API client, its pool, and the thread that maintains the pool.

    API calls go through :meth:`call`, which retries transient failures with capped
    exponential backoff (tenacity) and counts every failure; streams are opened with
    :meth:`open_logs` and :meth:`open_events` and owned by the returned
    :class:`ManagedResponse`.
    """

    def __init__(self, config: DockerConfig) -> None:
        self.config = config
        self.pool = DockerConnectionPool(config.socket_path, config.pool, timeout=config.timeout)
        self.api = docker.APIClient(
            base_url=f"unix://{config.socket_path}",
            version=_BOOTSTRAP_API_VERSION if config.api_version == "auto" else config.api_version,
            timeout=config.timeout,
            max_pool_size=1,
        )
        stock_adapter = self.api.get_adapter("http+docker://")
        self.adapter = PooledUnixAdapter(self.pool)
        self.api.mount("http+docker://", self.adapter)
        self.api._custom_adapter = self.adapter
        stock_adapter.close()  # never used: it would open a pool per URL
        self._stop = threading.Event()
        self._maintainer: threading.Thread | None = None
        self._version_known = config.api_version != "auto"

    def ensure_api_version(self) -> str:
        """With ``api_version: auto``, ask the engine once (retried like any API call).

        Not done in the constructor: building the daemon must not need the engine.
        """
        if not self._version_known:
            self.api._version = self.call(
                "version", lambda: self.api.version(api_version=False)["ApiVersion"]
            )
            self._version_known = True
        return str(self.api._version)

    # -- API calls with retry ------------------------------------------------------------

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one API call, retrying transient errors; raise the permanent ones as they are."""
        retry = self.config.retry

        def before_sleep(state: RetryCallState) -> None:
            DOCKER_API_RETRIES.labels(operation).inc()
            exc = state.outcome.exception() if state.outcome else None
            _log.warning(
                "docker_api_retry",
                operation=operation,
                attempt=state.attempt_number,
                error=repr(exc),
            )

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(retry.attempts),
            wait=capped_backoff(retry.initial_backoff, retry.max_backoff),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
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
        try:
            return bool(self.api.ping())
        except Exception as exc:
            kind = "transient" if is_transient(exc) else "permanent"
            DOCKER_API_ERRORS.labels("ping", kind).inc()
            _log.debug("docker_ping_failed", error=repr(exc))
            return False

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.call(
                "inspect_container", lambda: self.api.inspect_container(container_id)
            )
        except docker.errors.NotFound as exc:
            raise ContainerGoneError(container_id) from exc
        return result

    def list_containers(self, all: bool = False) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call(
            "list_containers", lambda: self.api.containers(all=all)
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
    ) -> ManagedResponse:
        """Open ``/containers/{id}/logs`` with timestamps; the caller owns the response.

        ``tail`` > 0: only the last ``tail`` lines of the log (before ``since`` applies).
        ``priority``/``wait_timeout``: how this request waits for a pooled connection."""
        params: dict[str, Any] = {
            "stdout": int(stdout),
            "stderr": int(stderr),
            "follow": int(follow),
            "timestamps": 1,
        }
        if since_ns > 0:
            params["since"] = format_api_ts(since_ns)
        if until_ns > 0:
            params["until"] = format_api_ts(until_ns)
        if tail > 0:
            params["tail"] = tail
        read_timeout = None if deadline is None else max(0.05, deadline - time.monotonic())
        url = self.api._url("/containers/{0}/logs", container_id)
        with self.pool.checkout(priority=priority, wait_timeout=wait_timeout):
            return self._open_stream(url, params, read_timeout, container_id)

    def open_events(self, since_ns: int, filters: dict[str, list[str]]) -> ManagedResponse:
        """Open ``/events`` (JSON objects, one per line) replaying from ``since_ns``."""
        params: dict[str, Any] = {"filters": json.dumps(filters)}
        if since_ns > 0:
            params["since"] = format_api_ts(since_ns)
        with self.pool.checkout(priority=True):  # discovery goes before taking turns
            return self._open_stream(self.api._url("/events"), params, None, None)

    def _open_stream(
        self,
        url: str,
        params: dict[str, Any],
        read_timeout: float | None,
        container_id: str | None,
    ) -> ManagedResponse:
        response = self.api._get(
            url, params=params, stream=True, timeout=(self.config.timeout, read_timeout)
        )
        managed = ManagedResponse(response)
        try:
            self.api._raise_for_status(response)
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
        self.api.close()
