"""At-least-once delivery of a network sink's payloads to its endpoint over HTTP: send,
retry what is transient with capped backoff for ``retry_budget``, move what is still
undelivered to the disk spool (replayed in order by :mod:`.replay`), settle refusals
(:mod:`.bisection`, :mod:`.dead_letters`), and count all of it under the sink's name.
What a sink supplies and what answers mean: :mod:`.outcomes`."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic

import requests
import structlog
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, retry_if_exception_type

from ... import __version__
from ...backoff import backoff_seconds, retrying
from ...metrics.registry import (
    SINK_BATCHES,
    SINK_PUSH_BYTES,
    SINK_RECORDS,
    SINK_REQUEST_BYTES,
    SINK_REQUEST_SECONDS,
    SINK_RETRIES,
    SINK_UP,
)
from ...pipeline.batch import lag_sample
from ..base import SinkError, observe_lag
from .auth import make_auth
from .bisection import Bisection, max_requests
from .config import NetworkSinkConfig
from .dead_letters import DeadLetterFile
from .outcomes import Accepted, Endpoint, P, Refused, Stopping, Transient
from .replay import SpoolReplayer
from .spool import DiskSpool, SpoolError, SpoolFullError
from .text import short

_log = structlog.get_logger(__name__)

__all__ = ["Delivery", "SinkUnavailableError", "max_requests"]


class SinkUnavailableError(SinkError):
    """The server stayed unavailable for ``retry_budget`` and there is no spool."""


class _TransientFailure(Exception):
    def __init__(self, transient: Transient) -> None:
        super().__init__(f"{transient.status or 'no response'}: {transient.message}")
        self.transient = transient


class _Undelivered(Exception):
    def __init__(self, remaining: list[Any], cause: _TransientFailure) -> None:
        super().__init__(str(cause))
        self.remaining = remaining
        self.cause = cause


class Delivery(Generic[P]):
    """Delivers payloads to one endpoint, at least once.

    :meth:`deliver` returns only when every entry of its payloads is in one of three
    places:

    * stored by the server, possibly after retries (connection errors, timeouts, 408,
      429, 5xx: capped exponential backoff with jitter, ``Retry-After`` honoured) within
      ``retry_budget``;
    * in the disk spool (fsynced), because the server stayed unavailable for
      ``retry_budget``, or because the spool already holds older payloads (new ones
      queue behind them, so the server receives each stream in order). The replayer
      thread sends the spool in order, retrying without limit, and deletes an entry only
      once it is settled; the spool survives restarts;
    * in the dead-letter file (fsynced) with the server's reason, because the server
      refused it for good.

    A refusal is settled in at most :func:`max_requests` requests (``3 +
    ceil(log2(n))`` for a payload of n entries, the refused request included; how:
    :mod:`.bisection`). One log line per refused payload.

    Otherwise :meth:`deliver` raises :class:`SinkError` and nothing counts as accepted:
    the spool is full (backpressure), a disk write failed, or there is no spool and the
    server is unavailable. An entry may reach the server more than once (a retry after a
    lost response, a replay after a crash, bisection): the protocols used here drop exact
    duplicates.

    Threads: :meth:`deliver` runs in the caller's thread (the dispatcher). The replayer
    thread starts when the spool is first used (or holds entries at start); :meth:`close`
    stops and joins it, leaving the spool on disk.
    """

    def __init__(
        self,
        endpoint: Endpoint[P],
        config: NetworkSinkConfig,
        *,
        spool_dir: str,
        dead_letter_path: str,
    ) -> None:
        self.endpoint = endpoint
        self.config = config
        self.name = endpoint.name
        auth = make_auth(config, self.name)  # reads the secrets: fails before anything opens
        self.dead_letters = DeadLetterFile(dead_letter_path)
        self._stopping = threading.Event()
        self._closed = False
        self._up = True
        self._spool: DiskSpool | None = None
        self._replayer: SpoolReplayer[P] | None = None
        if config.spool_max_bytes:
            self._spool = DiskSpool(spool_dir, config.spool_max_bytes, self.name)
            self._replayer = SpoolReplayer(
                self.name,
                self._spool,
                endpoint.from_spool,
                lambda payload: self._deliver([payload], deadline=None),
                self._stopping,
                (config.min_backoff, config.max_backoff),
            )
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"log-capturer/{__version__}"
        self._session.auth = auth
        # Per request, not session.verify: requests lets REQUESTS_CA_BUNDLE and
        # CURL_CA_BUNDLE override a session's verify (requests#3829), not a request's.
        self._verify: str | bool = config.ca_file or True
        SINK_UP.labels(self.name).set(1)
        if self._spool is not None and not self._spool.empty:
            _log.info(
                "sink_spool_resuming",
                sink=self.name,
                records=self._spool.records,
                bytes=self._spool.used_bytes,
            )
            assert self._replayer is not None
            self._replayer.start()

    @property
    def up(self) -> bool:
        """False after a send failed (unavailable, 401/403/404); True after one succeeded."""
        return self._up

    @property
    def spool(self) -> DiskSpool | None:
        return self._spool

    # -- accepting -------------------------------------------------------------------

    def deliver(self, payloads: Sequence[P]) -> None:
        """Deliver, spool or dead-letter every payload (see the class docstring)."""
        if self._closed:
            raise SinkError(f"{self.name} sink is closed")
        if not payloads:
            return
        if self._spool is not None and not self._spool.empty:
            self._to_spool(list(payloads), reason="spool_not_empty")
            return
        deadline = time.monotonic() + self.config.retry_budget
        try:
            self._deliver(payloads, deadline)
        except _Undelivered as exc:
            if self._spool is None:
                records = sum(len(p) for p in exc.remaining)
                raise SinkUnavailableError(
                    f"{self.name} unavailable for {self.config.retry_budget:g}s "
                    f"({records} records not sent): {exc.cause}"
                ) from exc.cause
            self._to_spool(exc.remaining, reason="unavailable")
        except Stopping as exc:
            raise SinkError(f"{self.name} sink is closing") from exc

    def _to_spool(self, payloads: list[P], reason: str) -> None:
        assert self._spool is not None
        records = sum(len(p) for p in payloads)
        try:
            self._spool.append([(p.to_spool(), len(p)) for p in payloads])
        except SpoolFullError as exc:
            SINK_BATCHES.labels(self.name, "spool_full").inc()
            _log.warning(
                "sink_spool_full",
                sink=self.name,
                records=records,
                bytes=self._spool.used_bytes,
                max_bytes=self._spool.max_bytes,
            )
            raise SinkError(f"{self.name}: {exc}") from exc
        except SpoolError as exc:
            _log.error("sink_spool_write_failed", sink=self.name, error=str(exc))
            raise SinkError(f"{self.name}: {exc}") from exc
        SINK_BATCHES.labels(self.name, "spooled").inc(len(payloads))
        SINK_RECORDS.labels(self.name, "spooled").inc(records)
        if reason != "spool_not_empty":
            _log.warning(
                "sink_batch_spooled",
                sink=self.name,
                reason=reason,
                records=records,
                spool_records=self._spool.records,
                spool_bytes=self._spool.used_bytes,
            )
        assert self._replayer is not None
        self._replayer.wake()

    # -- sending ---------------------------------------------------------------------

    def _deliver(self, payloads: Sequence[P], deadline: float | None) -> None:
        """Send each payload; settle refusals.

        Raises :class:`_Undelivered` with what is not settled yet when ``deadline``
        passes, :class:`Stopping` on close, :class:`DeadLetterError` on a disk error.
        """
        pending = deque(payloads)
        while pending:
            payload = pending.popleft()
            try:
                outcome = self._send(payload, deadline)
            except _TransientFailure as exc:
                raise _Undelivered([payload, *pending], exc) from exc
            if isinstance(outcome, Refused):
                try:
                    self._settle(payload, outcome, deadline)
                except _Undelivered as exc:
                    exc.remaining.extend(pending)
                    raise
            else:
                self._delivered(payload)

    def _send(self, payload: P, deadline: float | None) -> Accepted | Refused[P]:
        """One payload, retried while the server is unavailable, until ``deadline``
        (None: forever); raises :class:`_TransientFailure` when it passes."""

        def stop(state: RetryCallState) -> bool:
            if deadline is None:
                return False
            now = time.monotonic()
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.transient.retry_after if isinstance(exc, _TransientFailure) else None
            return now >= deadline or (retry_after is not None and now + retry_after > deadline)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _TransientFailure) and exc.transient.retry_after is not None:
                seconds = exc.transient.retry_after
            else:
                seconds = backoff_seconds(
                    state.attempt_number, self.config.min_backoff, self.config.max_backoff
                )
            if deadline is not None:
                seconds = min(seconds, max(0.0, deadline - time.monotonic()))
            return seconds

        def on_retry(exc: BaseException | None, state: RetryCallState) -> None:
            SINK_RETRIES.labels(self.name).inc()
            SINK_BATCHES.labels(self.name, "retried").inc()
            SINK_RECORDS.labels(self.name, "retried").inc(len(payload))
            wait_s = state.next_action.sleep if state.next_action else 0.0
            _log.warning(
                "sink_request_retry",
                sink=self.name,
                attempt=state.attempt_number,
                records=len(payload),
                wait_seconds=round(wait_s, 3),
                error=short(str(exc)),
            )

        SINK_PUSH_BYTES.labels(self.name).observe(len(payload.body()))
        retry = retrying(
            on_retry,
            retry=retry_if_exception_type(_TransientFailure),
            stop=stop,
            wait=wait,
            sleep=self._sleep,
        )
        result: Accepted | Refused[P] = retry(self._post, payload)
        return result

    def _post(self, payload: P) -> Accepted | Refused[P]:
        """One HTTP request; raises :class:`_TransientFailure` for a transient answer."""
        body = payload.body()
        headers = {**self.endpoint.headers, **payload.content_headers}
        started = time.monotonic()
        SINK_REQUEST_BYTES.labels(self.name).inc(len(body))
        try:
            with self._session.post(
                self.endpoint.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=(self.config.connect_timeout, self.config.timeout),
                verify=self._verify,
            ) as response:
                status = response.status_code
                content = response.content
                answer_headers = response.headers
        except requests.RequestException as exc:
            SINK_REQUEST_SECONDS.labels(self.name, "error").observe(time.monotonic() - started)
            self._set_up(False)
            raise _TransientFailure(Transient(None, f"{type(exc).__name__}: {exc}")) from exc
        SINK_REQUEST_SECONDS.labels(self.name, str(status)).observe(time.monotonic() - started)
        outcome = self.endpoint.classify(status, content, answer_headers, payload)
        if isinstance(outcome, Accepted):
            return outcome
        if isinstance(outcome, Transient) or status in (401, 403, 404) or 300 <= status < 400:
            self._set_up(False)
        elif status < 300:  # a partial success: the server is up
            self._set_up(True)
        if status in (401, 403):
            _log.error(
                "sink_unauthorized",
                sink=self.name,
                status=status,
                error=short(outcome.message),
                hint="check tenant_id and the credentials (username/password_*, bearer_token_*)",
            )
        if isinstance(outcome, Transient):
            raise _TransientFailure(outcome)
        return outcome

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise Stopping()

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            SINK_UP.labels(self.name).set(1 if up else 0)
            if up:
                _log.info("sink_up", sink=self.name)
            else:
                _log.warning("sink_down", sink=self.name)

    def _delivered(self, payload: P) -> None:
        self._set_up(True)
        SINK_BATCHES.labels(self.name, "sent").inc()
        SINK_RECORDS.labels(self.name, "sent").inc(len(payload))
        observe_lag(self.name, lag_sample(payload.timestamps_ns()))

    def _settle(self, payload: P, first: Refused[P], deadline: float | None) -> None:
        """Settle a refused payload in at most :func:`max_requests` requests in all
        (:class:`~.bisection.Bisection`); dead-letter what the server refused."""
        plan = Bisection(payload, first)
        try:
            while (part := plan.next_part()) is not None:
                outcome = self._send(part, deadline)
                if isinstance(outcome, Accepted):
                    self._delivered(part)
                plan.answered(outcome)
        except _TransientFailure as exc:
            remaining = plan.unsent()
            self.dead_letters.settled(self.name, plan)
            raise _Undelivered(remaining, exc) from exc
        plan.finish()
        self.dead_letters.settled(self.name, plan)

    # -- shutdown --------------------------------------------------------------------

    def interrupt(self) -> None:
        """End the waits of retries (they raise :class:`SinkError`); :meth:`close` next."""
        self._stopping.set()
        if self._replayer is not None:
            self._replayer.interrupt()

    def close(self) -> None:
        """Stop and join the replayer (at most ``close_timeout``); the spool stays on disk."""
        if self._closed:
            return
        self._closed = True
        stopped = True
        if self._replayer is not None:
            stopped = self._replayer.stop(self.config.close_timeout)
        self._stopping.set()
        if self._spool is not None:
            if not self._spool.empty:
                _log.info(
                    "sink_spool_left_for_next_start",
                    sink=self.name,
                    records=self._spool.records,
                    bytes=self._spool.used_bytes,
                )
            if stopped:
                self._spool.close()
        self._session.close()

