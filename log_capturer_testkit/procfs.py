"""Process figures from /proc: CPU seconds, resident memory, the engine's pid."""

from __future__ import annotations

import math
import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        raw = fh.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """VmRSS of a process in MiB (NaN if /proc does not say)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


ENGINE_PIDFILE = "/var/run/docker.pid"  # written by the dockerd serving the default socket


def dockerd_pid() -> int:
    """The pid of the local engine: from its pidfile (other ``dockerd`` processes may
    run beside it, e.g. a test's TLS engine), else the first process named ``dockerd``."""
    try:
        with open(ENGINE_PIDFILE) as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/comm") as fh:
            if fh.read().strip() == "dockerd":
                return pid
    except (OSError, ValueError):
        pass
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() == "dockerd":
                    return int(entry)
        except OSError:
            continue
    raise RuntimeError("no dockerd process found")
