"""Redaction: secrets are replaced in messages and fields before any sink sees them."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...metrics.registry import REDACTIONS
from ..record import LogRecord
from .config import RedactConfig

Replace = str | Callable[[re.Match[str]], str]

# A value after "key=" or "key: ": quoted (kept quoted, so JSON text stays JSON) or bare.
_VALUE = r"""(?P<value>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s"',;&}]+)"""
_SECRET_KEY = r"(?:secret_?access_?key|aws_?secret(?:_?key)?)"


@dataclass(frozen=True, slots=True)
class _Builtin:
    text: str
    """Regex for secrets in text; a ``key`` group, if any, is kept."""
    field_key: str | None = None
    """Regex on field names whose whole value is a secret (parsed JSON)."""


BUILTINS: dict[str, _Builtin] = {
    "password": _Builtin(
        r"""(?i)(?P<key>(?:password|passwd|pwd)["']?\s*[:=]\s*)""" + _VALUE,
        r"(?i)(?:password|passwd|pwd)$",
    ),
    "bearer_token": _Builtin(r"(?i)(?P<key>\bbearer\s+)(?P<value>[A-Za-z0-9\-._~+/]{8,}=*)"),
    "aws_access_key_id": _Builtin(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"),
    "aws_secret_access_key": _Builtin(
        r"""(?i)(?P<key>""" + _SECRET_KEY + r"""["']?\s*[:=]\s*)"""
        r"""(?P<value>(?P<q>["']?)[A-Za-z0-9/+]{40}(?P=q))(?![A-Za-z0-9/+])""",
        r"(?i)" + _SECRET_KEY + "$",
    ),
    # Only the password of scheme://user:password@host; it may itself contain "@".
    "basic_auth_url": _Builtin(r"(?P<key>://[^\s:/@]+:)(?P<value>[^\s/]+)(?=@[^\s/@]+)"),
}


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    replace: Replace


def _keep_key(replacement: str) -> Callable[[re.Match[str]], str]:
    """Replace only the ``value`` group, keeping the key and any quotes around the value."""

    def replace(match: re.Match[str]) -> str:
        value = match.group("value")
        quote = value[0] if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0] else ""
        return f"{match.group('key')}{quote}{replacement}{quote}"

    return replace


def _literal(replacement: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: replacement


class Redact:
    """Replaces secrets in every record's message and in every string inside ``fields``.

    Guarantees: built-in rules (enabled by name) run first, then user rules, each
    over the message and over every string value of ``fields`` at any depth; a
    field whose *name* is a password or AWS secret key name has its whole value
    replaced (booleans and nulls are kept). Every replacement is counted per rule.
    Records are changed in place.
    """

    def __init__(self, config: RedactConfig) -> None:
        self._replacement = config.replacement
        self.rules: list[Rule] = []
        self._field_keys: list[tuple[str, re.Pattern[str]]] = []
        for name, enabled in config.builtin.model_dump().items():
            if not enabled:
                continue
            builtin = BUILTINS[name]
            pattern = re.compile(builtin.text)
            replace = (_keep_key if "key" in pattern.groupindex else _literal)(config.replacement)
            self.rules.append(Rule(name, pattern, replace))
            if builtin.field_key is not None:
                self._field_keys.append((name, re.compile(builtin.field_key)))
        for rule in config.rules:
            user: Replace = (
                rule.replacement if rule.replacement is not None else _literal(config.replacement)
            )
            self.rules.append(Rule(rule.name, re.compile(rule.pattern), user))

    def apply(self, records: list[LogRecord]) -> None:
        counts: Counter[str] = Counter()
        for record in records:
            record.message = self.text(record.message, counts)
            if record.fields:
                self._fields(record.fields, counts)
        for rule, count in counts.items():
            REDACTIONS.labels(rule).inc(count)

    def text(self, text: str, counts: Counter[str]) -> str:
        for rule in self.rules:
            text, n = rule.pattern.subn(rule.replace, text)
            if n:
                counts[rule.name] += n
        return text

    def _secret_key(self, key: str) -> str | None:
        for name, pattern in self._field_keys:
            if pattern.search(key):
                return name
        return None

    def _fields(self, fields: dict[str, Any], counts: Counter[str]) -> None:
        stack: list[dict[str, Any] | list[Any]] = [fields]  # no recursion: depth is the input's
        while stack:
            node = stack.pop()
            items: list[tuple[Any, Any]] = (
                list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            )
            for key, value in items:
                if value is None or isinstance(value, bool):
                    continue
                rule = self._secret_key(key) if isinstance(key, str) else None
                if rule is not None:
                    node[key] = self._replacement
                    counts[rule] += 1
                elif isinstance(value, str):
                    node[key] = self.text(value, counts)
                elif isinstance(value, dict | list):
                    stack.append(value)
