"""Multiline merge: continuation lines (stack traces) join the line that started them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

import structlog

from ...buffers import LINE_OVERHEAD, BufferBudget, Kind
from ...discovery.container import MULTILINE_START_LABEL, ContainerInfo
from ...metrics.registry import (
    MULTILINE_HELD,
    MULTILINE_LABEL_ERRORS,
    MULTILINE_LINES,
    MULTILINE_MERGED,
    MULTILINE_RELEASES,
)
from ..record import LogRecord
from .config import MultilineConfig

_MATCH_CACHE_LIMIT = 10_000
_STREAMS = ("stdout", "stderr", "tty")
_log = structlog.get_logger(__name__)


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class _Group:
    """Lines held for one (container, stream), oldest first."""

    first: LogRecord
    last: LogRecord
    parts: list[str]
    size: int
    lines: int
    truncated: bool
    deadline: float

    def add(self, record: LogRecord, size: int, deadline: float) -> None:
        self.parts.append(record.message)
        self.size += 1 + size  # the "\n" joining it
        self.lines += record.lines
        self.truncated = self.truncated or record.truncated
        self.last = record
        self.deadline = deadline

    def record(self) -> LogRecord:
        if len(self.parts) == 1:
            return self.first
        first = self.first
        return LogRecord(
            container=first.container,
            stream=first.stream,
            ts_ns=first.ts_ns,
            seq=first.seq,
            ts=first.ts,
            message="\n".join(self.parts),
            truncated=self.truncated,
            end_ts_ns=self.last.end_ts_ns,
            end_seq=self.last.end_seq,
            lines=self.lines,
            fields=first.fields,
        )


class Multiline:
    """Merges each stream's continuation lines into the record their start line began.

    Guarantees: per (container id, stream) the output is in input order, and a held
    group is released before any later record of that stream (other streams pass
    straight through). A merged record keeps its first line's ``ts``/``seq`` and ends
    at its last line (``end_ts_ns``/``end_seq``), so acknowledging it covers exactly
    the lines it holds, and a held group is never acknowledged: a crash re-reads it.
    No line is cut or dropped: ``max_bytes`` starts a new record instead, and
    ``truncated`` is set if any merged line was truncated at capture. A group is
    released by the next start line, by ``max_lines``/``max_bytes``, after
    ``flush_timeout`` without a new line (:meth:`poll`), and by :meth:`flush`.

    Which containers: with the stage enabled, those whose name matches
    ``match_containers`` (all when empty); enabled or not, a container labelled
    ``io.log_capturer.multiline.start=<regex>``, with that start pattern. A label that is
    not a valid regex is reported once per container (``multiline_label_invalid``,
    counted) and the container is treated as if it had none.
    """

    def __init__(self, config: MultilineConfig, buffers: BufferBudget | None = None) -> None:
        self._buffers = buffers  # counts what the groups hold (kind "multiline"), if given
        self._enabled = config.enabled
        self._start = re.compile(config.start_pattern)
        self._containers = tuple(config.match_containers)
        self._timeout = config.flush_timeout
        self._max_lines = config.max_lines
        self._max_bytes = config.max_bytes
        self._groups: dict[tuple[str, str], _Group] = {}
        # container id -> (name, its start pattern, or None when the stage passes it by)
        self._applies_to: dict[str, tuple[str, re.Pattern[str] | None]] = {}

    def applies_to(self, container: ContainerInfo) -> bool:
        """True if the container's records must come through :meth:`process` (it is merged,
        or a group of it is still held)."""
        if self._start_of(container) is not None:
            return True
        cid = container.id
        return any((cid, stream) in self._groups for stream in _STREAMS)

    def process(self, records: list[LogRecord], now: float) -> list[LogRecord]:
        out: list[LogRecord] = []
        deadline = now + self._timeout
        for record in records:
            key = record.key
            group = self._groups.get(key)
            start = self._start_of(record.container)
            if start is None:
                if group is not None:  # renamed out of match_containers: order first
                    out.append(self._release(key, "flush"))
                out.append(record)
                continue
            size = utf8_len(record.message)
            if group is not None:
                if start.search(record.message):
                    out.append(self._release(key, "start"))
                elif group.size + 1 + size > self._max_bytes:
                    out.append(self._release(key, "max_bytes"))
                else:
                    group.add(record, size, deadline)
                    self._count(1 + size + LINE_OVERHEAD)
                    if group.lines >= self._max_lines:
                        out.append(self._release(key, "max_lines"))
                    elif group.size >= self._max_bytes:
                        out.append(self._release(key, "max_bytes"))
                    continue
            # The line opens a group (a continuation with nothing open opens one too).
            if record.lines >= self._max_lines:
                MULTILINE_RELEASES.labels("max_lines").inc()
                out.append(record)
            elif size >= self._max_bytes:
                MULTILINE_RELEASES.labels("max_bytes").inc()
                out.append(record)
            else:
                self._groups[key] = _Group(
                    record,
                    record,
                    [record.message],
                    size,
                    record.lines,
                    record.truncated,
                    deadline,
                )
                self._count(size + LINE_OVERHEAD)
        MULTILINE_HELD.set(len(self._groups))
        return out

    def poll(self, now: float) -> list[LogRecord]:
        if not self._groups:
            return []
        due = [key for key, group in self._groups.items() if group.deadline <= now]
        return self._release_all(due, "timeout")

    def next_deadline(self) -> float | None:
        if not self._groups:
            return None
        return min(group.deadline for group in self._groups.values())

    def flush(self, container_id: str | None = None) -> list[LogRecord]:
        if container_id is None:
            keys = list(self._groups)
            self._applies_to.clear()
        else:
            keys = [key for key in self._groups if key[0] == container_id]
            self._applies_to.pop(container_id, None)
        return self._release_all(keys, "flush")

    def _release_all(self, keys: list[tuple[str, str]], reason: str) -> list[LogRecord]:
        out = [self._release(key, reason) for key in keys]
        MULTILINE_HELD.set(len(self._groups))
        return out

    def _release(self, key: tuple[str, str], reason: str) -> LogRecord:
        group = self._groups.pop(key)
        self._count(-group.size - LINE_OVERHEAD * len(group.parts))
        MULTILINE_RELEASES.labels(reason).inc()
        record = group.record()
        if record.lines > 1:
            MULTILINE_MERGED.inc()
            MULTILINE_LINES.inc(record.lines)
        return record

    def _count(self, size: int) -> None:
        if self._buffers is not None:
            self._buffers.add(Kind.MULTILINE, size)

    def _start_of(self, container: ContainerInfo) -> re.Pattern[str] | None:
        """The start pattern of the container's records, None when it is not merged."""
        known = self._applies_to.get(container.id)
        if known is not None and known[0] == container.name:
            return known[1]
        if len(self._applies_to) >= _MATCH_CACHE_LIMIT:
            self._applies_to.clear()
        start = self._label_pattern(container)
        if start is None and self._enabled and (
            not self._containers or any(fnmatchcase(container.name, p) for p in self._containers)
        ):
            start = self._start
        self._applies_to[container.id] = (container.name, start)
        return start

    def _label_pattern(self, container: ContainerInfo) -> re.Pattern[str] | None:
        value = container.labels.get(MULTILINE_START_LABEL)
        if not value:
            return None
        try:
            return re.compile(value)
        except re.error as exc:
            MULTILINE_LABEL_ERRORS.inc()
            _log.error(
                "multiline_label_invalid",
                container_id=container.short_id,
                container_name=container.name,
                label=MULTILINE_START_LABEL,
                error=f"invalid regular expression: {exc}",
                hint="the container's lines are not merged by this label; fix the label",
            )
            return None
