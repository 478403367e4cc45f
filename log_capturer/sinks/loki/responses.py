"""What Loki's answers mean: stored, busy (retry), or refused, and then which entries.

A ``400`` from Loki is per entry: Loki stores the valid entries of a push and answers
with one text line per refused entry or stream, naming the stream's labels (plus the
``service_name`` Loki adds). Identical lines are grouped as ``N errors like: <line>``,
different ones joined by ``"; "``. The formats below are those of Loki v3.4.6 (recorded
in tests/fixtures/loki_400.py and checked against the real binary by
tests/integration/test_loki_real.py):

* ``Max entry size 'M' bytes exceeded for stream '{...}' while adding an entry with
  length 'L' bytes``: the entries of that stream whose line is L bytes long;
* ``entry for stream '{...}' has N label names; limit M``, ``stream '{...}' has label
  value too long: ...`` (and other stream-wide label errors): the whole stream;
* ``entry for stream '{...}' has timestamp too old: T, oldest acceptable timestamp is:
  O`` / ``... too new: T``: entries of that stream in second T (the oldest / newest N);
* ``stream '{...}' has structured metadata too large: 'S' bytes, ...`` / ``has too
  many structured metadata labels: 'C', ...``: entries with that much metadata;
* ``stream '{...}' includes structured metadata, but this feature is disallowed``:
  those entries are sent again without metadata, and the sink stops sending it;
* from the ingester, ``entry with timestamp <Go time> ignored, reason: '...'`` lines
  ending in ``total ignored: N out of M for stream: {...}``: those exact entries.

A line that names a stream of the push in another way refuses some entries of that
stream without saying which (they are bisected); a line that names no stream of the
push leaves every entry in doubt. A label name Loki cannot parse refuses the whole
request (``couldn't parse labels``): it names no stream, so it is bisected too.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..network.loki_format import (
    ANY_STREAM,
    LINE_TOO_LONG,
    STREAM,
    TOO_LARGE_5XX,
    error_groups,
    parse_label_text,
)
from ..network.outcomes import ACCEPTED, Accepted, Refused, Transient, parse_retry_after
from ..network.text import MAX_ERROR_CHARS
from .push import Push

METADATA_DISALLOWED = "structured metadata, but this feature is disallowed"
SERVICE_NAME = "service_name"
_NS = 1_000_000_000

_TOO_OLD = re.compile(
    rf"^entry for stream {STREAM} has timestamp too old: (\S+), oldest acceptable timestamp "
    r"is: (\S+)$", re.S
)
_TOO_NEW = re.compile(rf"^entry for stream {STREAM} has timestamp too new: (\S+)$", re.S)
_META_TOO_LARGE = re.compile(
    rf"^stream {STREAM} has structured metadata too large: '(\d+)' bytes, limit: '(\d+)' "
    r"bytes\..*$", re.S
)
_META_TOO_MANY = re.compile(
    rf"^stream {STREAM} has too many structured metadata labels: '(\d+)', limit: '(\d+)'\..*$",
    re.S,
)
_META_DISALLOWED = re.compile(rf"^stream {STREAM} includes {METADATA_DISALLOWED}\..*$", re.S)
_WHOLE_STREAM = re.compile(
    rf"^(?:entry for )?stream {STREAM} has (?:\d+ label names; limit \d+|label (?:name|value)"
    r" too long: .*)$",
    re.S,
)
_IGNORED = re.compile(r"entry with timestamp (.+?) ignored, reason: '", re.S)
_IGNORED_STREAM = re.compile(r"total ignored: (\d+) out of (\d+) for stream: (\{.*\})\s*$", re.S)
_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,9}))? \+0000 UTC$")


def classify(
    status: int,
    text: str,
    headers: Mapping[str, str],
    push: Push,
    on_metadata_disallowed: Callable[[str], None] | None = None,
) -> Accepted | Transient | Refused[Push]:
    """What Loki's answer ``status``/``text`` to ``push`` means for its entries."""
    if 200 <= status < 300:
        return ACCEPTED
    message = text.strip()[:MAX_ERROR_CHARS] or f"HTTP {status}"
    everything = range(len(push))
    if status >= 500 and any(marker in message for marker in TOO_LARGE_5XX):
        return Refused(status, message, split=everything)  # smaller pushes pass
    if status in (408, 429) or status >= 500:
        return Transient(status, message, parse_retry_after(headers.get("Retry-After")))
    if status == 400:
        return read_400(text.strip(), push, on_metadata_disallowed)
    if status == 413:
        return Refused(status, message, split=everything)
    return Refused(status, message, named=[(everything, message)])  # 401, 403, 404, 422...


@dataclass(slots=True)
class _Reading:
    named: list[tuple[list[int], str]]
    unresolved: set[int]
    resend: list[int]


