"""The Grafana Loki sink: config, encoding, Loki's answers, the sink itself."""

from ..network.auth import SecretUnavailableError
from ..network.delivery import SinkUnavailableError
from .config import LokiSinkConfig
from .sink import LokiSink

LokiUnavailableError = SinkUnavailableError
"""Loki stayed unavailable for ``retry_budget`` and there is no spool to hold the batch."""

__all__ = ["LokiSink", "LokiSinkConfig", "LokiUnavailableError", "SecretUnavailableError"]
