"""Text helpers of the network sinks: compact JSON for bodies and dead letters, a
server's error text kept within bounds."""

from __future__ import annotations

import json
from typing import Any

MAX_ERROR_CHARS = 4096
"""Of a server's error body, what is kept for the dead-letter file."""
_LOG_ERROR_CHARS = 500


def json_bytes(value: Any) -> bytes:
    """Compact JSON, UTF-8 kept (lone surrogates replaced)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def text_of(body: bytes, limit: int = MAX_ERROR_CHARS) -> str:
    """A server's error body as text (invalid UTF-8 replaced), at most ``limit`` characters."""
    return body[: limit * 4].decode("utf-8", "replace").strip()[:limit]


def short(text: str, limit: int = _LOG_ERROR_CHARS) -> str:
    """``text`` cut for a log line."""
    return text if len(text) <= limit else text[:limit] + "..."
