"""Records to Loki pushes, in three steps the rest of the sink relies on:

1. records (or the columns of a batch) -> :class:`Streams`: per stream its labels, and
   per entry its timestamp, line and structured metadata, in columns, stream after
   stream, each stream in timestamp order (:class:`Encoder`);
2. :class:`Streams` -> :class:`Push` es of about ``batch_bytes`` of entries each
   (:func:`split_pushes`), as Promtail batches;
3. :class:`Push` -> the request body: protobuf + snappy (Loki's native encoding, as
   Promtail sends it) or JSON + gzip (:func:`protobuf_body`, :func:`json_body`).

A :class:`Push` is the :class:`~log_capturer.sinks.delivery.Payload` of the Loki sink:
its parts are index lists into the same :class:`Streams`, so the delivery machinery can
cut and merge them, and it knows its entries to write them to the dead-letter file.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import cramjam
import structlog

from ...discovery.container import ContainerInfo
from ...metrics.registry import LOKI_LINES_TRUNCATED, SINK_RECORDS
from ...pipeline.batch import Batch
from ...pipeline.record import LogRecord
from .. import columns
from ..columns import (
    ENTRY_OVERHEAD,
    NO_META,
    Meta,
    cut_lines,
    dead_letter_docs,
    gather,
    merge_positions,
    sample_timestamps,
    split_ranges,
    sub_positions,
)
from ..delivery import json_bytes
from ..relabel import CardinalityGuard, Relabeler, docker_meta, visible
from .config import (
    LABEL_NAME,
    LOKI_MAX_LABEL_VALUE,
    LOKI_MAX_LABELS,
    LokiSinkConfig,
    sanitize_label_name,
)
from .labels import label_text, parse_label_text
from .logproto import PushRequest

Encoding = Literal["protobuf", "json"]
_log = structlog.get_logger(__name__)
_NS = 1_000_000_000
__all__ = ["ENTRY_OVERHEAD", "NO_META", "Encoder", "Meta", "Push", "Streams", "split_pushes"]
_GZIP_LEVEL = 5  # most of gzip's gain on log text for a fraction of level 9's CPU
_HEADERS: dict[str, Mapping[str, str]] = {
    "protobuf": {"Content-Type": "application/x-protobuf"},
    "json": {"Content-Type": "application/json", "Content-Encoding": "gzip"},
}
# Spooled pushes: a tag line, then the body as it is sent. A spool written before the tag
# existed holds bare gzip JSON bodies, which still replay.
_SPOOL_TAGS: dict[str, bytes] = {
    "protobuf": b"loki-push protobuf+snappy\n",
    "json": b"loki-push json+gzip\n",
}
_GZIP_MAGIC = b"\x1f\x8b"


# -- step 1: entries in columns ------------------------------------------------------------


@dataclass(slots=True)
class Streams(columns.Streams):
    """:class:`~log_capturer.sinks.columns.Streams` whose key is the labels in Loki's
    spelling (``{a="1"}``), as protobuf pushes send them."""

    def add(
        self,
        labels: dict[str, str],
        ts_ns: Sequence[int],
        lines: Sequence[str],
        meta: Sequence[Meta],
        text: str | None = None,
    ) -> None:
        columns.Streams.add(
            self, labels, ts_ns, lines, meta, label_text(labels) if text is None else text
        )


# -- step 3: bodies --------------------------------------------------------------------------


def protobuf_body(
    streams: Iterable[tuple[str, Sequence[int], Sequence[str], Sequence[Meta]]],
) -> bytes:
    """A snappy-compressed ``logproto.PushRequest`` of ``(labels text, ts, lines, meta)``."""
    request = PushRequest()
    add_stream = request.streams.add
    for text, stamps, lines, metas in streams:
        add = add_stream(labels=text).entries.add
        if any(metas):
            for ts_ns, line, meta in zip(stamps, lines, metas, strict=True):
                entry = _entry(add, line)
                stamp = entry.timestamp
                stamp.seconds = ts_ns // _NS
                stamp.nanos = ts_ns % _NS
                if meta:
                    pairs = entry.structuredMetadata
                    for name, value in meta:
                        pairs.add(name=name, value=value)
        else:
            for ts_ns, line in zip(stamps, lines, strict=True):
                stamp = _entry(add, line).timestamp
                stamp.seconds = ts_ns // _NS
                stamp.nanos = ts_ns % _NS
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def _entry(add: Any, line: str) -> Any:
    try:
        return add(line=line)
    except (UnicodeEncodeError, ValueError):  # a lone surrogate: not UTF-8, protobuf refuses
        return add(line=line.encode("utf-8", "replace").decode("utf-8"))


def json_body(
    streams: Iterable[tuple[dict[str, str], Sequence[int], Sequence[str], Sequence[Meta]]],
) -> bytes:
    """A gzip-compressed JSON push of ``(labels, ts, lines, meta)``."""
    docs = []
    for labels, stamps, lines, metas in streams:
        values: list[list[Any]] = [
            [str(ts_ns), line, dict(meta)] if meta else [str(ts_ns), line]
            for ts_ns, line, meta in zip(stamps, lines, metas, strict=True)
        ]
        docs.append({"stream": labels, "values": values})
    return gzip.compress(json_bytes({"streams": docs}), _GZIP_LEVEL)


def decode_protobuf(body: bytes) -> Streams:
    try:
        request = PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    except Exception as exc:  # cramjam and protobuf raise their own types
        raise ValueError(f"not a snappy protobuf Loki push: {exc!r}") from exc
    out = Streams()
    for stream in request.streams:
        labels = parse_label_text(stream.labels)
        if labels is None:
            raise ValueError(f"unreadable stream labels {stream.labels[:200]!r}")
        entries = stream.entries
        out.add(
            labels,
            [e.timestamp.seconds * _NS + e.timestamp.nanos for e in entries],
            [e.line for e in entries],
            [tuple((m.name, m.value) for m in e.structuredMetadata) for e in entries],
            text=stream.labels,
        )
    return out


def decode_json(body: bytes) -> Streams:
    try:
        doc = json.loads(gzip.decompress(body))
        out = Streams()
        for stream in doc["streams"]:
            values = stream["values"]
            out.add(
                {str(k): str(v) for k, v in stream["stream"].items()},
                [int(v[0]) for v in values],
                [str(v[1]) for v in values],
                [tuple(v[2].items()) if len(v) > 2 and v[2] else NO_META for v in values],
            )
    except (OSError, EOFError, zlib.error, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as exc:
        raise ValueError(f"not a gzip JSON Loki push: {exc!r}") from exc
    return out


# -- the payload ---------------------------------------------------------------------------


_DEAD_LETTER_KEYS = ("stream", "line", "metadata")
"""What a dead letter calls the stream's labels, the line and the entry's pairs."""


@dataclass(slots=True, eq=False)
class Push:
    """The entries of one push request (positions into ``streams``) and its body."""

    streams: Streams
    positions: Sequence[int]  # ascending; a range when contiguous
    encoding: Encoding
    _body: bytes | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def content_headers(self) -> Mapping[str, str]:
        return _HEADERS[self.encoding]

    def body(self) -> bytes:
        if self._body is None:
            groups = self.streams.groups(self.positions)
            texts, labels = self.streams.texts, self.streams.labels
            if self.encoding == "protobuf":
                self._body = protobuf_body((texts[s], t, li, m) for s, t, li, m in groups)
            else:
                self._body = json_body((labels[s], t, li, m) for s, t, li, m in groups)
        return self._body

    def subset(self, positions: Sequence[int]) -> Push:
        return Push(self.streams, sub_positions(self.positions, positions), self.encoding)

    def merge(self, others: Sequence[Push]) -> list[Push]:
        parts = [(push.streams, push.positions) for push in (self, *others)]
        return [Push(streams, ids, self.encoding) for streams, ids in merge_positions(parts)]

    def timestamps_ns(self) -> Sequence[int]:
        return sample_timestamps(self.streams, self.positions)

    def dead_letters(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return dead_letter_docs(self.streams, self.positions, positions, _DEAD_LETTER_KEYS)

    def to_spool(self) -> bytes:
        return _SPOOL_TAGS[self.encoding] + self.body()

    @property
    def has_metadata(self) -> bool:
        meta = self.streams.meta
        return any(meta[i] for i in self.positions)

    def without_metadata(self, positions: Sequence[int] | None = None) -> Push:
        """These entries (or those at ``positions``) without structured metadata."""
        chosen = self.positions if positions is None else [self.positions[p] for p in positions]
        return Push(self.streams.without_metadata(), chosen, self.encoding)

    # the positions of each stream, for matching Loki's answers to entries
    def stream_positions(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for p, i in enumerate(self.positions):
            out.setdefault(self.streams.stream_of[i], []).append(p)
        return out

    @classmethod
    def from_spool(cls, data: bytes) -> Push:
        """The push spooled as ``data``, its body as it was (raises ValueError)."""
        if data.startswith(_SPOOL_TAGS["protobuf"]):
            body = data[len(_SPOOL_TAGS["protobuf"]) :]
            return cls._whole(decode_protobuf(body), "protobuf", body)
        if data.startswith(_SPOOL_TAGS["json"]):
            body = data[len(_SPOOL_TAGS["json"]) :]
            return cls._whole(decode_json(body), "json", body)
        if data.startswith(_GZIP_MAGIC):  # written before the upgrade: bare gzip JSON
            return cls._whole(decode_json(data), "json", data)
        raise ValueError("not a spooled Loki push (unknown format)")

    @classmethod
    def _whole(cls, streams: Streams, encoding: Encoding, body: bytes) -> Push:
        return cls(streams, range(len(streams)), encoding, body)


# -- step 2: pushes of about batch_bytes -----------------------------------------------------


def split_pushes(streams: Streams, batch_bytes: int, encoding: Encoding) -> list[Push]:
    """Pushes of consecutive entries, each about ``batch_bytes`` of body (see
    :func:`~log_capturer.sinks.columns.split_ranges`)."""
    return [Push(streams, part, encoding) for part in split_ranges(streams, batch_bytes)]


# -- step 1 from records ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Resolved:
    """What the config makes of one container stream."""

    labels: dict[str, str]
    text: str
    meta: Meta  # structured metadata of every entry (truncated aside)


class Encoder:
    """Turns batches (or records) into :class:`Streams`: labels, lines (cut to Loki's
    limit), metadata."""

    _CACHE_LIMIT = 4096

    def __init__(self, config: LokiSinkConfig, name: str = "loki") -> None:
        self.config = config
        self.name = name
        self.host = config.host  # overrides the node's name (container.host)
        self.metadata_enabled = bool(
            config.structured_metadata or config.metadata_relabel_configs
        )
        self._base_meta = [n for n in config.structured_metadata if n != "truncated"]
        self._mark_truncated = "truncated" in config.structured_metadata
        self._label_rules = Relabeler(config.relabel_configs)
        self._meta_rules = Relabeler(config.metadata_relabel_configs)
        self._guard = CardinalityGuard(name, config.max_label_values)
        self._resolved: dict[tuple[str, str, str], _Resolved | None] = {}
        self._reported: set[str] = set()

    def build(self, batches: Sequence[Batch]) -> list[Push]:
        """The pushes of one delivery: every batch's lines, a Loki stream per container
        stream, in pushes of about ``batch_bytes``."""
        return split_pushes(self.entries(batches), self.config.batch_bytes, self.config.encoding)

    def entries(self, batches: Sequence[Batch], out: columns.Streams | None = None) -> Streams:
        """Every batch's lines, a Loki stream per container stream, appended to ``out`` (a
        new :class:`Streams` when None: only this encoder's are passed back)."""
        if out is not None and not isinstance(out, Streams):
            raise TypeError(f"not the Loki sink's entries: {type(out).__name__}")
        if self.config.line_format == "json":
            return self.streams([r for batch in batches for r in batch.records()], out)
        return self.columns(batches, out)

    def payload(self, streams: columns.Streams, positions: Sequence[int]) -> Push:
        """The push of the entries at ``positions`` of ``streams`` (this encoder's)."""
        assert isinstance(streams, Streams)
        return Push(streams, positions, self.config.encoding)

    def columns(self, batches: Sequence[Batch], out: Streams | None = None) -> Streams:
        """Batches (line format ``message``) as :class:`Streams`, without an object per line:
        each container stream's timestamps, texts and cut flags gathered in columns."""
        out = Streams() if out is None else out
        for part in gather(batches):
            self.add_columns(out, part.container, part.stream, part.ts_ns, part.texts,
                             part.truncated)
        return out

    def streams(self, records: list[LogRecord], out: Streams | None = None) -> Streams:
        by_stream: dict[tuple[str, str], list[LogRecord]] = {}
        for record in records:
            key = (record.container.id, record.stream)
            group = by_stream.get(key)
            if group is None:
                by_stream[key] = [record]
            else:
                group.append(record)
        out = Streams() if out is None else out
        for group in by_stream.values():
            if any(r.ts_ns > s.ts_ns for r, s in pairwise(group)):
                group.sort(key=lambda r: (r.ts_ns, r.seq))
            first = group[0]
            if self.config.line_format == "json":
                lines, cut = zip(*map(self._json_line, group), strict=True)
                self._add(out, first.container, first.stream, [r.ts_ns for r in group],
                          list(lines), [r.truncated or c for r, c in zip(group, cut, strict=True)])
            else:
                self.add_columns(
                    out,
                    first.container,
                    first.stream,
                    [r.ts_ns for r in group],
                    [r.message for r in group],
                    [r.truncated for r in group] if any(r.truncated for r in group) else None,
                )
        return out

    def add_columns(
        self,
        out: Streams,
        container: ContainerInfo,
        stream: str,
        ts_ns: list[int],
        messages: list[str],
        truncated: list[bool] | None = None,
    ) -> None:
        """Add one container stream's lines (in timestamp order) as one Loki stream.

        ``truncated`` flags lines the capture already cut (None: none was).
        """
        lines, cut = self._cut(messages)
        if cut is not None:
            truncated = [a or b for a, b in zip(truncated or cut, cut, strict=True)]
        self._add(out, container, stream, ts_ns, lines, truncated)

    def _add(self, out: Streams, container: ContainerInfo, stream: str, ts_ns: list[int],
             lines: list[str], truncated: list[bool] | None) -> None:
        resolved = self.resolve(container, stream)
        if resolved is None:
            SINK_RECORDS.labels(self.name, "relabel_dropped").inc(len(lines))
            return
        if truncated is not None and not any(truncated):
            truncated = None
        out.add(resolved.labels, ts_ns, lines, self._metas(resolved.meta, truncated, len(lines)),
                resolved.text)

    def resolve(self, container: ContainerInfo, stream: str) -> _Resolved | None:
        """The labels and metadata of one container stream (None: a rule dropped it);
        decided once (cached), the cardinality guard consulted then."""
        key = (container.id, container.name, stream)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        resolved = self._decide(container, stream)
        if len(self._resolved) >= self._CACHE_LIMIT:
            self._resolved.clear()
        self._resolved[key] = resolved
        return resolved

    def _decide(self, container: ContainerInfo, stream: str) -> _Resolved | None:
        labels: dict[str, str] = {}
        for name in self.config.labels:
            value = self._value(container, stream, name)
            if value:
                labels[name] = value
        labels.update(self.config.static_labels)
        meta_labels = None
        if self._label_rules:
            meta_labels = docker_meta(container, stream, self.host or container.host)
            relabelled = self._label_rules.apply(meta_labels | labels)
            if relabelled is None:
                return None
            labels = self._loki_names(visible(relabelled), container)
        labels = {k: v[:LOKI_MAX_LABEL_VALUE] for k, v in labels.items()}
        labels = self._guard.admit(labels)
        if not labels:
            labels = {"stream": stream}
            self._report_once("loki_stream_without_labels", container,
                              sent={"stream": stream},
                              why="the relabel rules (or the cardinality guard) left no label")
        meta: dict[str, str] = {}
        for name in self._base_meta:
            value = self._value(container, stream, name)
            if value:
                meta[name] = value
        if self._meta_rules:
            if meta_labels is None:
                meta_labels = docker_meta(container, stream, self.host or container.host)
            relabelled = self._meta_rules.apply(meta_labels | meta)
            meta = visible(relabelled) if relabelled is not None else {}
        return _Resolved(labels, label_text(labels), tuple(meta.items()))

    def _loki_names(self, labels: dict[str, str], container: ContainerInfo) -> dict[str, str]:
        """What rules made, as Loki takes it: names Loki cannot parse sanitized (it would
        refuse the whole push), at most its 15 labels (it would refuse the stream); each
        reported once."""
        out: dict[str, str] = {}
        for name, value in labels.items():
            clean = name if LABEL_NAME.match(name) else sanitize_label_name(name)
            if clean != name:
                self._report_once("loki_label_name_sanitized", container, label=name,
                                  sent_as=clean)
            out.setdefault(clean, value)
        if len(out) > LOKI_MAX_LABELS:
            kept = sorted(out)[:LOKI_MAX_LABELS]
            self._report_once("loki_too_many_labels", container, labels=sorted(out),
                              sent=kept, limit=LOKI_MAX_LABELS)
            out = {k: out[k] for k in kept}
        return out

    def _report_once(self, event: str, container: ContainerInfo, **fields: Any) -> None:
        if event not in self._reported:
            self._reported.add(event)
            _log.error(event, sink=self.name, container_name=container.name,
                       hint="check the sink's relabel_configs", **fields)

    def _metas(self, base: Meta, truncated: list[bool] | None, n: int) -> list[Meta]:
        if not self.metadata_enabled:
            return [NO_META] * n
        if truncated is None or not self._mark_truncated:
            return [base] * n
        cut: Meta = (*base, ("truncated", "true"))
        return [cut if t else base for t in truncated]

    def _value(self, container: ContainerInfo, stream: str, name: str) -> str | None:
        if name == "stream":
            return stream
        if name == "host":
            return self.host or container.host
        if name == "container_name":
            return str(container.name)
        if name == "container_id":
            return str(container.id)
        if name == "image":
            return str(container.image)
        value = getattr(container, name, None)  # compose_*, swarm_*
        return None if value is None else str(value)

    def _cut(self, messages: list[str]) -> tuple[list[str], list[bool] | None]:
        """Lines cut to ``max_line_bytes`` (bytes of UTF-8), and which were (None: none)."""
        lines, cut = cut_lines(messages, self.config.max_line_bytes)
        if cut is not None:
            LOKI_LINES_TRUNCATED.inc(sum(cut))
        return lines, cut

    def _json_line(self, record: LogRecord) -> tuple[str, bool]:
        """The full record as JSON, cut to ``max_line_bytes`` while staying valid JSON."""
        limit = self.config.max_line_bytes
        doc = record.to_dict()
        line = json_text(doc)
        if not limit or utf8_len(line) <= limit:
            return line, False
        LOKI_LINES_TRUNCATED.inc()
        doc["truncated"] = True
        message = str(doc["message"]).encode("utf-8", "replace")
        doc["message"] = ""
        budget = limit - utf8_len(json_text(doc))

        def fits(n: int) -> bool:  # the escaped prefix (without its quotes) fits the budget
            text = message[:n].decode("utf-8", "ignore")
            return utf8_len(json.dumps(text, ensure_ascii=False)) - 2 <= budget

        low, high = 0, len(message)  # escaping is not linear: search the longest prefix
        while low < high:
            mid = (low + high + 1) // 2
            if fits(mid):
                low = mid
            else:
                high = mid - 1
        doc["message"] = message[:low].decode("utf-8", "ignore")
        return json_text(doc), True


def json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "replace"))
