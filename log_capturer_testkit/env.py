"""Where things are: the repository, the test image, the run labels."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The checkout this kit belongs to (the kit is installed editable from it)."""

TEST_IMAGE = os.environ.get("TEST_IMAGE", "log-capturer-test/busybox:1")
"""The tiny image every test, soak and benchmark container runs (scripts/make_test_image.sh)."""

TEST_LABEL = "log-capturer-test"
SMOKE_LABEL = "log-capturer-smoke"
BENCH_LABEL = "log-capturer-bench"

FAULT_ENV = "LOG_CAPTURER_TEST_FAULT"
"""Names the test faults a daemon runs with (log_capturer_testkit/faults.py)."""
