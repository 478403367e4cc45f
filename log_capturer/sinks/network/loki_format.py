"""What Loki reads and writes, which both network sinks need (Loki takes OTLP pushes too,
and answers them in the same words): its default limits, valid label names, label sets in
its spelling (``{a="1", b="2"}``: written for protobuf pushes, read back from spooled
pushes and from Loki's error messages, which quote values the way Go does), and the
grammar of its ``400`` texts (how each sink matches them to entries: ``loki/responses.py``,
``otlp/responses.py``)."""

from __future__ import annotations

import json
import re

LOKI_MAX_LABELS = 15  # Loki's default max_label_names_per_series
LOKI_MAX_LINE_BYTES = 262_144  # Loki's default max_line_size (bytes of the line)
MAX_BATCH_BYTES = 3 * 1024 * 1024  # batch_bytes bound: room below Loki's 4 MiB (a 500 above)
LOKI_MAX_LABEL_VALUE = 2048  # Loki's default max_label_value_length
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

TOO_LARGE_5XX = ("ResourceExhausted", "larger than max")
"""Markers of a 5xx that refuses a request for its size: smaller requests pass."""
_GROUP = re.compile(r"(?:^|; )(\d+) errors like: ")
STREAM = r"'(\{.*\})'"
LINE_TOO_LONG = re.compile(
    rf"^Max entry size '(\d+)' bytes exceeded for stream {STREAM} while adding an entry "
    r"with length '(\d+)' bytes$", re.S
)
ANY_STREAM = re.compile(r"stream:? '?(\{.*?\})'?(?:[ ,;.]|$)", re.S)

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


def sanitize_label_name(name: str) -> str:
    """A valid Loki label name: invalid characters become ``_``, a leading digit gets ``_``."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def error_groups(text: str) -> list[tuple[int, str]]:
    """``(count, line)`` of each distinct error of a 400's text: identical lines are grouped
    as ``N errors like: <line>``, different ones joined by ``"; "`` (or one a line)."""
    marks = list(_GROUP.finditer(text))
    if not marks or marks[0].start() != 0:
        return [(1, line) for line in text.splitlines() if line.strip()] or [(1, text)]
    out = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append((int(mark.group(1)), text[mark.end() : end].strip()))
    return out
