"""One captured line as an object, for the stages that work line by line.

The record path carries columnar batches (batch.py); a batch becomes records only
where a configured stage needs them (multiline, parse_json, redact).
"""

from __future__ import annotations

from dataclasses import dataclass
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
            "host": c.host,
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
        if c.swarm_service is not None:
            out["swarm_service"] = c.swarm_service
        if c.swarm_stack is not None:
            out["swarm_stack"] = c.swarm_stack
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
