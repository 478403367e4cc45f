"""Loki's entries in columns (:class:`Streams`), cut into pushes of about ``batch_bytes``
(:func:`split_pushes`, as Promtail batches), and the request body of a :class:`Push`:
protobuf + snappy (Loki's native encoding, as Promtail sends it; written by
:mod:`.wire`, by upb what it does not take) or JSON + gzip (:func:`protobuf_body`,
:func:`json_body`), read back from the spool. Lines are UTF-8 bytes throughout, as
captured.

A :class:`Push` is the :class:`~log_capturer.sinks.network.outcomes.Payload` of the Loki
sink: its parts are index lists into the same :class:`Streams`, so the delivery machinery
can cut and merge them, and it knows its entries to write them to the dead-letter file.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cramjam

from ..network import columns
from ..network.columns import (
    NO_META,
    Meta,
    dead_letter_docs,
    merge_positions,
    sample_timestamps,
    split_ranges,
    sub_positions,
)
from ..network.loki_format import label_text, parse_label_text
from ..network.text import json_bytes
from . import wire
from .logproto import PushRequest

Encoding = Literal["protobuf", "json"]
_NS = 1_000_000_000
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
class Streams(columns.Streams[bytes]):
    """:class:`~log_capturer.sinks.network.columns.Streams` of UTF-8 lines whose key is the
    labels in Loki's spelling (``{a="1"}``), as protobuf pushes send them."""

    def add(
        self,
        labels: dict[str, str],
        ts_ns: Sequence[int],
        lines: Sequence[bytes],
        meta: Sequence[Meta],
        text: str | None = None,
        extra: int = 0,
    ) -> None:
        columns.Streams.add(
            self, labels, ts_ns, lines, meta, label_text(labels) if text is None else text,
            extra,
        )


# -- step 3: bodies --------------------------------------------------------------------------


def protobuf_body(
    streams: Iterable[tuple[str, Sequence[int], Sequence[bytes], Sequence[Meta]]],
) -> bytes:
    """A snappy-compressed ``logproto.PushRequest`` of ``(labels text, ts, lines, meta)``."""
    groups = list(streams)
    try:
        request = wire.push_request(groups)
    except wire.NotEncodable:
        request = upb_request(groups)
    return bytes(cramjam.snappy.compress_raw(request))


def upb_request(
    streams: Iterable[tuple[str, Sequence[int], Sequence[bytes], Sequence[Meta]]],
) -> bytes:
    """The serialized ``logproto.PushRequest``, written by upb (message objects): what
    :func:`.wire.push_request` writes faster, and the writer of what it does not take."""
    request = PushRequest()
    add_stream = request.streams.add
    for text, stamps, lines, metas in streams:
        add = add_stream(labels=text).entries.add
        if any(metas):
            for ts_ns, line, meta in zip(stamps, lines, metas, strict=True):
                entry = add(line=line)
                stamp = entry.timestamp
                stamp.seconds = ts_ns // _NS
                stamp.nanos = ts_ns % _NS
                if meta:
                    pairs = entry.structuredMetadata
                    for name, value in meta:
                        pairs.add(name=name, value=value)
        else:
            for ts_ns, line in zip(stamps, lines, strict=True):
                stamp = add(line=line).timestamp
                stamp.seconds = ts_ns // _NS
                stamp.nanos = ts_ns % _NS
    data: bytes = request.SerializeToString()
    return data


def json_body(
    streams: Iterable[tuple[dict[str, str], Sequence[int], Sequence[bytes], Sequence[Meta]]],
) -> bytes:
    """A gzip-compressed JSON push of ``(labels, ts, lines, meta)``."""
    docs = []
    for labels, stamps, lines, metas in streams:
        values: list[list[Any]] = [
            [str(ts_ns), line.decode(), dict(meta)] if meta else [str(ts_ns), line.decode()]
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
            [e.line.encode() for e in entries],
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
                [str(v[1]).encode("utf-8", "replace") for v in values],
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
    :func:`~log_capturer.sinks.network.columns.split_ranges`)."""
    return [Push(streams, part, encoding) for part in split_ranges(streams, batch_bytes)]
