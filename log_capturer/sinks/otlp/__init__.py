"""The OTLP/HTTP logs sink: config, encoding, the server's answers, the sink itself.

The sink (and protobuf with it) is imported when first used, as the Loki sink's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import OtlpSinkConfig

if TYPE_CHECKING:
    from .sink import OtlpSink


def __getattr__(name: str) -> Any:
    if name == "OtlpSink":
        from .sink import OtlpSink

        return OtlpSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OtlpSink", "OtlpSinkConfig"]
