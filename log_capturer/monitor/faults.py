"""Fault injection for tests only: makes the daemon misbehave on purpose.

Set ``LOG_CAPTURER_TEST_FAULT=leak_fd_per_window`` in the daemon's environment and
every log window leaks one file descriptor (``/dev/null`` opened and never closed);
``leak_memory_per_window`` keeps 256 KiB (written, so resident) per window; both, comma
separated, install both. The smoke test's own test uses them to show that a leak is
detected. Nothing in the configuration file can turn them on.

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
_kept: list[bytes] = []
LEAK_BYTES = 256 * 1024


def _leak_fd_per_window() -> None:
    from .container_monitor import ContainerMonitor

    window = ContainerMonitor._window

    @functools.wraps(window)
    def leaky_window(self: ContainerMonitor, follow: bool) -> bool:
        _leaked.append(os.open(os.devnull, os.O_RDONLY))
        return window(self, follow)

    setattr(ContainerMonitor, "_window", leaky_window)  # noqa: B010 - a method, on purpose


def _leak_memory_per_window() -> None:
    from .container_monitor import ContainerMonitor

    window = ContainerMonitor._window

    @functools.wraps(window)
    def hoarding_window(self: ContainerMonitor, follow: bool) -> bool:
        _kept.append(bytes(range(256)) * (LEAK_BYTES // 256))  # every page written
        return window(self, follow)

    setattr(ContainerMonitor, "_window", hoarding_window)  # noqa: B010 - a method, on purpose


FAULTS: dict[str, Callable[[], None]] = {
    "leak_fd_per_window": _leak_fd_per_window,
    "leak_memory_per_window": _leak_memory_per_window,
}


def install(environ: Mapping[str, str] = os.environ) -> str | None:
    """Install the faults ``environ`` names (comma separated), if any; their names.
    ValueError if one is unknown (then none is installed)."""
    value = environ.get(ENV, "")
    if not value:
        return None
    names = [name.strip() for name in value.split(",")]
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise ValueError(f"unknown {ENV}={value!r} (known: {', '.join(sorted(FAULTS))})")
    for name in names:
        FAULTS[name]()
        _log.warning("test_fault_installed", fault=name)
    return value
