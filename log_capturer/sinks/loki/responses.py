"""What Loki's answers mean: sent, rejected for good (4xx), or unavailable (retry)."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from ..base import SinkError

_TOO_LARGE_5XX = ("ResourceExhausted", "larger than max")
_MAX_RETRY_AFTER = 300.0  # a server asking for more is still retried after 5 minutes
_MAX_ERROR_CHARS = 4096  # of a server's error body kept for the dead-letter file
METADATA_DISALLOWED = "structured metadata, but this feature is disallowed"
_LOG_ERROR_CHARS = 500

# -- outcomes ------------------------------------------------------------------------------


class LokiTransientError(Exception):
    """Loki is unreachable or busy (connection error, timeout, 408, 429, 5xx): retry later."""

    def __init__(self, status: int | None, message: str, retry_after: float | None = None):
        super().__init__(f"{status or 'no response'}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class LokiRejectedError(Exception):
    """Loki refused the request for good; ``splittable`` when smaller requests may pass."""

    def __init__(self, status: int, message: str, splittable: bool):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.splittable = splittable


class LokiUnavailableError(SinkError):
    """Loki stayed unavailable for ``retry_budget`` and there is no spool to hold the batch."""


class DeadLetterError(SinkError):
    """Rejected entries could not be written to the dead-letter file."""


def classify(status: int, body: str, retry_after: str | None) -> Exception | None:
    """None for success, else the exception that says what to do about the response."""
    if 200 <= status < 300:
        return None
    message = body.strip()[:_MAX_ERROR_CHARS] or f"HTTP {status}"
    if status >= 500 and any(marker in message for marker in _TOO_LARGE_5XX):
        return LokiRejectedError(status, message, splittable=True)  # retrying never helps
    if status in (408, 429) or status >= 500:
        return LokiTransientError(status, message, _parse_retry_after(retry_after))
    return LokiRejectedError(status, message, splittable=status in (400, 413))


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def short(text: str, limit: int = _LOG_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
