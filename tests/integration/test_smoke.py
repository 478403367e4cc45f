"""scripts/smoke_test.sh itself: a short soak passes, and a leaking daemon is caught.

Both runs go at once (each has its own daemon, label and containers) to keep the
suite short: the passing 3-minute soak, and a daemon with the test-only fault switch
``LOG_CAPTURER_TEST_FAULT=leak_fd_per_window`` that the soak must fail on FD growth.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from log_capturer_testkit import REPO

CHECKPOINT = re.compile(
    r"^\[(\d+)/(\d+)\] [\d.]+m: threads=\d+ \([+-]\d+, [+-][\d.]+/min\) "
    r"fds=\d+ \([+-]\d+, [+-][\d.]+/min\) reuse=[\d.]+ lines=\d+ monitors=\d+ "
    r"rss=\d+MB \([+-][\d.]+/min\)",
    re.M,
)


def start(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(REPO / "scripts" / "smoke_test.sh"), "--output-dir", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


@pytest.mark.timeout(600)
def test_short_soak_passes_and_a_leaking_daemon_fails_it(tmp_path: Path) -> None:
    good_dir, leak_dir = tmp_path / "good", tmp_path / "leak"
    good = start(good_dir, "--duration", "3m", "--interval", "20s", "--containers", "10")
    leak = start(
        leak_dir,
        "--duration",
        "100s",
        "--interval",
        "10s",
        "--containers",
        "4",
        "--churn-per-min",
        "0",
        "--stream-window",
        "1s",
        "--daemon-env",
        "LOG_CAPTURER_TEST_FAULT=leak_fd_per_window",
    )
    leak_out, _ = leak.communicate(timeout=400)
    good_out, _ = good.communicate(timeout=500)

    assert good.returncode == 0, good_out[-4000:]
    assert "SMOKE TEST PASSED" in good_out
    assert len(CHECKPOINT.findall(good_out)) == 9, good_out[-3000:]
    summary = json.loads((good_dir / "summary.json").read_text())
    assert summary["failures"] == []
    assert summary["lost"] == 0 and summary["duplicated"] == 0
    assert summary["lines_expected"] == summary["lines_delivered"] > 10 * 10 * 150
    assert summary["fd_slope_per_min"] < 0.5 and summary["thread_slope_per_min"] < 0.5
    assert summary["api_reuse_ratio"] >= 0.9 and summary["restarts"] == 0
    assert len(summary["checkpoints"]) == 9
    assert all(c["rss_mb"] > 10 for c in summary["checkpoints"])  # the daemon's, in MB
    assert 10 < summary["rss_mb_min"] <= summary["rss_mb_max"]
    assert (good_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert leak.returncode == 1, leak_out[-4000:]
    failed = leak_out.splitlines()[-1]
    assert failed.startswith("SMOKE TEST FAILED") and "fd growth" in failed, leak_out[-3000:]
    leaked = json.loads((leak_dir / "summary.json").read_text())
    assert leaked["fd_slope_per_min"] > 100  # one FD per window, 4 windows a second
    assert leaked["lost"] == 0 and leaked["duplicated"] == 0  # only the leak is wrong
    assert (leak_dir / "chart.png").exists()
