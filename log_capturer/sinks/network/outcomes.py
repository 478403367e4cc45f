"""What a network sink supplies to the delivery, and what a server's answer means.

A network sink (Loki's push API, OTLP/HTTP) supplies two things:

* its :class:`Payload`: the entries of one request, encoded (``body``), which it can
  cut into parts (``subset``), put back together (``merge``), write to and read from
  the spool, and describe for the dead-letter file;
* its :class:`Endpoint`: the URL, and ``classify``, which reads the server's answer to a
  payload as :class:`Accepted`, :class:`Transient` (retry later) or :class:`Refused`
  (for good: which entries the server names, which it refused without naming them,
  which may or may not be stored and must not be sent again).

:class:`~log_capturer.sinks.network.delivery.Delivery` does the rest, the same for every
protocol.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Protocol, Self, TypeVar

MAX_RETRY_AFTER = 300.0
"""A server asking for a longer ``Retry-After`` is still retried after 5 minutes."""


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
    OTLP partial success): dead-lettered marked ``"unresolved": true`` at once. ``split``:
    entries refused only for the size of the request they came in (a 413, a 5xx saying
    the decoded message was too large): none of them is at fault, so they are sent again
    in halves, each half on its own (an entry that alone is too large is a dead letter).
    """

    status: int
    message: str
    named: Sequence[tuple[Sequence[int], str]] = ()
    unresolved: Sequence[int] = ()
    resend: P | None = None
    doubtful: Sequence[int] = ()
    split: Sequence[int] = ()

    def stored(self, sent: int) -> int:
        """How many of the ``sent`` entries the server stored: those in no list."""
        named = sum(len(positions) for positions, _ in self.named if positions)
        resent = len(self.resend) if self.resend is not None else 0
        return max(
            0,
            sent - named - len(self.unresolved) - resent - len(self.doubtful) - len(self.split),
        )


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


class Stopping(Exception):
    """The sink is closing: a retry's wait gave up."""
