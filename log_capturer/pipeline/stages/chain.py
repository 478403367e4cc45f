"""Builds the configured stages into one :class:`StageChain` for the dispatcher."""

from __future__ import annotations

from typing import Protocol

from ...buffers import BufferBudget
from ...discovery.container import ContainerInfo
from ..record import LogRecord
from . import StageChain
from .config import StagesConfig
from .multiline import Multiline
from .parse_json import ParseJson
from .redact import Redact


class Transform(Protocol):
    """A stage that changes records in place and never holds one back."""

    def apply(self, records: list[LogRecord]) -> None: ...


class Stages:
    """Multiline (the only stage that holds records) first, then the transforms in order.

    Everything the multiline stage releases, whether from :meth:`process`,
    :meth:`poll` or :meth:`flush`, goes through every transform, so no sink ever
    sees a record that skipped redaction.
    """

    def __init__(self, holder: StageChain, transforms: list[Transform]) -> None:
        self._holder = holder
        self._transforms = transforms

    def applies_to(self, container: ContainerInfo) -> bool:
        return bool(self._transforms) or self._holder.applies_to(container)

    def process(self, records: list[LogRecord], now: float) -> list[LogRecord]:
        return self._transform(self._holder.process(records, now))

    def poll(self, now: float) -> list[LogRecord]:
        return self._transform(self._holder.poll(now))

    def next_deadline(self) -> float | None:
        return self._holder.next_deadline()

    def flush(self, container_id: str | None = None) -> list[LogRecord]:
        return self._transform(self._holder.flush(container_id))

    def _transform(self, records: list[LogRecord]) -> list[LogRecord]:
        if records:
            for transform in self._transforms:
                transform.apply(records)
        return records


def build_stages(config: StagesConfig, buffers: BufferBudget | None = None) -> StageChain:
    """The enabled stages in the order multiline -> parse_json -> redact. The multiline
    stage is always there: containers labelled io.log_capturer.multiline.start use it
    also when it is off (it then passes every other container by, as batches)."""
    transforms: list[Transform] = []
    if config.parse_json.enabled:
        transforms.append(ParseJson(config.parse_json))
    if config.redact.enabled:
        transforms.append(Redact(config.redact))
    return Stages(Multiline(config.multiline, buffers), transforms)
