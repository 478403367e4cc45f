"""numpy for the network sinks: work on every line of a delivery in a few array operations.

The network sinks turn thousands of lines a second into request bodies; done a line at a
time in Python, that work was half of the daemon's CPU in a backlog into Loki
(benchmarks/README.md, "Pushes written by numpy"). This module is where numpy is
imported (only with a network sink enabled, as the sinks themselves are) and holds what
more than one sink uses: the timestamps of Docker's canonical stamps.

numpy's OpenBLAS starts a thread per core at import unless told otherwise; the daemon
does no linear algebra and every thread of it has an owner, so it is told to start none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # after the setting above
import numpy.typing as npt

from ...docker.lines import TS_BYTES

__all__ = ["np", "npt", "stamps_ns"]

_DIGITS = {  # where each part of "2006-01-02T15:04:05.000000000Z" is
    "year": slice(0, 4), "month": slice(5, 7), "day": slice(8, 10), "hour": slice(11, 13),
    "minute": slice(14, 16), "second": slice(17, 19), "fraction": slice(20, 29),
}
_NS = 1_000_000_000


def _number(digits: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The numbers that rows of decimal digits spell (a row per position, a column each)."""
    weights = 10 ** np.arange(digits.shape[0] - 1, -1, -1, dtype=np.int64)
    result: npt.NDArray[np.int64] = weights @ digits
    return result


def _days(year: npt.NDArray[np.int64], month: npt.NDArray[np.int64],
          day: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's days_from_civil)."""
    year = year - (month <= 2)
    era = year // 400
    of_era = year - era * 400
    of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    result: npt.NDArray[np.int64] = (
        era * 146097 + of_era * 365 + of_era // 4 - of_era // 100 + of_year - 719468
    )
    return result


def stamps_ns(stamps: Sequence[bytes]) -> list[int]:
    """Nanoseconds since the epoch of Docker's canonical timestamps (``TS_BYTES`` each,
    nine fraction digits, UTC): what :func:`~log_capturer.docker.lines.ts_ns_of` gives, for
    many at once."""
    n = len(stamps)
    if not n:
        return []
    joined = b"".join(stamps)
    if len(joined) != n * TS_BYTES:
        raise ValueError("not Docker's canonical timestamps")
    # a row per character position (transposed: each row contiguous, fast to compute on)
    digits = np.frombuffer(joined, np.uint8).reshape(n, TS_BYTES).T.astype(np.int64) - ord("0")
    part = {name: _number(digits[where]) for name, where in _DIGITS.items()}
    seconds = (
        _days(part["year"], part["month"], part["day"]) * 86400
        + part["hour"] * 3600 + part["minute"] * 60 + part["second"]
    )
    result: list[int] = (seconds * _NS + part["fraction"]).tolist()
    return result
