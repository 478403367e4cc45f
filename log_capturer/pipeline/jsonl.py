"""The record format every JSON sink writes, built a batch at a time.

One JSON object per line, compact, UTF-8 kept (byte for byte what
``json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":"))`` gives)::

    {"ts":"...","host":"...","container_id":"...","container_name":"...","image":"...",
     "stream":"stdout","message":"...","labels":{...},"compose_service":"...",
     "compose_project":"...","swarm_service":"...","swarm_stack":"...","truncated":true,
     "fields":{...},"lines":3,"end_ts":"...","end_seq":1}

Strings are escaped by msgspec (byte-identical to the standard library's escaping
with ``ensure_ascii=False``, and faster). A container's fields are the same on every
line, so their JSON is made once per container (:func:`container_json`; the node's name,
the same for every container, is one of them) and a batch of plain lines is assembled
from prepared pieces with C-level joins: a message that is valid UTF-8 and holds no
character JSON must escape (the common case, checked for the whole batch at once)
is copied as it is: no object per line, which is what costs (the figures:
benchmarks/README.md, "Figures behind choices in the code").
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator
from functools import partial
from itertools import chain, islice, repeat
from typing import Any

import msgspec

from ..discovery.container import ContainerInfo
from ..timestamps import format_rfc3339_ns

encode = msgspec.json.Encoder().encode
"""A str, list or str dict as JSON bytes (UTF-8 kept)."""

# Bytes JSON never leaves as they are in a string (control characters, quote, backslash)
# become 0, bytes of multi-byte UTF-8 sequences 2, the rest 1.
_CLASSES = bytes(
    0 if b < 0x20 or b in b'"\\' else 2 if b >= 0x80 else 1 for b in range(256)
)
STREAMS = ("stdout", "stderr", "tty")
"""Every stream name a record can carry."""
_CACHE_LIMIT = 1024


def needs_escaping(joined: bytes) -> bool:
    """Whether ``joined`` (messages joined by a space, which ends any multi-byte sequence
    cut at a message's end) holds a byte that JSON escapes or invalid UTF-8: then the
    messages cannot be copied into a JSON string as they are."""
    classes = joined.translate(_CLASSES)
    if b"\0" in classes:
        return True
    if b"\2" not in classes:
        return False
    try:
        joined.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def message_json(message: bytes) -> bytes:
    """A raw message as a JSON string (invalid UTF-8 replaced, as everywhere)."""
    return encode(message.decode("utf-8", "replace"))


class ContainerJson:
    """The JSON pieces of one container's records around ts and message."""

    __slots__ = ("heads", "quoted_heads", "tail", "tail_truncated")

    def __init__(self, container: ContainerInfo) -> None:
        start = (
            b',"host":' + encode(container.host)
            + b',"container_id":' + encode(container.id)
            + b',"container_name":' + encode(container.name)
            + b',"image":' + encode(container.image)
            + b',"stream":'
        )
        # stream -> everything between the ts string and the message string (its opening
        # quote included in quoted_heads, for messages copied as they are)
        self.heads = {s: b'"' + start + encode(s) + b',"message":' for s in STREAMS}
        self.quoted_heads = {s: head + b'"' for s, head in self.heads.items()}
        tail = b',"labels":' + encode(container.labels)
        if container.compose_service is not None:
            tail += b',"compose_service":' + encode(container.compose_service)
        if container.compose_project is not None:
            tail += b',"compose_project":' + encode(container.compose_project)
        if container.swarm_service is not None:
            tail += b',"swarm_service":' + encode(container.swarm_service)
        if container.swarm_stack is not None:
            tail += b',"swarm_stack":' + encode(container.swarm_stack)
        self.tail = tail
        self.tail_truncated = tail + b',"truncated":true'


# id(container) -> (a weak reference to it, its pieces). An entry goes with its container
# (the reference's callback), so the cache holds the pieces of containers still known,
# not of every short-lived container since the start (a soak with churn grew by them for
# 34 minutes: benchmarks/README.md, "Memory"); the reference tells a reused id apart.
_cache: dict[int, tuple[weakref.ref[ContainerInfo], ContainerJson]] = {}


def _forget(ref: weakref.ref[ContainerInfo], key: int) -> None:
    entry = _cache.get(key)
    if entry is not None and entry[0] is ref:
        del _cache[key]


def container_json(container: ContainerInfo) -> ContainerJson:
    key = id(container)
    entry = _cache.get(key)
    if entry is not None and entry[0]() is container:
        return entry[1]
    if len(_cache) >= _CACHE_LIMIT:  # a bound all the same (containers replaced unseen)
        _cache.clear()
    pieces = ContainerJson(container)
    _cache[key] = (weakref.ref(container, partial(_forget, key=key)), pieces)
    return pieces


def lines_jsonl(
    container: ContainerInfo,
    streams: list[str],
    ts: list[bytes],
    messages: list[bytes],
    truncated: list[bool] | None,
) -> bytes:
    """JSON lines (each ended by a newline) for plain lines of one container: Docker's
    timestamp text, stream and raw message of each.

    Four pieces a line (timestamp, the pieces up to the message, the message, the rest
    up to the next line's timestamp), joined at once.
    """
    if not messages:
        return b""
    pieces = container_json(container)
    if needs_escaping(b" ".join(messages)):
        quoted: list[bytes] | map[bytes] = map(message_json, messages)
        heads, close = pieces.heads, b""
    else:
        quoted, heads, close = messages, pieces.quoted_heads, b'"'
    if streams.count(streams[0]) == len(streams):
        head: Iterator[bytes] = repeat(heads[streams[0]])
    else:
        head = map(heads.__getitem__, streams)
    tail = close + pieces.tail + b"}\n"
    if truncated is None or not any(truncated):
        tails: Iterator[bytes] = repeat(tail + _TS)
    else:
        cut = close + pieces.tail_truncated + b"}\n"
        tails = map((tail + _TS, cut + _TS).__getitem__, truncated)
    lines = zip(ts, head, quoted, tails, strict=False)  # head and tails may be repeats
    return b"".join(
        chain((_TS,), chain.from_iterable(islice(lines, len(ts) - 1)), _last_line(lines))
    )


def _last_line(lines: Iterator[tuple[bytes, bytes, bytes, bytes]]) -> Iterator[bytes]:
    """The last line's pieces: its tail opens no next line."""
    ts, head, quoted, tail = next(lines)
    yield ts
    yield head
    yield quoted
    yield tail[: -len(_TS)]


_TS = b'{"ts":"'


def record_json(
    container: ContainerInfo,
    stream: str,
    ts: str,
    message: str,
    truncated: bool,
    fields: dict[str, Any] | None,
    lines: int,
    end_ts_ns: int,
    end_seq: int,
) -> bytes:
    """One record with everything a stage may have added (no newline)."""
    pieces = container_json(container)
    out = (
        b'{"ts":' + encode(ts) + pieces.heads[stream][1:] + encode(message)
        + (pieces.tail_truncated if truncated else pieces.tail)
    )
    if fields is not None:
        # The standard library, as parse_json decoded them (its floats, NaN, big ints).
        text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        out += b',"fields":' + text.encode()
    if lines > 1:
        # Merged lines: where the last one was, so the file sink can recover exactly.
        out += (
            b',"lines":%d,"end_ts":' % lines
            + encode(format_rfc3339_ns(end_ts_ns))
            + b',"end_seq":%d' % end_seq
        )
    return out + b"}"
