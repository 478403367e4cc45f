"""The one bounded pool of connections to the Docker engine."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import urllib3
from urllib3.util.wait import wait_for_read

from ..metrics.registry import DOCKER_TLS_ERRORS
from .config import PoolConfig
from .connection import DockerSocketConnection
from .endpoint import Endpoint, TlsContext, tls_failure
from .errors import PoolClosedError, PoolExhaustedError

if TYPE_CHECKING:
    from .stream import StreamCut

_log = structlog.get_logger(__name__)
_STREAM_PATH = re.compile(r"^(?:/v[\d.]+)?(?:/containers/[^/]+/(?:logs|attach)|/events)\b")


def request_kind(url: str) -> str:
    """``stream`` for log, attach and event streams (held for long), ``api`` for everything else."""
    return "stream" if _STREAM_PATH.match(url) else "api"


@dataclass(frozen=True)
class PoolStats:
    """A consistent snapshot of the pool's gauges and counters."""

    max_open: int
    open: int
    in_use: int
    idle: int
    waiting: int
    new_connections: int
    checkouts: dict[str, int] = field(default_factory=dict)
    reuses: dict[str, int] = field(default_factory=dict)
    waits: int = 0
    wait_seconds: float = 0.0
    wait_timeouts: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    health_checks: dict[str, int] = field(default_factory=dict)

    def reuse_ratio(self, kind: str) -> float:
        """Share of checkouts of ``kind`` served by an existing connection (1.0 before any)."""
        total = self.checkouts.get(kind, 0)
        return self.reuses.get(kind, 0) / total if total else 1.0


