"""Fault injection for tests only: makes the daemon misbehave on purpose.

Set ``LOG_CAPTURER_TEST_FAULT=leak_fd_per_window`` in the daemon's environment and
every log window leaks one file descriptor (``/dev/null`` opened and never closed).
The smoke test's own test uses it to show that a leak is detected. Nothing in the
configuration file can turn it on.

The switch is read once, when ``log-capturer run`` starts (:func:`install`). Unset,
nothing is installed and the monitor's per-window code holds no check for it; set,
the fault wraps :meth:`ContainerMonitor._window` before any monitor exists.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping

import structlog

ENV = "LOG_CAPTURER_TEST_FAULT"

_log = structlog.get_logger(__name__)
_leaked: list[int] = []


def _leak_fd_per_window() -> None:
    from .container_monitor import ContainerMonitor

    window = ContainerMonitor._window

    @functools.wraps(window)
    def leaky_window(self: ContainerMonitor, follow: bool) -> bool:
        _leaked.append(os.open(os.devnull, os.O_RDONLY))
        return window(self, follow)

    setattr(ContainerMonitor, "_window", leaky_window)  # noqa: B010 - a method, on purpose


FAULTS: dict[str, Callable[[], None]] = {"leak_fd_per_window": _leak_fd_per_window}


def install(environ: Mapping[str, str] = os.environ) -> str | None:
    """Install the fault ``environ`` names, if any; its name. ValueError if unknown."""
    name = environ.get(ENV, "")
    if not name:
        return None
    if name not in FAULTS:
        raise ValueError(f"unknown {ENV}={name!r} (known: {', '.join(sorted(FAULTS))})")
    FAULTS[name]()
    _log.warning("test_fault_installed", fault=name)
    return name
