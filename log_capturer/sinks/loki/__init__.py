"""The Grafana Loki sink: config and credentials, encoding, Loki's answers, the sink itself."""

from .auth import SecretUnavailableError
from .config import LokiSinkConfig
from .responses import LokiUnavailableError
from .sink import LokiSink

__all__ = ["LokiSink", "LokiSinkConfig", "LokiUnavailableError", "SecretUnavailableError"]