class DockerConnectionPool(urllib3.HTTPConnectionPool):
    """A bounded pool of connections to the engine, with ``database/sql`` semantics.

    One pool serves the whole process: API calls, log streams and the event stream,
    over the engine's unix socket or TCP, with or without TLS (the same contract).
    Its contract, set by :class:`PoolConfig`:

    * ``max_open``: at most this many connections exist at once, in use or idle.
      A caller that finds no idle connection and ``max_open`` reached waits, first
      come first served, up to ``wait_timeout`` for one to be returned, then gets
      :class:`PoolExhaustedError`. A new connection is made only under the cap.
      API calls and callers marked ``priority`` (see :meth:`checkout`: the event
      stream, a container's first read) are served before waiting log streams, so a
      new container is not queued behind hundreds of monitors taking turns
      (monitor/turns.py ends long-held streams while anyone waits).
    * ``max_idle``: at most this many idle connections are kept; one returned beyond
      that is closed.
    * ``max_lifetime``: a connection older than this is closed when returned or found
      idle (0 = never). ``max_idle_time``: an idle connection unused this long is
      closed by :meth:`maintain` or when found (0 = never).
    * ``health_check_interval``: :meth:`maintain` sends ``GET /_ping`` on idle
      connections not checked for that long and closes those that fail; a connection
      the engine closed is found (readable at EOF) before it is handed out.
    * A connection urllib3 discards after an error, or that its user closed (a
      stream cut at its deadline), frees its slot when it comes back.
    * After :meth:`close`, waiters and new callers get :class:`PoolClosedError`;
      connections still in use are closed when returned.
    * A TLS failure (the engine refused our certificate, or we refused its) is named
      once per episode (``engine_tls_error`` with OpenSSL's reason and what it means,
      ``engine_tls_recovered`` at the next answer) and counted every time
      (``log_capturer_docker_tls_errors_total{reason}``); the request fails as any
      connection error does, and its caller retries.

    Counters (:meth:`stats`): open, in use, idle, waiting, new connections,
    checkouts and reuses per request kind (``api``, ``stream``), waits, wait time,
    wait timeouts, closes by reason, health checks by result.
    """

    ConnectionCls = DockerSocketConnection

    def __init__(self, endpoint: Endpoint, config: PoolConfig, timeout: float) -> None:
        super().__init__(
            endpoint.host, endpoint.port or None, timeout=timeout, maxsize=1, block=False
        )
        self.endpoint = endpoint
        self.socket_path = endpoint.path
        self.tls = TlsContext(endpoint.tls) if endpoint.tls is not None else None
        self.config = config
        self._tls_failing: str | None = None  # the reason of the TLS failure episode
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        self._priority_cond = threading.Condition(lock)  # the same lock: one state
        self._idle: deque[DockerSocketConnection] = deque()
        self._open = 0
        self._in_use = 0
        self._waiting = 0
        self._priority_waiting = 0
        self._closed = False
        self._local = threading.local()
        self._new_connections = 0
        self._checkouts: Counter[str] = Counter()
        self._reuses: Counter[str] = Counter()
        self._waits = 0
        self._wait_seconds = 0.0
        self._wait_timeouts = 0
        self._closed_by: Counter[str] = Counter()
        self._health: Counter[str] = Counter()

    # -- the three steps of a connection's life --------------------------------------

    def _new_conn(self) -> DockerSocketConnection:
        """A fresh, not yet connected connection (it connects on its first request)."""
        with self._cond:
            self._new_connections += 1
        self.num_connections += 1
        return DockerSocketConnection(self.endpoint, self.timeout.connect_timeout, self.tls)  # type: ignore[arg-type]

    def _get_conn(self, timeout: float | None = None) -> DockerSocketConnection:
        """Check out the most recently used idle connection, a new one under the cap, or wait.

        Raises only :class:`EmptyPoolError` subclasses, as urllib3 expects: for any other
        error it would hand back ``None`` and the accounting would lose a slot.
        """
        kind = getattr(self._local, "kind", "api")
        # Short API calls (inspect, list, ping) go first: they hand the connection back
        # at once, while a stream may hold one for a whole window.
        priority: bool = kind == "api" or getattr(self._local, "priority", False)
        wait = getattr(self._local, "wait_timeout", None) or self.config.wait_timeout
        if timeout is not None:
            wait = timeout
        deadline = time.monotonic() + wait
        cond = self._priority_cond if priority else self._cond
        stale: list[tuple[DockerSocketConnection, str]] = []
        conn: DockerSocketConnection | None = None
        with self._cond:
            wait_started: float | None = None
            try:
                while True:
                    if self._closed:
                        raise PoolClosedError(self, "the Docker connection pool is closed")
                    if priority or not self._priority_waiting:
                        conn = self._take_idle_locked(stale)
                        if conn is not None or self._open < self.config.max_open:
                            break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._wait_timeouts += 1
                        raise PoolExhaustedError(
                            self,
                            f"no Docker connection free within {wait:g}s: all "
                            f"{self.config.max_open} (docker.pool.max_open) in use",
                        )
                    if wait_started is None:
                        wait_started = time.monotonic()
                        self._waits += 1
                        self._waiting += 1
                        self._priority_waiting += priority
                    cond.wait(remaining)
            finally:
                if wait_started is not None:
                    self._waiting -= 1
                    self._priority_waiting -= priority
                    self._wait_seconds += time.monotonic() - wait_started
                    if priority and not self._priority_waiting:
                        self._cond.notify()  # others may go again
            if conn is None:
                self._open += 1  # reserve the slot before creating outside the lock
            else:
                self._reuses[kind] += 1
            self._in_use += 1
            self._checkouts[kind] += 1
        self._close_all(stale)
        if conn is None:
            conn = self._new_conn()
        lease = conn.new_lease()
        cut: StreamCut | None = getattr(self._local, "cut", None)
        if cut is not None:
            cut.attach(conn, lease)  # from now on it can interrupt this request
        return conn

    def _put_conn(self, conn: Any) -> None:
        """Take a connection back: keep it idle, or close it (cap, age, pool closed, dead)."""
        reason: str | None = None
        with self._cond:
            self._in_use -= 1
            if conn is None or conn.sock is None:
                # urllib3 discarded it after an error (None), or its user closed it.
                self._open -= 1
                self._closed_by["broken" if conn is None else "closed_in_use"] += 1
                self._notify_locked()
                return
            conn.new_lease()
            now = time.monotonic()
            if self._closed:
                reason = "pool_closed"
            elif self._expired(conn, now, idle=False):
                reason = "max_lifetime"
            elif len(self._idle) >= self.config.max_idle:
                reason = "max_idle"
            if reason is None:
                conn.idle_since = now
                self._idle.append(conn)
            else:
                self._open -= 1
                self._closed_by[reason] += 1
            self._notify_locked()
        if reason is not None:
            conn.close()

    # -- helpers ----------------------------------------------------------------------

    def _notify_locked(self, n: int = 1) -> None:
        """A connection or a slot came free: wake a priority waiter first."""
        if self._priority_waiting:
            self._priority_cond.notify(n)
        else:
            self._cond.notify(n)

    @contextmanager
    def checkout(
        self, *, priority: bool = False, wait_timeout: float = 0, cut: StreamCut | None = None
    ) -> Iterator[None]:
        """Options for the checkouts this thread makes inside the block: served before
        non-priority waiters; wait up to ``wait_timeout`` (0 = the pool's); ``cut`` gets
        the connection, so it can interrupt the request before its response arrives."""
        self._local.priority = priority
        self._local.wait_timeout = wait_timeout
        self._local.cut = cut
        try:
            yield
        finally:
            self._local.priority = False
            self._local.wait_timeout = 0
            self._local.cut = None

    def _expired(self, conn: DockerSocketConnection, now: float, idle: bool) -> str | None:
        lifetime = self.config.max_lifetime
        if lifetime and now - conn.created_at >= lifetime:
            return "max_lifetime"
        idle_time = self.config.max_idle_time
        if idle and idle_time and now - conn.idle_since >= idle_time:
            return "max_idle_time"
        return None

    def _take_idle_locked(
        self, stale: list[tuple[DockerSocketConnection, str]]
    ) -> DockerSocketConnection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            reason = self._expired(conn, now, idle=True)
            if reason is None and _is_dropped(conn):
                reason = "dropped"
            if reason is None:
                return conn
            self._open -= 1
            self._closed_by[reason] += 1
            stale.append((conn, reason))
        return None

    @staticmethod
    def _close_all(conns: list[tuple[DockerSocketConnection, str]]) -> None:
        for conn, _ in conns:
            conn.close()

    # -- public -----------------------------------------------------------------------

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self._local.kind = request_kind(url)
        try:
            response = super().urlopen(method, url, *args, **kwargs)
        except Exception as exc:
            cut: StreamCut | None = getattr(self._local, "cut", None)
            if self.tls is not None and not (cut is not None and cut.interrupted):
                self._note_tls_failure(exc)  # (a request we cut fails as it may)
            raise
        if self._tls_failing is not None:
            self._note_tls_recovered()
        return response

    def _note_tls_failure(self, exc: BaseException) -> None:
        failure = tls_failure(exc)
        if failure is None:
            return
        DOCKER_TLS_ERRORS.labels(failure.reason).inc()
        with self._cond:
            # Logged when failures start, and again only when their reason changes to
            # another that names a cause (a bare EOF may stand for the same refusal).
            current = self._tls_failing
            new_episode = current is None or (
                not failure.vague and failure.reason != current
            )
            if current is None or not failure.vague:
                self._tls_failing = failure.reason
        if new_episode:
            _log.error(
                "engine_tls_error",
                engine=self.endpoint.address,
                reason=failure.reason,
                detail=failure.detail,
                cause=failure.cause,
            )

    def _note_tls_recovered(self) -> None:
        with self._cond:
            reason, self._tls_failing = self._tls_failing, None
        if reason is not None:
            _log.info("engine_tls_recovered", engine=self.endpoint.address, after=reason)

    def maintain(self) -> None:
        """Close idle connections past their age limits; health-check the others with /_ping.

        Called periodically by the pool's owner (the engine's maintenance thread).
        """
        now = time.monotonic()
        stale: list[tuple[DockerSocketConnection, str]] = []
        to_check: list[DockerSocketConnection] = []
        interval = self.config.health_check_interval
        with self._cond:
            keep: deque[DockerSocketConnection] = deque()
            for conn in self._idle:
                reason = self._expired(conn, now, idle=True)
                if reason is None and _is_dropped(conn):
                    reason = "dropped"
                if reason is not None:
                    self._open -= 1
                    self._closed_by[reason] += 1
                    stale.append((conn, reason))
                elif interval and now - conn.checked_at >= interval:
                    to_check.append(conn)
                    self._in_use += 1  # out of the idle list while being checked
                else:
                    keep.append(conn)
            self._idle = keep
            if stale:
                self._notify_locked(len(stale))
        self._close_all(stale)
        for conn in to_check:
            healthy = _ping(conn, self.timeout.read_timeout or 5.0)
            conn.checked_at = time.monotonic()
            if not self._return_checked(conn, healthy):
                conn.close()

    def _return_checked(self, conn: DockerSocketConnection, healthy: bool) -> bool:
        """Put a checked connection back at the cold end of the idle list; False = close it."""
        with self._cond:
            self._health["ok" if healthy else "failed"] += 1
            self._in_use -= 1
            keep = healthy and not self._closed
            if keep:
                self._idle.appendleft(conn)
            else:
                self._open -= 1
                self._closed_by["pool_closed" if healthy else "health_check"] += 1
            self._notify_locked()
            return keep

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                max_open=self.config.max_open,
                open=self._open,
                in_use=self._in_use,
                idle=len(self._idle),
                waiting=self._waiting,
                new_connections=self._new_connections,
                checkouts=dict(self._checkouts),
                reuses=dict(self._reuses),
                waits=self._waits,
                wait_seconds=self._wait_seconds,
                wait_timeouts=self._wait_timeouts,
                closed=dict(self._closed_by),
                health_checks=dict(self._health),
            )

    def close(self) -> None:
        """Close idle connections now, the others when returned; wake and fail all waiters."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = list(self._idle), deque()
            self._open -= len(idle)
            self._closed_by["pool_closed"] += len(idle)
            self._cond.notify_all()
            self._priority_cond.notify_all()
        for conn in idle:
            conn.close()


def _is_dropped(conn: DockerSocketConnection) -> bool:
    """An idle connection is dead if its socket is readable: the engine closed it (EOF)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        return bool(wait_for_read(sock, timeout=0.0))
    except OSError:
        return True


def _ping(conn: DockerSocketConnection, timeout: float) -> bool:
    """GET /_ping on an idle connection; any failure means the connection is not healthy."""
    try:
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.request("GET", "/_ping")
        response = conn.getresponse()  # preloads the body into .data
        body = response.data
    except Exception as exc:  # http.client and urllib3 raise assorted types; all mean unhealthy
        _log.info("docker_pool_health_check_failed", error=repr(exc))
        return False
    return response.status == 200 and body.strip() == b"OK"
