"""A captured log line with everything a sink needs, and its JSON form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..discovery.container import ContainerInfo


@dataclass(slots=True)
class LogRecord:
    """One line of one container stream; ``(ts_ns, seq)`` is its position in the stream."""

    container: ContainerInfo
    stream: str
    ts_ns: int
    seq: int
    ts: str
    message: str
    truncated: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.container.id, self.stream)

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
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class ControlItem:
    """A non-record item that must be applied in order with the records around it."""

    kind: str  # "start_marks" | "prune"
    container_id: str
    payload: Any = None
