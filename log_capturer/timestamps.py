"""Docker log timestamps as integer nanoseconds, and the engine's ``since``/``until`` form.

Docker writes ``2006-01-02T15:04:05.000000000Z`` (RFC 3339, nine fraction digits, UTC).
Floats lose precision past about 240 ns at today's epoch, so every position in this
program is an ``int`` of nanoseconds.
"""

from __future__ import annotations

import calendar
import re
import time

_GENERIC = re.compile(
    rb"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)
_seconds_cache: dict[bytes, int] = {}
_CACHE_LIMIT = 4096


class TimestampError(ValueError):
    """A log line did not start with a timestamp the engine would write."""


def parse_docker_ts(raw: bytes) -> int:
    """Nanoseconds since the epoch from Docker's RFC 3339 timestamp bytes."""
    if len(raw) == 30 and raw[19:20] == b"." and raw[29:30] == b"Z":
        frac = raw[20:29]
        if frac.isdigit():
            return seconds_of(raw[:19]) * 1_000_000_000 + int(frac)
    return _parse_generic(raw)


def seconds_of(prefix: bytes) -> int:
    """Seconds since the epoch of a ``YYYY-MM-DDTHH:MM:SS`` prefix (cached: a burst of
    lines shares a handful of seconds)."""
    secs = _seconds_cache.get(prefix)
    if secs is None:
        secs = _parse_seconds(prefix)
        if len(_seconds_cache) >= _CACHE_LIMIT:
            _seconds_cache.clear()
        _seconds_cache[prefix] = secs
    return secs


def _parse_seconds(prefix: bytes) -> int:
    try:
        return calendar.timegm(time.strptime(prefix.decode("ascii"), "%Y-%m-%dT%H:%M:%S"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TimestampError(f"bad timestamp {prefix!r}") from exc


def _parse_generic(raw: bytes) -> int:
    match = _GENERIC.match(raw)
    if not match:
        raise TimestampError(f"bad timestamp {raw[:40]!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    frac = (match.group(7) or b"").ljust(9, b"0")
    secs = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = match.group(8)
    if zone not in (b"Z", b"z"):
        sign = 1 if zone[:1] == b"+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return secs * 1_000_000_000 + int(frac)


def format_rfc3339_ns(ts_ns: int) -> str:
    """Docker's own spelling of a nanosecond timestamp (UTC, nine fraction digits)."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def format_api_ts(ts_ns: int) -> str:
    """The ``seconds.nanoseconds`` form the Engine API takes for ``since`` and ``until``."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    return f"{secs}.{frac:09d}"


def now_ns() -> int:
    return time.time_ns()
