"""The OTLP/HTTP logs sink: config, encoding, the server's answers, the sink itself."""

from .config import OtlpSinkConfig
from .sink import OtlpSink

__all__ = ["OtlpSink", "OtlpSinkConfig"]
