"""Fault injection for tests only: makes the daemon misbehave on purpose.

Set ``LOG_CAPTURER_TEST_FAULT=leak_fd_per_window`` in the daemon's environment and
every log window leaks one file descriptor (``/dev/null`` opened and never closed);
``leak_memory_per_window`` keeps 256 KiB (written, so resident) per window; both, comma
separated, install both. The smoke test's own test uses them to show that a leak is
detected. Nothing in the configuration file can turn them on, and the package itself
knows nothing of them.

A daemon with faults is started as ``python -m log_capturer_testkit.faults run -c ...``
(:class:`~log_capturer_testkit.daemon.Daemon` does it when the variable is set): this
module reads the switch once (:func:`install`), wraps
:meth:`ContainerMonitor._window` before any monitor exists, then runs
:func:`log_capturer.cli.main`. An unknown fault ends it with exit code 2 before the
daemon starts.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping

import structlog

from log_capturer import cli

from .env import FAULT_ENV as ENV

_log = structlog.get_logger(__name__)
_leaked: list[int] = []
_kept: list[bytes] = []
LEAK_BYTES = 256 * 1024


def _wrap_window(name: str, fault: Callable[[], None]) -> None:
    """Run ``fault`` before every window of every monitor (logged at the first, when the
    daemon's logging is configured)."""
    from log_capturer.monitor.container_monitor import ContainerMonitor

    window = ContainerMonitor._window
    announced: list[bool] = []

    @functools.wraps(window)
    def faulty_window(self: ContainerMonitor, follow: bool) -> bool:
        if not announced:
            announced.append(True)
            _log.warning("test_fault_installed", fault=name)
        fault()
        return window(self, follow)

    setattr(ContainerMonitor, "_window", faulty_window)  # noqa: B010 - a method, on purpose


def _leak_fd() -> None:
    _leaked.append(os.open(os.devnull, os.O_RDONLY))


def _leak_memory() -> None:
    _kept.append(bytes(range(256)) * (LEAK_BYTES // 256))  # every page written


FAULTS: dict[str, Callable[[], None]] = {
    "leak_fd_per_window": _leak_fd,
    "leak_memory_per_window": _leak_memory,
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
        _wrap_window(name, FAULTS[name])
    return value


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """``log-capturer`` with the faults ``environ`` names installed first."""
    try:
        install(environ)
    except ValueError as exc:
        print(f"log-capturer: {exc}", file=sys.stderr)
        return cli.EXIT_CONFIG
    return cli.main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
