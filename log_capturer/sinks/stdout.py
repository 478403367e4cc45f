"""The stdout sink: records as JSON lines, or a plain console format, on standard output."""

from __future__ import annotations

import sys
from typing import BinaryIO, Literal

from pydantic import Field

from ..config.types import Section
from ..pipeline.batch import Batch
from .base import Sink, SinkError, observe_delivered


class StdoutSinkConfig(Section):
    enabled: bool = Field(False, description="Print records on standard output.")
    format: Literal["json", "console"] = Field(
        "json", description="json: the record format; console: 'ts name stream| message'."
    )


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, config: StdoutSinkConfig, out: BinaryIO | None = None) -> None:
        self.config = config
        self._out = out or sys.stdout.buffer

    def write(self, batches: list[Batch]) -> None:
        if self.config.format == "json":
            data = b"".join([batch.jsonl() for batch in batches])
        else:
            data = "".join(
                f"{ts} {batch.container.name} {stream}| {text}\n"
                for batch in batches
                for ts, stream, text in zip(
                    batch.ts_texts(), batch.streams, batch.texts(), strict=True
                )
            ).encode("utf-8", "replace")
        try:
            self._out.write(data)
            self._out.flush()
        except (OSError, ValueError) as exc:  # ValueError: stdout closed
            raise SinkError(f"stdout sink: {exc}") from exc
        observe_delivered(self.name, batches)
