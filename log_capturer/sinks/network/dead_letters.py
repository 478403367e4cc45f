"""The dead-letter file: entries a server refused for good, one JSON object a line, each
with the server's reason; and the one log line and counts of a settled refusal."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from ...metrics.registry import DEAD_LETTER_RECORDS, SINK_BATCHES, SINK_RECORDS
from ...timestamps import format_rfc3339_ns
from ..base import SinkError
from .bisection import Bisection
from .outcomes import Payload
from .text import json_bytes, short

_log = structlog.get_logger(__name__)


class DeadLetterError(SinkError):
    """Refused entries could not be written to the dead-letter file."""


class DeadLetterFile:
    """Appends refused entries, one JSON object a line, fsynced before returning."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).absolute()
        self._lock = threading.Lock()

    def write(self, docs: Sequence[dict[str, Any]]) -> None:
        data = b"".join(json_bytes(doc) + b"\n" for doc in docs)
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            raise DeadLetterError(f"cannot write dead letters to {self.path}: {exc}") from exc

    def settled(self, sink: str, plan: Bisection[Any]) -> None:
        """Write the dead letters of one refused payload (``plan`` so far); count; log one
        line. Raises :class:`DeadLetterError` on a disk error."""
        if plan.stored:
            SINK_RECORDS.labels(sink, "sent").inc(plan.stored)
        if not plan.dead:
            return
        first = plan.first
        now = format_rfc3339_ns(time.time_ns())
        docs: list[dict[str, Any]] = []
        unresolved = 0
        for item in plan.dead:
            head: dict[str, Any] = {
                "rejected_at": now,
                "sink": sink,
                "status": first.status,
                "error": item.reason,
            }
            if item.unresolved:
                head["unresolved"] = True
                unresolved += len(item.positions)
            payload: Payload = item.payload
            docs.extend(head | doc for doc in payload.dead_letters(item.positions))
        self.write(docs)
        SINK_BATCHES.labels(sink, "dead_lettered").inc()
        SINK_RECORDS.labels(sink, "dead_lettered").inc(len(docs))
        DEAD_LETTER_RECORDS.labels(sink).inc(len(docs))
        _log.error(
            "sink_entries_dead_lettered",
            sink=sink,
            status=first.status,
            records=len(docs),
            unresolved=unresolved,
            batch_records=len(plan.payload),
            requests=plan.used,
            max_requests=plan.limit,
            error=short(first.message),
            path=str(self.path),
        )
