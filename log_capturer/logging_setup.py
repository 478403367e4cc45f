"""Structured logging: one JSON event per line on stderr (or a console format for people)."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from pydantic import Field

from .config.types import Section

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# structlog's method names -> their levels (``exception`` logs at error).
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_threshold = [logging.INFO]
"""The least severe level logged; :func:`set_level` changes it on a reload. Module loggers
are bound once (structlog caches them on first use), so the level is checked by a
processor reading this, not baked into the bound logger class."""


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level logged (a reload applies it)."
    )
    format: Literal["json", "console"] = Field(
        "json", description="json: one object per line. A change needs a restart."
    )


def _below_level(
    logger: object, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    if _METHOD_LEVELS.get(method_name, logging.INFO) < _threshold[0]:
        raise structlog.DropEvent
    return event_dict


def set_level(level: str) -> None:
    """Log from ``level`` on (a reload changes ``logging.level`` with it)."""
    _threshold[0] = _LEVELS[level]
    logging.getLogger().setLevel(max(_threshold[0], logging.INFO))


def configure_logging(config: LoggingConfig) -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if config.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[_below_level, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (urllib3, docker) log through the standard library: same format, same stream.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    logging.getLogger().handlers[:] = [handler]
    set_level(config.level)
