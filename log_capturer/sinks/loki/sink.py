"""The Grafana Loki sink: gzip JSON pushes, retried, bisected on rejection, spooled to disk.

Loki accepts a push, rejects it for good (4xx), or is unavailable (connection errors,
timeouts, 429, 5xx). Unavailability is retried with capped, jittered backoff for
``retry_budget``; after that the batch goes to a disk spool and a replayer thread
keeps trying, so a Loki outage does not stall capture until the spool is full.
A rejection is never retried as is: the request is bisected to find the entries
Loki refuses, the rest is sent, and the refused entries go to a dead-letter file
with the server's reason.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import requests
import structlog
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from ... import __version__
from ...backoff import backoff_seconds
from ...metrics.registry import (
    DEAD_LETTER_RECORDS,
    LOKI_REQUEST_SECONDS,
    SINK_BATCHES,
    SINK_RECORDS,
    SINK_RETRIES,
    SINK_UP,
)
from ...pipeline.batch import Batch
from ...timestamps import format_rfc3339_ns
from ..base import Sink, SinkError, observe_lag
from ..spool import DiskSpool, SpoolEntry, SpoolError, SpoolFullError
from .auth import make_auth
from .config import PUSH_PATH, LokiSinkConfig
from .encode import Encoder, Push, json_bytes
from .responses import (
    METADATA_DISALLOWED,
    DeadLetterError,
    LokiRejectedError,
    LokiTransientError,
    LokiUnavailableError,
    classify,
    short,
)

_log = structlog.get_logger(__name__)


class _Stopping(Exception):
    """The sink is closing: give up waiting."""


class _Undelivered(Exception):
    def __init__(self, remaining: list[Push], cause: LokiTransientError) -> None:
        super().__init__(str(cause))
        self.remaining = remaining
        self.cause = cause


# -- dead letters --------------------------------------------------------------------------


class _DeadLetterFile:
    """Appends rejected entries, one JSON object a line, fsynced before returning."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()
        self._lock = threading.Lock()

    def write(self, push: Push, status: int, reason: str) -> None:
        now = format_rfc3339_ns(time.time_ns())
        lines = []
        for entry in push.entries:
            doc: dict[str, Any] = {
                "rejected_at": now,
                "sink": "loki",
                "status": status,
                "error": reason,
                "stream": json.loads(entry.stream),
                "ts": str(entry.ts_ns),
                "line": entry.line,
            }
            if entry.metadata:
                doc["metadata"] = entry.metadata
            lines.append(json_bytes(doc) + b"\n")
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as fh:
                    fh.write(b"".join(lines))
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            raise DeadLetterError(f"loki: cannot write dead letters to {self.path}: {exc}") from exc


# -- the sink ------------------------------------------------------------------------------


