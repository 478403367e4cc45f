"""At-least-once delivery over HTTP, shared by the network sinks.

A network sink (Loki's push API, OTLP/HTTP) supplies two things:

* its :class:`Payload`: the entries of one request, encoded (``body``), which it can
  cut into parts (``subset``), put back together (``merge``), write to and read from
  the spool, and describe for the dead-letter file;
* its :class:`Endpoint`: the URL, and ``classify``, which reads the server's answer to a
  payload as :class:`Accepted`, :class:`Transient` (retry later) or :class:`Refused`
  (for good: which entries the server names, which it refused without naming them,
  which may or may not be stored and must not be sent again).

:class:`Delivery` does the rest, the same for every protocol: send, retry what is
transient with capped backoff for ``retry_budget``, move what is still undelivered to
the disk spool and replay it in order from a thread of its own, settle refusals (dead-
letter what the server named, bisect only what it did not, within a bounded number of
requests), and count all of it under the sink's name.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

import requests
import structlog
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from .. import __version__
from ..backoff import backoff_seconds
from ..metrics.registry import (
    DEAD_LETTER_RECORDS,
    DELIVERY_LAG,
    SINK_BATCHES,
    SINK_PUSH_BYTES,
    SINK_RECORDS,
    SINK_REQUEST_BYTES,
    SINK_REQUEST_SECONDS,
    SINK_RETRIES,
    SINK_UP,
)
from ..pipeline.batch import Batch
from ..timestamps import format_rfc3339_ns
from .auth import make_auth
from .base import Sink, SinkError
from .network_config import NetworkSinkConfig
from .spool import DiskSpool, SpoolEntry, SpoolError, SpoolFullError

if TYPE_CHECKING:
    from .pushes import PushBuilder, PushPipeline

_log = structlog.get_logger(__name__)

_LOG_ERROR_CHARS = 500
REFUSAL_BASE_REQUESTS = 3
"""The constant of :func:`max_requests`."""
MAX_RETRY_AFTER = 300.0
"""A server asking for a longer ``Retry-After`` is still retried after 5 minutes."""
MAX_ERROR_CHARS = 4096
"""Of a server's error body, what is kept for the dead-letter file."""

# -- what a sink supplies ------------------------------------------------------------------


class Payload(Protocol):
    """The entries of one request, in the order they are sent, and their encoded body."""

    def __len__(self) -> int: ...

    @property
    def content_headers(self) -> Mapping[str, str]:
        """``Content-Type`` (and ``Content-Encoding``) of :meth:`body`."""
        ...

    def body(self) -> bytes: ...

    def subset(self, positions: Sequence[int]) -> Self:
        """A payload of the entries at ``positions`` (ascending), in this payload's order."""
        ...

    def merge(self, others: Sequence[Self]) -> list[Self]:
        """This payload and ``others`` as few payloads as possible, each entry once."""
        ...

    def timestamps_ns(self) -> Sequence[int]: ...

    def dead_letters(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        """One JSON object per entry at ``positions``: the entry as the server was sent it."""
        ...

    def to_spool(self) -> bytes:
        """Bytes the endpoint's ``from_spool`` turns back into this payload."""
        ...


P = TypeVar("P", bound=Payload)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server stored every entry of the request."""


ACCEPTED = Accepted()


@dataclass(frozen=True, slots=True)
class Transient:
    """The server is unreachable or busy: send the same request again later."""

    status: int | None  # None: no response (connection error, timeout)
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Refused(Generic[P]):
    """The server refused the request, or part of it, for good.

    Positions index the payload that was sent. Entries in no list were stored.
    ``named``: refused entries the answer identifies, each group with its reason: they
    go to the dead-letter file without another request. ``unresolved``: entries among
    which the server refused at least one without saying which: they are bisected.
    ``resend``: entries to send again in another form (for example without a feature
    the server disallows). ``doubtful``: entries among which the server refused some
    and stored the others, without saying which, and which must not be sent again (an
    OTLP partial success): dead-lettered marked ``"unresolved": true`` at once.
    """

    status: int
    message: str
    named: Sequence[tuple[Sequence[int], str]] = ()
    unresolved: Sequence[int] = ()
    resend: P | None = None
    doubtful: Sequence[int] = ()


Outcome = Accepted | Transient | Refused[P]


class Endpoint(Protocol[P]):
    name: str
    """The sink's name: metrics label, log field, ``sink`` of dead letters."""
    url: str
    headers: Mapping[str, str]
    """Sent with every request (tenant, ...), besides the payload's content headers."""

    def classify(
        self, status: int, body: bytes, headers: Mapping[str, str], payload: P
    ) -> Outcome[P]:
        """What the answer ``status``/``body``/``headers`` to ``payload`` means."""
        ...

    def from_spool(self, data: bytes) -> P:
        """The payload spooled as ``data`` (raises ValueError when it is not one)."""
        ...


def max_requests(entries: int) -> int:
    """Most requests spent on one refused payload of ``entries`` entries, the first one
    included: ``3 + ceil(log2(entries))``. Retries of transient failures are not counted."""
    return REFUSAL_BASE_REQUESTS + math.ceil(math.log2(max(entries, 1)))


class SinkUnavailableError(SinkError):
    """The server stayed unavailable for ``retry_budget`` and there is no spool."""


class DeadLetterError(SinkError):
    """Refused entries could not be written to the dead-letter file."""


class _Stopping(Exception):
    """The sink is closing: give up waiting."""


class _TransientFailure(Exception):
    def __init__(self, transient: Transient) -> None:
        super().__init__(f"{transient.status or 'no response'}: {transient.message}")
        self.transient = transient


class _Undelivered(Exception):
    def __init__(self, remaining: list[Any], cause: _TransientFailure) -> None:
        super().__init__(str(cause))
        self.remaining = remaining
        self.cause = cause


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), at most
    :data:`MAX_RETRY_AFTER`; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def text_of(body: bytes, limit: int = MAX_ERROR_CHARS) -> str:
    """A server's error body as text (invalid UTF-8 replaced), at most ``limit`` characters."""
    return body[: limit * 4].decode("utf-8", "replace").strip()[:limit]


