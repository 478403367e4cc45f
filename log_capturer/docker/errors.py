"""Named failures of the Docker layer, so callers can tell transient from permanent."""

from __future__ import annotations

from urllib3.exceptions import EmptyPoolError


class PoolExhaustedError(EmptyPoolError):
    """No connection became free within ``pool.wait_timeout`` while ``max_open`` were in use."""


class PoolClosedError(EmptyPoolError):
    """The pool was closed (shutdown); no more connections are handed out."""


class StreamBrokenError(Exception):
    """A stream's connection broke before the engine finished the response (transient)."""


class ContainerGoneError(Exception):
    """The engine no longer knows the container (404): it was removed."""


class EngineUnavailableError(Exception):
    """A transient engine error outlasted the retry budget."""
