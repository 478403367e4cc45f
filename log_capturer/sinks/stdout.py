"""The stdout sink: records as JSON lines, or a plain console format, on standard output."""

from __future__ import annotations

import sys
from typing import Literal, TextIO

from pydantic import Field

from ..config.types import Section
from ..pipeline.record import LogRecord, records_jsonl
from .base import Sink, SinkError, observe_delivered


class StdoutSinkConfig(Section):
    enabled: bool = Field(False, description="Print records on standard output.")
    format: Literal["json", "console"] = Field(
        "json", description="json: the record format; console: 'ts name stream| message'."
    )


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, config: StdoutSinkConfig, out: TextIO | None = None) -> None:
        self.config = config
        self._out = out or sys.stdout

    def write(self, batch: list[LogRecord]) -> None:
        if self.config.format == "json":
            text = records_jsonl(batch)
        else:
            text = "".join(f"{r.ts} {r.container.name} {r.stream}| {r.message}\n" for r in batch)
        try:
            self._out.write(text)
            self._out.flush()
        except (OSError, ValueError) as exc:  # ValueError: stdout closed
            raise SinkError(f"stdout sink: {exc}") from exc
        observe_delivered(self.name, batch)
