"""JSON parsing: a message that is a JSON object becomes the record's ``fields``."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from ...metrics.registry import JSON_PARSE
from ..record import LogRecord
from .config import ParseJsonConfig

_OBJECT_START = re.compile(r"\s*\{")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: would be written back as Infinity (not JSON)
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class ParseJson:
    """Puts a message that is a JSON object into ``record.fields``; everything else passes.

    Guarantees: never raises on any message; a message that is not a JSON object
    (plain text, an array, invalid JSON, NaN/Infinity, nesting deeper than
    ``max_depth``) is left exactly as it was with ``fields`` untouched; what it puts
    in ``fields`` can always be written back as valid UTF-8 JSON (lone surrogates
    from ``\\udxxx`` escapes become U+FFFD). Records are changed in place.
    """

    def __init__(self, config: ParseJsonConfig) -> None:
        self._keep_message = config.keep_message
        self._message_key = config.message_key
        self._max_depth = config.max_depth

    def apply(self, records: list[LogRecord]) -> None:
        results: Counter[str] = Counter()
        for record in records:
            results[self._parse(record)] += 1
        for result, count in results.items():
            JSON_PARSE.labels(result).inc(count)

    def _parse(self, record: LogRecord) -> str:
        message = record.message
        if not _OBJECT_START.match(message):
            return "not_json"
        try:
            value = json.loads(message, parse_float=_finite_float, parse_constant=_reject_constant)
        except (ValueError, RecursionError):  # counted as "invalid"; the message stays
            return "invalid"
        if not isinstance(value, dict):
            return "not_object"
        if message.count("{") + message.count("[") > self._max_depth and (
            _depth(value) > self._max_depth
        ):
            return "too_deep"
        if _SURROGATE_ESCAPE.search(message):
            value = _without_surrogates(value)
        if not self._keep_message:
            text = value.get(self._message_key)
            if isinstance(text, str):
                record.message = text
                del value[self._message_key]
        record.fields = value if record.fields is None else {**record.fields, **value}
        return "parsed"


def _depth(value: Any) -> int:
    """Nesting depth of containers (an object of scalars is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _clean(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def _without_surrogates(value: Any) -> Any:
    """A copy with lone surrogates replaced (they cannot be encoded as UTF-8)."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_surrogates(v) for v in value]
    return value
