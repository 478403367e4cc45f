"""Batches to OTLP/HTTP logs requests, in three steps:

1. the batches' columns (sinks/network/columns.py ``gather``) ->
   :class:`~..network.columns.Streams`: per container stream its resource attributes (the
   ``labels`` of the stream), per entry its timestamp, body and log record attributes (the
   ``meta``), without an object per line (:class:`Encoder`);
2. -> :class:`Export` s of about ``batch_bytes`` each (``split_ranges``);
3. :class:`Export` -> the body: an ``ExportLogsServiceRequest`` of the official
   ``opentelemetry-proto`` messages (protobuf), or OTLP/JSON, gzip-compressed by default.
   One ``ResourceLogs`` per container (its streams share the resource), one ``ScopeLogs``
   without a scope name (Loki would store a ``scope_name`` on every line), one
   ``LogRecord`` per line built from a per-attribute-set template (``MergeFrom``, then
   the timestamp and the body), cheaper than setting every field of every record
   (benchmarks/README.md, "Figures behind choices in the code").

An :class:`Export` is the :class:`~log_capturer.sinks.network.outcomes.Payload` of the OTLP sink:
positions into one :class:`Streams`, so the delivery machinery can cut and merge it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cramjam
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as OtlpLogRecord

from ...discovery.container import ContainerInfo
from ...metrics.registry import OTLP_LINES_TRUNCATED, SINK_RECORDS
from ...pipeline.batch import Batch
from ..network.columns import (
    Meta,
    Streams,
    cut_lines,
    dead_letter_docs,
    gather,
    merge_positions,
    sample_timestamps,
    split_ranges,
    sub_positions,
)
from ..network.relabel import CardinalityGuard, Relabeler, StreamDecisions, docker_meta, visible
from ..network.text import json_bytes
from .config import OtlpSinkConfig

Encoding = Literal["protobuf", "json"]
Compression = Literal["gzip", "none"]

IOSTREAM = "log.iostream"
TRUNCATED = "truncated"
_GZIP_LEVEL = 1  # most of level 5's gain for much less CPU (benchmarks/README.md)
_CONTENT_TYPES = {"protobuf": "application/x-protobuf", "json": "application/json"}
_SPOOL_PREFIX = b"otlp-logs "
_GZIP_MAGIC = b"\x1f\x8b"


def _spool_tag(encoding: Encoding, compression: Compression) -> bytes:
    return _SPOOL_PREFIX + f"{encoding}+{compression}\n".encode()


# -- step 3: bodies ----------------------------------------------------------------------------


def protobuf_request(
    streams: Streams[str],
    groups: Iterable[tuple[int, Sequence[int], Sequence[str], Sequence[Meta]]],
) -> bytes:
    """A serialized ``ExportLogsServiceRequest`` of the entries in ``groups``."""
    request = ExportLogsServiceRequest()
    records_of: dict[str, Any] = {}
    templates: dict[int, tuple[Meta, Any]] = {}  # id(meta) -> (meta kept alive, LogRecord)
    for stream, stamps, lines, metas in groups:
        key = streams.texts[stream]
        records = records_of.get(key)
        if records is None:
            resource_logs = request.resource_logs.add()
            attributes = resource_logs.resource.attributes
            for name, value in streams.labels[stream].items():
                attributes.add(key=name).value.string_value = value
            records = records_of[key] = resource_logs.scope_logs.add().log_records
        add = records.add
        for ts_ns, line, meta in zip(stamps, lines, metas, strict=True):
            known = templates.get(id(meta))
            if known is None:
                known = templates[id(meta)] = (meta, _template(meta))
            record = add()
            record.MergeFrom(known[1])
            record.time_unix_nano = ts_ns
            try:
                record.body.string_value = line
            except (UnicodeEncodeError, ValueError):  # a lone surrogate: not UTF-8
                record.body.string_value = line.encode("utf-8", "replace").decode("utf-8")
    return bytes(request.SerializeToString())


def _template(meta: Meta) -> Any:
    template = OtlpLogRecord()
    attributes = template.attributes
    for name, value in meta:
        if name == TRUNCATED:
            attributes.add(key=name).value.bool_value = True
        else:
            attributes.add(key=name).value.string_value = value
    return template


def json_request(
    streams: Streams[str],
    groups: Iterable[tuple[int, Sequence[int], Sequence[str], Sequence[Meta]]],
) -> bytes:
    """OTLP/JSON of the entries in ``groups`` (lowerCamelCase keys, int64 as strings)."""
    resources: dict[str, list[dict[str, Any]]] = {}
    docs: list[dict[str, Any]] = []
    attributes_of: dict[int, tuple[Meta, list[dict[str, Any]]]] = {}
    for stream, stamps, lines, metas in groups:
        key = streams.texts[stream]
        records = resources.get(key)
        if records is None:
            records = resources[key] = []
            docs.append({
                "resource": {"attributes": [
                    {"key": name, "value": {"stringValue": value}}
                    for name, value in streams.labels[stream].items()
                ]},
                "scopeLogs": [{"scope": {}, "logRecords": records}],
            })
        for ts_ns, line, meta in zip(stamps, lines, metas, strict=True):
            known = attributes_of.get(id(meta))
            if known is None:
                known = attributes_of[id(meta)] = (meta, [
                    {"key": name, "value": {"boolValue": True} if name == TRUNCATED
                     else {"stringValue": value}}
                    for name, value in meta
                ])
            record: dict[str, Any] = {"timeUnixNano": str(ts_ns), "body": {"stringValue": line}}
            if known[1]:
                record["attributes"] = known[1]
            records.append(record)
    return json_bytes({"resourceLogs": docs})


def _compress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return bytes(cramjam.gzip.compress(data, level=_GZIP_LEVEL))
    return data


def _decompress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    return data


def decode_protobuf(data: bytes) -> Streams[str]:
    try:
        request = ExportLogsServiceRequest.FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not an OTLP logs request: {exc}") from exc
    out: Streams[str] = Streams()
    for resource_logs in request.resource_logs:
        labels = {a.key: a.value.string_value for a in resource_logs.resource.attributes}
        ts_ns: list[int] = []
        lines: list[str] = []
        metas: list[Meta] = []
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                ts_ns.append(record.time_unix_nano)
                lines.append(record.body.string_value)
                metas.append(tuple(
                    (a.key, "true" if a.value.WhichOneof("value") == "bool_value"
                     else a.value.string_value)
                    for a in record.attributes
                ))
        out.add(labels, ts_ns, lines, metas, resource_key(labels))
    return out


def decode_json(data: bytes) -> Streams[str]:
    try:
        doc = json.loads(data)
        out: Streams[str] = Streams()
        for resource_logs in doc["resourceLogs"]:
            labels = {
                str(a["key"]): str(a["value"]["stringValue"])
                for a in resource_logs["resource"]["attributes"]
            }
            ts_ns: list[int] = []
            lines: list[str] = []
            metas: list[Meta] = []
            for scope_logs in resource_logs["scopeLogs"]:
                for record in scope_logs["logRecords"]:
                    ts_ns.append(int(record["timeUnixNano"]))
                    lines.append(str(record["body"]["stringValue"]))
                    metas.append(tuple(
                        (str(a["key"]), "true" if "boolValue" in a["value"]
                         else str(a["value"]["stringValue"]))
                        for a in record.get("attributes", ())
                    ))
            out.add(labels, ts_ns, lines, metas, resource_key(labels))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an OTLP/JSON logs request: {exc!r}") from exc
    return out


def resource_key(labels: Mapping[str, str]) -> str:
    """Tells resources apart within one request (the key of a stream's ``text``)."""
    return json.dumps(sorted(labels.items()), ensure_ascii=False)


# -- the payload -------------------------------------------------------------------------------


_DEAD_LETTER_KEYS = ("resource", "body", "attributes")
"""What a dead letter calls the stream's labels, the line and the entry's pairs."""


@dataclass(slots=True, eq=False)
class Export:
    """The entries of one export request (positions into ``streams``) and its body."""

    streams: Streams[str]
    positions: Sequence[int]  # ascending; a range when contiguous
    encoding: Encoding
    compression: Compression
    _body: bytes | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def content_headers(self) -> Mapping[str, str]:
        headers = {"Content-Type": _CONTENT_TYPES[self.encoding]}
        if self.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        return headers

    def body(self) -> bytes:
        if self._body is None:
            groups = self.streams.groups(self.positions)
            if self.encoding == "protobuf":
                raw = protobuf_request(self.streams, groups)
            else:
                raw = json_request(self.streams, groups)
            self._body = _compress(raw, self.compression)
        return self._body

    def subset(self, positions: Sequence[int]) -> Export:
        return Export(self.streams, sub_positions(self.positions, positions), self.encoding,
                      self.compression)

    def merge(self, others: Sequence[Export]) -> list[Export]:
        parts = [(export.streams, export.positions) for export in (self, *others)]
        return [Export(streams, ids, self.encoding, self.compression)
                for streams, ids in merge_positions(parts)]

    def timestamps_ns(self) -> Sequence[int]:
        return sample_timestamps(self.streams, self.positions)

    def dead_letters(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return dead_letter_docs(self.streams, self.positions, positions, _DEAD_LETTER_KEYS)

    def to_spool(self) -> bytes:
        return _spool_tag(self.encoding, self.compression) + self.body()

    def entries_of(self, streams: set[int]) -> list[int]:
        """Positions (in this payload) of the entries of those streams."""
        stream_of = self.streams.stream_of
        return [p for p, i in enumerate(self.positions) if stream_of[i] in streams]

    def line_bytes(self, position: int) -> int:
        return len(self.streams.lines[self.positions[position]].encode("utf-8", "replace"))

    @classmethod
    def from_spool(cls, data: bytes) -> Export:
        """The export spooled as ``data``, its body as it was (raises ValueError)."""
        head, newline, body = data.partition(b"\n")
        if not (newline and head.startswith(_SPOOL_PREFIX)):
            raise ValueError("not a spooled OTLP export (unknown format)")
        kind = head[len(_SPOOL_PREFIX):].decode("ascii", "replace")
        encoding, _, compression = kind.partition("+")
        if encoding not in _CONTENT_TYPES or compression not in ("gzip", "none"):
            raise ValueError(f"not a spooled OTLP export (unknown kind {kind!r})")
        try:
            raw = _decompress(body, compression)  # type: ignore[arg-type]
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"spooled OTLP export: bad gzip: {exc}") from exc
        streams = decode_protobuf(raw) if encoding == "protobuf" else decode_json(raw)
        return cls(streams, range(len(streams)), encoding, compression, body)  # type: ignore[arg-type]


# -- steps 1 and 2 -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    """What the config makes of one container stream."""

    attributes: dict[str, str]  # the resource's
    key: str
    meta: Meta  # log record attributes of every entry (truncated aside)
    cut_meta: Meta  # the same, for a line that was cut
    extra: int  # bytes of the resource attributes Loki copies onto every line (not labels)


class Encoder:
    """Turns batches into :class:`Export` s: resource attributes (OpenTelemetry semantic
    conventions, then the rules), log record attributes, lines cut to ``max_line_bytes``."""

    def __init__(self, config: OtlpSinkConfig, name: str = "otlp") -> None:
        self.config = config
        self.name = name
        self.host = config.host  # overrides the node's name (container.host)
        self._resource_rules = Relabeler(config.relabel_configs)
        self._meta_rules = Relabeler(config.metadata_relabel_configs)
        self._guard = CardinalityGuard(name, config.max_label_values, "resource attribute")
        self._guarded = set(config.index_attributes).__contains__
        self.resolve = StreamDecisions(self._decide).get
        """The decisions for one container stream (None: a rule dropped it), made once."""

    def build(self, batches: Sequence[Batch]) -> list[Export]:
        """The requests of one delivery, each about ``batch_bytes``."""
        streams = self.columns(batches)
        config = self.config
        return [
            Export(streams, part, config.encoding, config.compression)
            for part in split_ranges(streams, config.batch_bytes)
        ]

    def entries(self, batches: Sequence[Batch], out: Streams[str] | None = None) -> Streams[str]:
        """The batches' lines appended to ``out`` (a new :class:`Streams` when None)."""
        return self.columns(batches, out)

    def payload(self, streams: Streams[str], positions: Sequence[int]) -> Export:
        """The request of the entries at ``positions`` of ``streams``."""
        return Export(streams, positions, self.config.encoding, self.config.compression)

    def columns(self, batches: Sequence[Batch], out: Streams[str] | None = None) -> Streams[str]:
        """The batches' lines as :class:`Streams`: a container's streams next to each other,
        each in timestamp order."""
        out = Streams() if out is None else out
        for part in gather(batches):
            resolved = self.resolve(part.container, part.stream)
            if resolved is None:
                SINK_RECORDS.labels(self.name, "relabel_dropped").inc(len(part.ts_ns))
                continue
            lines, cut = cut_lines(part.texts, self.config.max_line_bytes)
            truncated = part.truncated
            if cut is not None:
                OTLP_LINES_TRUNCATED.inc(sum(cut))
                truncated = cut if truncated is None else [
                    a or b for a, b in zip(truncated, cut, strict=True)
                ]
            if truncated is None:
                metas: list[Meta] = [resolved.meta] * len(lines)
            else:
                metas = [resolved.cut_meta if t else resolved.meta for t in truncated]
            out.add(resolved.attributes, part.ts_ns, lines, metas, resolved.key, resolved.extra)
        return out

    def semantic_attributes(self, container: ContainerInfo) -> dict[str, str]:
        """The OpenTelemetry semantic conventions of a container's resource."""
        attributes = {
            "container.id": container.id,
            "container.name": container.name,
            "container.image.name": container.image,
            "service.name": (
                container.swarm_service or container.compose_service or container.name
            ),
            "service.namespace": container.swarm_stack or "",
            "host.name": self.host or container.host,
        }
        attributes.update(self.config.resource_attributes)
        return {k: v for k, v in attributes.items() if v}

    def _decide(self, container: ContainerInfo, stream: str) -> _Resolved | None:
        attributes = self.semantic_attributes(container)
        meta_labels = None
        if self._resource_rules:
            meta_labels = docker_meta(container, stream, self.host or container.host)
            relabelled = self._resource_rules.apply(meta_labels | attributes)
            if relabelled is None:
                return None
            attributes = visible(relabelled)
        attributes = self._guard.admit(attributes, self._guarded)
        record: dict[str, str] = {IOSTREAM: stream}
        if self._meta_rules:
            if meta_labels is None:
                meta_labels = docker_meta(container, stream, self.host or container.host)
            relabelled = self._meta_rules.apply(meta_labels | record)
            record = visible(relabelled) if relabelled is not None else {}
        record.pop(TRUNCATED, None)
        meta: Meta = tuple(record.items())
        extra = sum(len(k) + len(v) for k, v in attributes.items() if not self._guarded(k))
        return _Resolved(attributes, resource_key(attributes), meta, (*meta, (TRUNCATED, "true")),
                         extra)