class LokiSink(Sink):
    """Pushes records to Grafana Loki with at-least-once delivery.

    :meth:`write` returns only when every record of the batch is in one of three places:

    * acknowledged by Loki (``204``), possibly after retries (connection errors,
      timeouts, 408, 429, 5xx; capped exponential backoff with jitter, ``Retry-After``
      honoured) within ``retry_budget``;
    * in the disk spool (fsynced), because Loki stayed unavailable for
      ``retry_budget``, or because the spool already holds older records (new batches
      queue behind them, so Loki receives each stream in order). The replayer thread
      sends the spool in order, retrying without limit, and deletes an entry only
      after Loki acknowledged it; the spool survives restarts;
    * in the dead-letter file (fsynced) with Loki's reason, because Loki rejected it
      for good (a 4xx other than 408/429). A 400 or 413 request is bisected first, so
      only the entries that still fail on their own are dead-lettered.

    Otherwise :meth:`write` raises :class:`SinkError` and nothing of the batch counts
    as accepted: the spool is full (backpressure), a disk write failed, or there is
    no spool and Loki is unavailable. An entry may reach Loki more than once (a retry
    after a lost response, a replay after a crash); Loki drops exact duplicates.

    Loki reports entries "too far behind" only for the last stream of a request;
    such entries of earlier streams are dropped with a ``204`` and cannot be seen here.

    Threads: :meth:`write` runs in the dispatcher thread. The replayer thread starts
    when the spool is first used (or holds entries at start) and :meth:`close` stops
    and joins it, leaving the spool on disk.
    """

    name = "loki"

    def __init__(self, config: LokiSinkConfig) -> None:
        self.config = config
        self._encoder = Encoder(config)
        self._push_url = config.url + PUSH_PATH
        self._headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        if config.tenant_id:
            self._headers["X-Scope-OrgID"] = config.tenant_id
        auth = make_auth(config)  # reads the secrets: fails before anything is opened
        self._dead_letters = _DeadLetterFile(config.dead_letter_path)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replayer_lock = threading.Lock()
        self._closed = False
        self._up = True
        self._spool: DiskSpool | None = None
        if config.spool_max_bytes:
            self._spool = DiskSpool(config.spool_dir, config.spool_max_bytes, self.name)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=2, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"log-capturer/{__version__}"
        self._session.auth = auth
        if config.ca_file:
            self._session.verify = config.ca_file
        SINK_UP.labels(self.name).set(1)
        if self._spool is not None and not self._spool.empty:
            _log.info(
                "loki_spool_resuming", records=self._spool.records, bytes=self._spool.used_bytes
            )
            self._ensure_replayer()

    def __repr__(self) -> str:
        return f"LokiSink(url={self.config.url!r}, tenant_id={self.config.tenant_id!r})"

    @property
    def up(self) -> bool:
        """False after a send failed (unavailable, 401/403/404); True after one succeeded."""
        return self._up

    @property
    def spool(self) -> DiskSpool | None:
        return self._spool

    # -- writing ---------------------------------------------------------------------

    def write(self, batches: list[Batch]) -> None:
        if self._closed:
            raise SinkError("loki sink is closed")
        pushes = self._encoder.build([r for batch in batches for r in batch.records()])
        if not pushes:
            return
        if self._spool is not None and not self._spool.empty:
            self._to_spool(pushes, reason="spool_not_empty")
            return
        deadline = time.monotonic() + self.config.retry_budget
        try:
            self._deliver(pushes, deadline)
        except _Undelivered as exc:
            if self._spool is None:
                records = sum(len(p) for p in exc.remaining)
                raise LokiUnavailableError(
                    f"loki unavailable for {self.config.retry_budget:g}s "
                    f"({records} records not sent): {exc.cause}"
                ) from exc.cause
            self._to_spool(exc.remaining, reason="unavailable")
        except _Stopping as exc:
            raise SinkError("loki sink is closing") from exc

    def _to_spool(self, pushes: list[Push], reason: str) -> None:
        assert self._spool is not None
        records = sum(len(p) for p in pushes)
        try:
            self._spool.append([(p.gzipped(), len(p)) for p in pushes])
        except SpoolFullError as exc:
            SINK_BATCHES.labels(self.name, "spool_full").inc()
            _log.warning(
                "loki_spool_full",
                records=records,
                bytes=self._spool.used_bytes,
                max_bytes=self._spool.max_bytes,
            )
            raise SinkError(f"loki: {exc}") from exc
        except SpoolError as exc:
            _log.error("loki_spool_write_failed", error=str(exc))
            raise SinkError(f"loki: {exc}") from exc
        SINK_BATCHES.labels(self.name, "spooled").inc(len(pushes))
        SINK_RECORDS.labels(self.name, "spooled").inc(records)
        if reason != "spool_not_empty":
            _log.warning(
                "loki_batch_spooled",
                reason=reason,
                records=records,
                spool_records=self._spool.records,
                spool_bytes=self._spool.used_bytes,
            )
        self._wake.set()
        self._ensure_replayer()

    # -- delivery --------------------------------------------------------------------

    def _deliver(self, pushes: list[Push], deadline: float | None) -> None:
        """Send each push: retry, bisect on rejection, dead-letter what still fails.

        Raises :class:`_Undelivered` with the pushes not yet sent when ``deadline``
        passes, :class:`_Stopping` on close, :class:`DeadLetterError` on a disk error.
        """
        pending = deque(pushes)
        while pending:
            push = pending.popleft()
            try:
                self._send(push, deadline)
            except LokiTransientError as exc:
                pending.appendleft(push)
                raise _Undelivered(list(pending), exc) from exc
            except LokiRejectedError as exc:
                if exc.status == 400 and METADATA_DISALLOWED in exc.message and push.has_metadata:
                    self._disable_metadata(exc)
                    pending.appendleft(push.without_metadata())
                elif exc.splittable and len(push) > 1:
                    left, right = push.split()
                    pending.extendleft((right, left))
                    _log.debug("loki_push_bisected", status=exc.status, records=len(push))
                else:
                    self._reject(push, exc)
                continue
            self._delivered(push)

    def _send(self, push: Push, deadline: float | None) -> None:
        """One push, retried while Loki is unavailable, until ``deadline`` (None: forever)."""

        def stop(state: RetryCallState) -> bool:
            if deadline is None:
                return False
            now = time.monotonic()
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, LokiTransientError) else None
            return now >= deadline or (retry_after is not None and now + retry_after > deadline)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, LokiTransientError) and exc.retry_after is not None:
                seconds = exc.retry_after
            else:
                seconds = backoff_seconds(
                    state.attempt_number, self.config.min_backoff, self.config.max_backoff
                )
            if deadline is not None:
                seconds = min(seconds, max(0.0, deadline - time.monotonic()))
            return seconds

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            SINK_RETRIES.labels(self.name).inc()
            SINK_BATCHES.labels(self.name, "retried").inc()
            SINK_RECORDS.labels(self.name, "retried").inc(len(push))
            wait_s = state.next_action.sleep if state.next_action else 0.0
            _log.warning(
                "loki_push_retry",
                attempt=state.attempt_number,
                records=len(push),
                wait_seconds=round(wait_s, 3),
                error=short(str(exc)),
            )

        retrying = Retrying(
            retry=retry_if_exception_type(LokiTransientError),
            stop=stop,
            wait=wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        retrying(self._post, push)

    def _post(self, push: Push) -> None:
        """One HTTP request; raises the exception :func:`classify` chose."""
        body = push.gzipped()
        started = time.monotonic()
        try:
            with self._session.post(
                self._push_url,
                data=body,
                headers=self._headers,
                allow_redirects=False,
                timeout=(self.config.connect_timeout, self.config.timeout),
            ) as response:
                status = response.status_code
                text = response.text if status >= 300 else ""
                retry_after = response.headers.get("Retry-After")
        except requests.RequestException as exc:
            LOKI_REQUEST_SECONDS.labels("error").observe(time.monotonic() - started)
            self._set_up(False)
            raise LokiTransientError(None, f"{type(exc).__name__}: {exc}") from exc
        LOKI_REQUEST_SECONDS.labels(str(status)).observe(time.monotonic() - started)
        outcome = classify(status, text, retry_after)
        if outcome is None:
            return
        if isinstance(outcome, LokiTransientError) or status in (401, 403, 404) or status < 400:
            self._set_up(False)
        if status in (401, 403):
            _log.error(
                "loki_unauthorized",
                status=status,
                error=short(outcome.args[0]),
                hint="check tenant_id and the credentials (username/password_*, bearer_token_*)",
            )
        raise outcome

    def _sleep(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise _Stopping()

    def _set_up(self, up: bool) -> None:
        if up != self._up:
            self._up = up
            SINK_UP.labels(self.name).set(1 if up else 0)
            if up:
                _log.info("loki_up")
            else:
                _log.warning("loki_down")

    def _delivered(self, push: Push) -> None:
        self._set_up(True)
        SINK_BATCHES.labels(self.name, "sent").inc()
        SINK_RECORDS.labels(self.name, "sent").inc(len(push))
        # The spool keeps entries, not records; stand-ins carrying the timestamps are
        # enough for the lag histogram, sampled as observe_delivered samples.
        step = max(1, len(push) // 20)
        observe_lag(self.name, [e.ts_ns for e in push.entries[::step]])

    def _reject(self, push: Push, exc: LokiRejectedError) -> None:
        self._dead_letters.write(push, exc.status, exc.message)
        SINK_BATCHES.labels(self.name, "dead_lettered").inc()
        SINK_RECORDS.labels(self.name, "dead_lettered").inc(len(push))
        DEAD_LETTER_RECORDS.labels(self.name).inc(len(push))
        _log.error(
            "loki_entries_dead_lettered",
            status=exc.status,
            records=len(push),
            error=short(exc.message),
            path=str(self._dead_letters.path),
        )

    def _disable_metadata(self, exc: LokiRejectedError) -> None:
        if self._encoder.metadata_enabled:
            self._encoder.metadata_enabled = False
            _log.error(
                "loki_structured_metadata_disallowed",
                error=short(exc.message),
                hint="sending without structured metadata; set structured_metadata: [] "
                "or enable it in Loki's limits_config",
            )

    # -- replay ----------------------------------------------------------------------

    def _ensure_replayer(self) -> None:
        with self._replayer_lock:
            if self._replayer is None and not self._closed:
                self._replayer = threading.Thread(
                    target=self._replay, name="loki-spool-replayer", daemon=True
                )
                self._replayer.start()

    def _replay(self) -> None:
        """Send the spool oldest first; delete an entry once Loki acknowledged all of it."""
        assert self._spool is not None
        replayed = 0
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._wake.clear()
                entry = self._spool.peek()
                if entry is None:
                    if replayed:
                        _log.info("loki_spool_drained", records=replayed)
                        replayed = 0
                    self._wake.wait(1.0)
                    continue
                replayed += self._replay_one(entry)
                attempt = 0
            except _Stopping:
                break
            except Exception as exc:  # a disk error must not end replay: report, wait, retry
                attempt += 1
                _log.error("loki_replay_failed", error=str(exc), exc_info=True)
                if self._stopping.wait(
                    backoff_seconds(attempt, self.config.min_backoff, self.config.max_backoff)
                ):
                    break

    def _replay_one(self, entry: SpoolEntry) -> int:
        assert self._spool is not None
        try:
            push = Push.from_gzipped(entry.data)
        except ValueError as exc:
            _log.error("loki_spool_entry_unreadable", seq=entry.seq, error=str(exc))
            self._spool.set_aside(entry, str(exc))
            return 0
        if not self._encoder.metadata_enabled and push.has_metadata:
            push = push.without_metadata()
        self._deliver([push], deadline=None)
        self._spool.remove(entry)
        return entry.records

    # -- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Stop and join the replayer (at most ``close_timeout``); the spool stays on disk."""
        if self._closed:
            return
        with self._replayer_lock:
            self._closed = True
            replayer = self._replayer
        self._stopping.set()
        self._wake.set()
        stopped = True
        if replayer is not None:
            replayer.join(self.config.close_timeout)
            if replayer.is_alive():
                stopped = False
                _log.error("loki_replayer_did_not_stop", timeout=self.config.close_timeout)
        if self._spool is not None:
            if not self._spool.empty:
                _log.info(
                    "loki_spool_left_for_next_start",
                    records=self._spool.records,
                    bytes=self._spool.used_bytes,
                )
            if stopped:
                self._spool.close()
        self._session.close()
