"""Fault injection for tests only: makes the daemon misbehave on purpose.

Set ``LOG_CAPTURER_TEST_FAULT=leak_fd_per_window`` in the daemon's environment and
every log window leaks one file descriptor (``/dev/null`` opened and never closed).
The smoke test's own test uses it to show that a leak is detected. Nothing in the
configuration file can turn it on.
"""

from __future__ import annotations

import os

FAULT = os.environ.get("LOG_CAPTURER_TEST_FAULT", "")
_leaked: list[int] = []


def on_window() -> None:
    if FAULT == "leak_fd_per_window":
        _leaked.append(os.open(os.devnull, os.O_RDONLY))
