"""The Grafana Loki sink: config, encoding, Loki's answers, the sink itself.

The sink (and protobuf with it) is imported when first used: a daemon without a Loki
sink does not pay for it at start-up (benchmarks/README.md, "The backlog on 2 cores").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..network.auth import SecretUnavailableError
from ..network.delivery import SinkUnavailableError
from .config import LokiSinkConfig

if TYPE_CHECKING:
    from .sink import LokiSink

LokiUnavailableError = SinkUnavailableError
"""Loki stayed unavailable for ``retry_budget`` and there is no spool to hold the batch."""


def __getattr__(name: str) -> Any:
    if name == "LokiSink":
        from .sink import LokiSink

        return LokiSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LokiSink", "LokiSinkConfig", "LokiUnavailableError", "SecretUnavailableError"]
