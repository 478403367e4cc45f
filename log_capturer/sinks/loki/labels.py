"""Label sets in Loki's spelling, ``{a="1", b="2"}``: written for protobuf pushes, read back
from spooled pushes and from Loki's error messages (which quote values the way Go does)."""

from __future__ import annotations

import json
import re

_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)', re.S)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def label_text(labels: dict[str, str]) -> str:
    """``{a="1", b="2"}``, names sorted, values escaped so Loki's (Go) parser reads them."""
    return (
        "{"
        + ", ".join(
            f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels)
        )
        + "}"
    )


def parse_label_text(text: str) -> dict[str, str] | None:
    """The label set spelt ``text``, or None when it is not one."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    inner = text[1:-1]
    out: dict[str, str] = {}
    pos = 0
    while pos < len(inner):
        match = _PAIR.match(inner, pos)
        if match is None:
            return None
        out[match.group(1)] = _unescape(match.group(2))
        pos = match.end()
    return out


def _unescape(value: str) -> str:
    """Go's string escapes (strconv.Quote writes them; JSON's are a subset)."""
    if "\\" not in value:
        return value

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "xuU" and len(code) > 1:
            return chr(int(code[1:], 16))
        if len(code) == 3 and code.isdigit():
            return chr(int(code, 8))
        return _SIMPLE.get(code, code)

    return _ESCAPE.sub(one, value)
