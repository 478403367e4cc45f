"""A captured log line with everything a sink needs, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain, repeat
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from ..discovery.container import ContainerInfo
from ..timestamps import format_rfc3339_ns


@dataclass(slots=True)
class LogRecord:
    """One line of one container stream; ``(ts_ns, seq)`` is its position in the stream.

    A record that merges several lines (multiline stage) keeps the first line's
    ``ts`` and carries the position of its last line in ``end_ts_ns``/``end_seq``:
    acknowledging it covers every line it holds.
    """

    container: ContainerInfo
    stream: str
    ts_ns: int
    seq: int
    ts: str
    message: str
    truncated: bool = False
    end_ts_ns: int = -1
    end_seq: int = -1
    lines: int = 1
    fields: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.end_ts_ns < 0:
            self.end_ts_ns = self.ts_ns
            self.end_seq = self.seq

    @property
    def key(self) -> tuple[str, str]:
        return (self.container.id, self.stream)

    @property
    def end_position(self) -> tuple[int, int]:
        """Position of the last source line this record holds."""
        return (self.end_ts_ns, self.end_seq)

    @property
    def size(self) -> int:
        return len(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The record format every JSON sink writes (field names are part of the product)."""
        c = self.container
        out: dict[str, Any] = {
            "ts": self.ts,
            "container_id": c.id,
            "container_name": c.name,
            "image": c.image,
            "stream": self.stream,
            "message": self.message,
            "labels": c.labels,
        }
        if c.compose_service is not None:
            out["compose_service"] = c.compose_service
        if c.compose_project is not None:
            out["compose_project"] = c.compose_project
        if self.truncated:
            out["truncated"] = True
        if self.fields is not None:
            out["fields"] = self.fields
        if self.lines > 1:
            # Merged lines: where the last one was, so the file sink can recover exactly.
            out["lines"] = self.lines
            out["end_ts"] = format_rfc3339_ns(self.end_ts_ns)
            out["end_seq"] = self.end_seq
        return out

    def to_json(self) -> str:
        """``to_dict`` as compact JSON (UTF-8 kept), byte for byte; see :func:`record_json`."""
        return record_json(self)


# -- the record's JSON, fast -----------------------------------------------------------------
#
# json.dumps(..., ensure_ascii=False, separators=...) builds a new encoder per call and
# walks a fresh dict: about 3 µs a record, the largest cost of the file sink. A record's
# container fields (id, name, image, labels, compose) are the same for every line of a
# container, so their JSON is made once; per record only ts, message (and the optional
# fields) are encoded, with the very function json.dumps uses for a str with
# ensure_ascii=False (C-accelerated). The output is identical to dumping ``to_dict()``.

_encode_value = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_STREAMS_JSON = {s: encode_basestring(s) for s in ("stdout", "stderr", "tty")}
_CACHE_LIMIT = 1024
# id(container) -> (container, JSON between ts and stream, JSON after message up to the
# optional fields). The container is kept to check the id was not reused.
_container_json: dict[int, tuple[ContainerInfo, str, str]] = {}


def _container_parts(container: ContainerInfo) -> tuple[str, str]:
    entry = _container_json.get(id(container))
    if entry is not None and entry[0] is container:
        return entry[1], entry[2]
    head = (
        f',"container_id":{encode_basestring(container.id)}'
        f',"container_name":{encode_basestring(container.name)}'
        f',"image":{encode_basestring(container.image)},"stream":'
    )
    tail = f',"labels":{_encode_value(container.labels)}'
    if container.compose_service is not None:
        tail += f',"compose_service":{encode_basestring(container.compose_service)}'
    if container.compose_project is not None:
        tail += f',"compose_project":{encode_basestring(container.compose_project)}'
    if len(_container_json) >= _CACHE_LIMIT:
        _container_json.clear()
    _container_json[id(container)] = (container, head, tail)
    return head, tail


def record_json(record: LogRecord) -> str:
    """One record as the JSON line every JSON sink writes (no newline)."""
    head, tail = _container_parts(record.container)
    stream = _STREAMS_JSON.get(record.stream) or encode_basestring(record.stream)
    text = (
        f'{{"ts":{encode_basestring(record.ts)}{head}{stream}'
        f',"message":{encode_basestring(record.message)}{tail}'
    )
    if record.truncated or record.fields is not None or record.lines > 1:
        if record.truncated:
            text += ',"truncated":true'
        if record.fields is not None:
            text += f',"fields":{_encode_value(record.fields)}'
        if record.lines > 1:
            text += (
                f',"lines":{_encode_value(record.lines)}'
                f',"end_ts":{encode_basestring(format_rfc3339_ns(record.end_ts_ns))}'
                f',"end_seq":{_encode_value(record.end_seq)}'
            )
    return text + "}"


_container_of = attrgetter("container")
_ts_of = attrgetter("ts")
_stream_of = attrgetter("stream")
_message_of = attrgetter("message")
_truncated_of = attrgetter("truncated")
_fields_of = attrgetter("fields")
_lines_of = attrgetter("lines")


def records_jsonl(records: list[LogRecord]) -> str:
    """Records as JSON lines, each ended by a newline ("" for none).

    A batch of plain records of one container (the usual case: a monitor's burst) is
    assembled by C-level passes over the batch, with no Python call per record.
    """
    if not records:
        return ""
    first = records[0].container
    if (
        len(set(map(id, map(_container_of, records)))) == 1
        and not any(map(_truncated_of, records))
        and list(map(_fields_of, records)).count(None) == len(records)
        and max(map(_lines_of, records)) == 1
        and set(map(_stream_of, records)) <= _STREAMS_JSON.keys()
    ):
        head, tail = _container_parts(first)
        return "".join(
            chain.from_iterable(
                zip(
                    repeat('{"ts":'),
                    map(encode_basestring, map(_ts_of, records)),
                    repeat(head),
                    map(_STREAMS_JSON.__getitem__, map(_stream_of, records)),
                    repeat(',"message":'),
                    map(encode_basestring, map(_message_of, records)),
                    repeat(tail + "}\n"),
                )
            )
        )
    return "\n".join(map(record_json, records)) + "\n"


@dataclass(frozen=True, slots=True)
class ControlItem:
    """A non-record item that must be applied in order with the records around it."""

    kind: str  # "start_marks" | "prune"
    container_id: str
    payload: Any = None