def json_bytes(value: Any) -> bytes:
    """Compact JSON, UTF-8 kept (lone surrogates replaced)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def short(text: str, limit: int = _LOG_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- dead letters --------------------------------------------------------------------------


class DeadLetterFile:
    """Appends refused entries, one JSON object a line, fsynced before returning."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()
        self._lock = threading.Lock()

    def write(self, docs: Sequence[dict[str, Any]]) -> None:
        data = b"".join(json_bytes(doc) + b"\n" for doc in docs)
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            raise DeadLetterError(f"cannot write dead letters to {self.path}: {exc}") from exc


@dataclass(slots=True)
class _Dead:
    payload: Any
    positions: Sequence[int]
    reason: str
    unresolved: bool


# -- delivery ------------------------------------------------------------------------------


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
    ceil(log2(n))`` for a payload of n entries, the refused request included): entries
    the answer names are dead-lettered at once and the rest, which the server stored,
    is not sent again; entries it refused without naming them are bisected (a half the
    server accepts proves the other half holds the refused entry, which is then split
    without being sent; halves whose fate is unknown are sent together at the end). What
    is still unsettled when the requests are spent is dead-lettered marked
    ``"unresolved": true`` (the server may have stored some of it). One log line per
    refused payload.

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
        self._wake = threading.Event()
        self._replayer: threading.Thread | None = None
        self._replayer_lock = threading.Lock()
        self._closed = False
        self._up = True
        self._spool: DiskSpool | None = None
        if config.spool_max_bytes:
            self._spool = DiskSpool(spool_dir, config.spool_max_bytes, self.name)
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
            self._ensure_replayer()

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
        except _Stopping as exc:
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
        self._wake.set()
        self._ensure_replayer()

    # -- sending ---------------------------------------------------------------------

    def _deliver(self, payloads: Sequence[P], deadline: float | None) -> None:
        """Send each payload; settle refusals.

        Raises :class:`_Undelivered` with what is not settled yet when ``deadline``
        passes, :class:`_Stopping` on close, :class:`DeadLetterError` on a disk error.
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

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
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
        retrying = Retrying(
            retry=retry_if_exception_type(_TransientFailure),
            stop=stop,
            wait=wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        result: Accepted | Refused[P] = retrying(self._post, payload)
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
            raise _Stopping()

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
        stamps = payload.timestamps_ns()
        if stamps:  # a sample is enough for the histogram
            now = time.time_ns()
            lag = DELIVERY_LAG.labels(self.name)
            for ts_ns in stamps[:: max(1, len(stamps) // 20)]:
                lag.observe(max(0.0, (now - ts_ns) / 1e9))

    # -- refusals --------------------------------------------------------------------

    def _settle(self, payload: P, first: Refused[P], deadline: float | None) -> None:
        """Settle a refused payload in at most :func:`max_requests` requests in all."""
        limit = max_requests(len(payload))
        used = 1
        dead: list[_Dead] = []
        bad: list[tuple[P, str]] = []  # each holds at least one refused entry, not named
        unknown: list[P] = []  # fate unknown: sent together when no bad part is left
        stored = 0

        def absorb(sent: P, refused: Refused[P]) -> None:
            nonlocal stored
            named = 0
            for positions, reason in refused.named:
                if positions:
                    dead.append(_Dead(sent, positions, reason, False))
                    named += len(positions)
            if refused.unresolved:
                bad.append((sent.subset(refused.unresolved), refused.message))
            if refused.resend is not None:
                unknown.append(refused.resend)
            if refused.doubtful:
                dead.append(_Dead(sent, refused.doubtful, refused.message, True))
            resent = len(refused.resend) if refused.resend is not None else 0
            stored += max(
                0, len(sent) - named - len(refused.unresolved) - resent - len(refused.doubtful)
            )

        absorb(payload, first)
        taken: P | None = None  # the part being worked on, back to ``remaining`` on failure
        try:
            while (bad or unknown) and used < limit:
                if bad:
                    part, reason = bad.pop()
                    if len(part) == 1:
                        dead.append(_Dead(part, [0], reason, False))
                        continue
                    taken = part
                    half = len(part) // 2
                    left = part.subset(range(half))
                    right = part.subset(range(half, len(part)))
                    outcome = self._send(left, deadline)
                    used += 1
                    if isinstance(outcome, Refused):
                        absorb(left, outcome)
                        unknown.append(right)
                    else:
                        self._delivered(left)
                        bad.append((right, reason))  # the refused entry is in this half
                else:
                    merged = unknown[0].merge(unknown[1:])
                    part, unknown = merged[0], merged[1:]
                    taken = part
                    outcome = self._send(part, deadline)
                    used += 1
                    if isinstance(outcome, Refused):
                        absorb(part, outcome)
                    else:
                        self._delivered(part)
                taken = None
        except _TransientFailure as exc:
            remaining: list[Any] = [p for p, _ in bad] + unknown
            if taken is not None:
                remaining.insert(0, taken)
            self._refused(payload, first, dead, used, limit, stored)
            raise _Undelivered(remaining, exc) from exc
        for part, reason in bad:
            if len(part) == 1:
                dead.append(_Dead(part, [0], reason, False))
            else:
                dead.append(_Dead(part, range(len(part)), reason, True))
        for part in unknown:
            dead.append(
                _Dead(part, range(len(part)), f"fate unknown after {first.message}", True)
            )
        self._refused(payload, first, dead, used, limit, stored)

    def _refused(
        self,
        payload: P,
        first: Refused[P],
        dead: list[_Dead],
        used: int,
        limit: int,
        stored: int,
    ) -> None:
        """Write the dead letters of one refused payload; count; log one line."""
        if stored:
            SINK_RECORDS.labels(self.name, "sent").inc(stored)
        if not dead:
            return
        now = format_rfc3339_ns(time.time_ns())
        docs: list[dict[str, Any]] = []
        unresolved = 0
        for item in dead:
            head: dict[str, Any] = {
                "rejected_at": now,
                "sink": self.name,
                "status": first.status,
                "error": item.reason,
            }
            if item.unresolved:
                head["unresolved"] = True
                unresolved += len(item.positions)
            docs.extend(head | doc for doc in item.payload.dead_letters(item.positions))
        self.dead_letters.write(docs)
        SINK_BATCHES.labels(self.name, "dead_lettered").inc()
        SINK_RECORDS.labels(self.name, "dead_lettered").inc(len(docs))
        DEAD_LETTER_RECORDS.labels(self.name).inc(len(docs))
        _log.error(
            "sink_entries_dead_lettered",
            sink=self.name,
            status=first.status,
            records=len(docs),
            unresolved=unresolved,
            batch_records=len(payload),
            requests=used,
            max_requests=limit,
            error=short(first.message),
            path=str(self.dead_letters.path),
        )

    # -- replay ----------------------------------------------------------------------

    def _ensure_replayer(self) -> None:
        with self._replayer_lock:
            if self._replayer is None and not self._closed:
                self._replayer = threading.Thread(
                    target=self._replay, name=f"{self.name}-spool-replayer", daemon=True
                )
                self._replayer.start()

    def _replay(self) -> None:
        """Send the spool oldest first; delete an entry once all of it is settled."""
        assert self._spool is not None
        replayed = 0
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._wake.clear()
                entry = self._spool.peek()
                if entry is None:
                    if replayed:
                        _log.info("sink_spool_drained", sink=self.name, records=replayed)
                        replayed = 0
                    self._wake.wait(1.0)
                    continue
                replayed += self._replay_one(entry)
                attempt = 0
            except _Stopping:
                break
            except Exception as exc:  # a disk error must not end replay: report, wait, retry
                attempt += 1
                _log.error("sink_replay_failed", sink=self.name, error=str(exc), exc_info=True)
                if self._stopping.wait(
                    backoff_seconds(attempt, self.config.min_backoff, self.config.max_backoff)
                ):
                    break

    def _replay_one(self, entry: SpoolEntry) -> int:
        assert self._spool is not None
        try:
            payload = self.endpoint.from_spool(entry.data)
        except ValueError as exc:
            _log.error(
                "sink_spool_entry_unreadable", sink=self.name, seq=entry.seq, error=str(exc)
            )
            self._spool.set_aside(entry, str(exc))
            return 0
        self._deliver([payload], deadline=None)
        self._spool.remove(entry)
        return entry.records

    # -- shutdown --------------------------------------------------------------------

    def interrupt(self) -> None:
        """End the waits of retries (they raise :class:`SinkError`); :meth:`close` next."""
        self._stopping.set()
        self._wake.set()

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
                _log.error(
                    "sink_replayer_did_not_stop", sink=self.name, timeout=self.config.close_timeout
                )
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


# -- a sink on it ----------------------------------------------------------------------


class NetworkSink(Sink, Generic[P]):
    """What the network sinks share: a :class:`~log_capturer.sinks.pushes.PushPipeline`
    that cuts the batches into full pushes, builds the next while one is in flight and
    hands them, in order, to a :class:`Delivery`, which settles each (stored by the
    server, durably spooled, or dead-lettered). The dispatcher submits deliveries to it
    (``pipelined``); :meth:`write` waits for its own. A subclass builds ``_encoder`` and
    ``_delivery`` from its config, then calls :meth:`_start_pipeline`."""

    pipelined = True
    _encoder: PushBuilder[P]
    _delivery: Delivery[P]
    _pushes: PushPipeline[P]

    def _start_pipeline(self, config: NetworkSinkConfig, batch_bytes: int) -> None:
        from .pushes import PushPipeline  # it builds on this module

        self._pushes = PushPipeline(
            self.name,
            self._encoder,
            self._delivery,
            batch_bytes=batch_bytes,
            batch_wait=config.batch_wait,
            close_timeout=config.close_timeout,
        )

    @property
    def up(self) -> bool:
        """False after a send failed (unavailable, 401/403/404); True after one succeeded."""
        return self._delivery.up

    @property
    def spool(self) -> DiskSpool | None:
        return self._delivery.spool

    def write(self, batches: list[Batch]) -> None:
        """Returns once every entry of ``batches`` (and of every delivery taken before) is
        stored, spooled or dead-lettered; raises :class:`SinkError` otherwise."""
        pushes = self._pushes
        if pushes.failed:
            pushes.reset()
        ticket = pushes.submit(batches, None)
        assert ticket is not None
        pushes.flush()
        pushes.wait(ticket, None)

    def submit(self, batches: list[Batch], timeout: float | None) -> int | None:
        return self._pushes.submit(batches, timeout)

    def wait_room(self, timeout: float | None) -> bool:
        return self._pushes.wait_room(timeout)

    def accepted(self) -> int:
        return self._pushes.accepted()

    def wait(self, ticket: int, timeout: float | None) -> bool:
        return self._pushes.wait(ticket, timeout)

    @property
    def failed(self) -> bool:
        return self._pushes.failed

    def flush(self) -> None:
        self._pushes.flush()

    def next_deadline(self) -> float | None:
        return self._pushes.next_deadline()

    def poll(self, now: float) -> None:
        self._pushes.poll(now)

    def close(self) -> None:
        """Stop the sender and the replayer (each at most ``close_timeout``); the spool
        stays on disk."""
        self._pushes.close()
        self._delivery.close()
