"""What a test needs from the machine (a peer binary, a mount, a tool): one rule for all.

Where a part is missing a test is skipped with the reason (``pytest -rs``, in the
project's pytest options, prints it), except under ``CI=true``: CI has every part, so
there a missing one fails the test with the reason instead of letting it pass unseen.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

CI_VALUES = ("true", "1", "yes")


def in_ci() -> bool:
    """``CI`` is set to true (as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in CI_VALUES


def missing(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: every part must be there)", pytrace=False)
    pytest.skip(reason)


def require(condition: object, reason: str) -> None:
    """Go on if ``condition`` holds; otherwise :func:`missing`."""
    if not condition:
        missing(reason)
