"""Records to Loki pushes, in three steps the rest of the sink relies on:

1. records (or the columns of a batch) -> :class:`Streams`: per stream its labels, and
   per entry its timestamp, line and structured metadata, in columns, stream after
   stream, each stream in timestamp order (:class:`Encoder`, here);
2. :class:`Streams` -> :class:`Push` es of about ``batch_bytes`` of entries each
   (:func:`split_pushes`, in :mod:`.push`), as Promtail batches;
3. :class:`Push` -> the request body (:mod:`.push`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import structlog

from ...discovery.container import ContainerInfo
from ...metrics.registry import LOKI_LINES_TRUNCATED, SINK_RECORDS
from ...pipeline.batch import Batch
from ...pipeline.record import LogRecord
from ..network import columns
from ..network.columns import (
    ENTRY_OVERHEAD,
    NO_META,
    Meta,
    cut_utf8,
    gather_utf8,
)
from ..network.loki_format import (
    LABEL_NAME,
    LOKI_MAX_LABEL_VALUE,
    LOKI_MAX_LABELS,
    label_text,
    sanitize_label_name,
)
from ..network.relabel import CardinalityGuard, Relabeler, StreamDecisions, docker_meta, visible
from .config import LokiSinkConfig
from .push import Push, Streams, split_pushes

_log = structlog.get_logger(__name__)
__all__ = ["ENTRY_OVERHEAD", "NO_META", "Encoder", "Meta", "Push", "Streams", "split_pushes"]


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
        self.resolve = StreamDecisions(self._decide).get
        """The decisions for one container stream (None: a rule dropped it), made once."""
        self._reported: set[str] = set()

    def build(self, batches: Sequence[Batch]) -> list[Push]:
        """The pushes of one delivery: every batch's lines, a Loki stream per container
        stream, in pushes of about ``batch_bytes``."""
        return split_pushes(self.entries(batches), self.config.batch_bytes, self.config.encoding)

    def entries(self, batches: Sequence[Batch], out: columns.Streams[Any] | None = None
                ) -> Streams:
        """Every batch's lines, a Loki stream per container stream, appended to ``out`` (a
        new :class:`Streams` when None: only this encoder's are passed back)."""
        if out is not None and not isinstance(out, Streams):
            raise TypeError(f"not the Loki sink's entries: {type(out).__name__}")
        if self.config.line_format == "json":
            return self.streams([r for batch in batches for r in batch.records()], out)
        return self.columns(batches, out)

    def payload(self, streams: columns.Streams[Any], positions: Sequence[int]) -> Push:
        """The push of the entries at ``positions`` of ``streams`` (this encoder's)."""
        assert isinstance(streams, Streams)
        return Push(streams, positions, self.config.encoding)

    def columns(self, batches: Sequence[Batch], out: Streams | None = None) -> Streams:
        """Batches (line format ``message``) as :class:`Streams`, without an object per line:
        each container stream's timestamps, lines (UTF-8, as captured) and cut flags
        gathered in columns."""
        out = Streams() if out is None else out
        for part in gather_utf8(batches):
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
                          [utf8(line) for line in lines],
                          [r.truncated or c for r, c in zip(group, cut, strict=True)])
            else:
                self.add_columns(
                    out,
                    first.container,
                    first.stream,
                    [r.ts_ns for r in group],
                    [utf8(r.message) for r in group],
                    [r.truncated for r in group] if any(r.truncated for r in group) else None,
                )
        return out

    def add_columns(
        self,
        out: Streams,
        container: ContainerInfo,
        stream: str,
        ts_ns: list[int],
        messages: list[bytes],
        truncated: list[bool] | None = None,
    ) -> None:
        """Add one container stream's lines (UTF-8, in timestamp order) as one Loki stream.

        ``truncated`` flags lines the capture already cut (None: none was).
        """
        lines, cut = self._cut(messages)
        if cut is not None:
            truncated = [a or b for a, b in zip(truncated or cut, cut, strict=True)]
        self._add(out, container, stream, ts_ns, lines, truncated)

    def _add(self, out: Streams, container: ContainerInfo, stream: str, ts_ns: list[int],
             lines: list[bytes], truncated: list[bool] | None) -> None:
        resolved = self.resolve(container, stream)
        if resolved is None:
            SINK_RECORDS.labels(self.name, "relabel_dropped").inc(len(lines))
            return
        if truncated is not None and not any(truncated):
            truncated = None
        out.add(resolved.labels, ts_ns, lines, self._metas(resolved.meta, truncated, len(lines)),
                resolved.text)

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

    def _cut(self, messages: list[bytes]) -> tuple[list[bytes], list[bool] | None]:
        """Lines cut to ``max_line_bytes``, and which were (None: none)."""
        lines, cut = cut_utf8(messages, self.config.max_line_bytes)
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
    return len(utf8(text))


def utf8(text: str) -> bytes:
    """``text`` as Loki takes it: UTF-8, a lone surrogate (no character) replaced."""
    return text.encode("utf-8", "replace")
