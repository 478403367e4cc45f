"""Value types shared by every config section: durations, byte sizes, strict models.

Durations and sizes are parsed here once so every section accepts the same
spellings (:data:`DURATION_EXAMPLES`, :data:`SIZE_EXAMPLES`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

DURATION_EXAMPLES = "500ms, 30s, 5m, 1h"
"""How a user writes a duration (also ``1h30m``, ``0``, or a number of seconds)."""
SIZE_EXAMPLES = "16KiB, 1MiB, 1GiB"
"""How a user writes a byte size (also ``10MB``, or a number of bytes)."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "ki": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "mi": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "gi": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
    "ti": 1024**4,
}


def parse_duration(value: Any) -> float:
    """Seconds from ``500ms``, ``30s``, ``5m``, ``1h``, ``1h30m``, ``0`` or a bare number."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r} (use e.g. {DURATION_EXAMPLES})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"invalid duration {value!r} (use e.g. {DURATION_EXAMPLES})")
    text = value.strip()
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        raise ValueError(f"invalid duration {value!r} (use e.g. {DURATION_EXAMPLES})")
    return total


def parse_byte_size(value: Any) -> int:
    """Bytes from ``1048576``, ``16KiB``, ``1MiB``, ``1GiB`` or ``10MB``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r} (use e.g. {SIZE_EXAMPLES})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f"invalid size {value!r} (use e.g. {SIZE_EXAMPLES})")


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A non-negative number of seconds, written as ``500ms``, ``30s``, ``5m``, ``1h``."""

ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
"""A non-negative number of bytes, written as ``16KiB``, ``1MiB``, ``1GiB`` or a number."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
