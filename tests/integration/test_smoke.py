"""scripts/smoke_test.sh itself: a short soak passes, a leaking daemon is caught, and a
daemon that dies mid-soak is a failure with a summary.

The three runs go at once (each has its own daemon, label and containers) to keep the
suite short: the passing 3-minute soak; a daemon with the test-only fault switch
``LOG_CAPTURER_TEST_FAULT=leak_fd_per_window,leak_memory_per_window`` that the soak must
fail on FD and on RSS growth; and a daemon this test kills (SIGKILL) after a few
checkpoints, which the soak must report as a crash, audit, chart and clean up after.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import docker
import pytest

from log_capturer_testkit import REPO, SMOKE_LABEL

CHECKPOINT = re.compile(
    r"^\[(\d+)/(\d+)\] [\d.]+m: threads=\d+ \([+-]\d+, [+-][\d.]+/min\) "
    r"fds=\d+ \([+-]\d+, [+-][\d.]+/min\) reuse=[\d.]+ lines=\d+ monitors=\d+ "
    r"rss=\d+MB \([+-][\d.]+/min\)",
    re.M,
)
HEADER = re.compile(r"^smoke (\w+): .* daemon pid (\d+)$", re.M)


def start(out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(REPO / "scripts" / "smoke_test.sh"), "--output-dir", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def kill_after_checkpoints(soak: subprocess.Popen[str], checkpoints: int) -> tuple[str, str]:
    """Read the soak's output until its ``checkpoints``-th checkpoint, SIGKILL its daemon
    then; the run id and what was read."""
    assert soak.stdout is not None
    seen: list[str] = []
    run_id, pid = "", 0
    for line in soak.stdout:
        seen.append(line)
        header = HEADER.match(line)
        if header:
            run_id, pid = header.group(1), int(header.group(2))
        if CHECKPOINT.match(line) and line.startswith(f"[{checkpoints}/"):
            break
    assert pid, "".join(seen)[-3000:]
    os.kill(pid, signal.SIGKILL)
    return run_id, "".join(seen)


@pytest.mark.timeout(600)
def test_short_soak_passes_a_leaking_daemon_fails_it_and_a_dead_one_too(tmp_path: Path) -> None:
    good_dir, leak_dir, dead_dir = tmp_path / "good", tmp_path / "leak", tmp_path / "dead"
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
        "LOG_CAPTURER_TEST_FAULT=leak_fd_per_window,leak_memory_per_window",
    )
    dead = start(
        dead_dir, "--duration", "2m", "--interval", "10s", "--containers", "3",
        "--churn-per-min", "0",
    )
    run_id, dead_head = kill_after_checkpoints(dead, 3)
    dead_rest, _ = dead.communicate(timeout=300)
    dead_out = dead_head + dead_rest
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
    assert "rss growth" in failed, leak_out[-3000:]
    leaked = json.loads((leak_dir / "summary.json").read_text())
    assert leaked["fd_slope_per_min"] > 100  # one FD per window, 4 windows a second
    # 256 KiB a window, 4 windows a second: far past the bound over the second half
    assert leaked["rss_growth_mb_second_half"] > 5 * leaked["rss_growth_max_mb"]
    assert leaked["lost"] == 0 and leaked["duplicated"] == 0  # only the leaks are wrong
    assert (leak_dir / "chart.png").exists()

    # The dead daemon: a failure that says so, what it delivered audited, a summary and
    # a chart, and none of its containers left behind.
    assert dead.returncode == 1, dead_out[-4000:]
    failed = dead_out.splitlines()[-1]
    assert failed.startswith("SMOKE TEST FAILED"), dead_out[-3000:]
    assert "daemon exited with -9 mid-soak" in failed, dead_out[-3000:]
    assert "Traceback" not in dead_out, dead_out[-3000:]
    died = json.loads((dead_dir / "summary.json").read_text())
    assert died["crashed"] and died["daemon_exit_code"] == -signal.SIGKILL
    assert 3 <= len(died["checkpoints"]) < 12  # it stopped at the checkpoint after the kill
    assert died["containers_audited"] == 3
    assert died["lines_delivered"] > 0 and died["duplicated"] == 0
    assert died["out_of_order_streams"] == 0 and died["unexpected"] == 0
    assert died["lost"] > 0  # they wrote on after the kill: named, not hidden
    assert (dead_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    left = docker.from_env().containers.list(all=True, filters={"label": f"{SMOKE_LABEL}={run_id}"})
    assert left == []