def read_400(text: str, push: Push, on_metadata_disallowed: Callable[[str], None] | None = None
             ) -> Refused[Push]:
    """Match each line of Loki's 400 to the entries of ``push`` it refuses."""
    streams = push.streams
    by_stream = push.stream_positions()
    index: dict[frozenset[tuple[str, str]], int] = {
        frozenset(streams.labels[s].items()): s for s in by_stream
    }
    reading = _Reading([], set(), [])

    def stream_of(label_text: str) -> list[int] | None:
        labels = parse_label_text(label_text)
        if labels is None:
            return None
        found = index.get(frozenset(labels.items()))
        if found is None and SERVICE_NAME in labels:  # added by Loki, not sent
            labels.pop(SERVICE_NAME)
            found = index.get(frozenset(labels.items()))
        return None if found is None else by_stream[found]

    if "total ignored:" in text and _IGNORED.search(text):
        _read_ignored(text, push, stream_of, reading)
    else:
        for count, line in error_groups(text):
            _read_line(line, count, push, stream_of, reading, on_metadata_disallowed)
    message = text[:MAX_ERROR_CHARS] or "HTTP 400"
    named_positions = {p for positions, _ in reading.named for p in positions}
    unresolved = sorted(reading.unresolved - named_positions)
    resend = sorted(set(reading.resend) - named_positions - set(unresolved))
    return Refused(
        400,
        message,
        named=reading.named,
        unresolved=unresolved,
        resend=push.without_metadata(resend) if resend else None,
    )


def _read_line(
    line: str,
    count: int,
    push: Push,
    stream_of: Callable[[str], list[int] | None],
    reading: _Reading,
    on_metadata_disallowed: Callable[[str], None] | None,
) -> None:
    streams = push.streams
    positions = push.positions

    def entry(p: int) -> int:
        return positions[p]

    chosen: list[int] | None = None
    if m := LINE_TOO_LONG.match(line):
        where = stream_of(m.group(2))
        if where is not None:
            length = int(m.group(3))
            limit = int(m.group(1))
            sizes = {p: len(streams.lines[entry(p)]) for p in where}
            chosen = [p for p in where if sizes[p] == length] or [
                p for p in where if sizes[p] > limit
            ]
    elif m := _WHOLE_STREAM.match(line):
        chosen = stream_of(m.group(1))
    elif m := _TOO_OLD.match(line):
        where = stream_of(m.group(1))
        second = _rfc3339_seconds(m.group(2))
        if where is not None and second is not None:
            same = [p for p in where if streams.ts_ns[entry(p)] // _NS == second]
            chosen = sorted(same, key=lambda p: streams.ts_ns[entry(p)])[:count]
    elif m := _TOO_NEW.match(line):
        where = stream_of(m.group(1))
        second = _rfc3339_seconds(m.group(2))
        if where is not None and second is not None:
            same = [p for p in where if streams.ts_ns[entry(p)] // _NS == second]
            chosen = sorted(same, key=lambda p: streams.ts_ns[entry(p)])[-count:]
    elif m := _META_TOO_LARGE.match(line):
        where = stream_of(m.group(1))
        if where is not None:
            size = int(m.group(2))
            chosen = [
                p for p in where
                if sum(len(k) + len(v) for k, v in streams.meta[entry(p)]) == size
            ]
    elif m := _META_TOO_MANY.match(line):
        where = stream_of(m.group(1))
        if where is not None:
            chosen = [p for p in where if len(streams.meta[entry(p)]) == int(m.group(2))]
    elif m := _META_DISALLOWED.match(line):
        where = stream_of(m.group(1))
        if where is not None:
            with_meta = [p for p in where if streams.meta[entry(p)]]
            if with_meta:
                if on_metadata_disallowed is not None:
                    on_metadata_disallowed(line)
                reading.resend.extend(with_meta)
                return
    if chosen:
        reading.named.append((chosen, line))
        return
    # A line we cannot pin to entries: its stream's entries are in doubt, or all of them.
    for found in ANY_STREAM.finditer(line):
        where = stream_of(found.group(1))
        if where is not None:
            reading.unresolved.update(where)
            return
    reading.unresolved.update(range(len(push)))


def _read_ignored(
    text: str,
    push: Push,
    stream_of: Callable[[str], list[int] | None],
    reading: _Reading,
) -> None:
    """The ingester's "entry with timestamp ... ignored" report: the exact entries."""
    tail = _IGNORED_STREAM.search(text)
    where = stream_of(tail.group(3)) if tail else None
    stamps = {_go_time_ns(m.group(1)) for m in _IGNORED.finditer(text)}
    if where is None or None in stamps:
        reading.unresolved.update(where if where is not None else range(len(push)))
        return
    ts_ns, positions = push.streams.ts_ns, push.positions
    chosen = [p for p in where if ts_ns[positions[p]] in stamps]
    if chosen:
        reason = text.splitlines()[0].rstrip(",")
        reading.named.append((chosen, reason))
    else:
        reading.unresolved.update(where)


def _rfc3339_seconds(text: str) -> int | None:
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def _go_time_ns(text: str) -> int | None:
    """Go's ``time.Time.String()`` in UTC (trailing zeros of the fraction cut) as ns."""
    m = _GO_TIME.match(text.strip())
    if m is None:
        return None
    seconds = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
    fraction = (m.group(2) or "").ljust(9, "0")
    return seconds * _NS + int(fraction)
