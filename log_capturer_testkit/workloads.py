"""What benchmark containers write: numbered lines, slow trickles, a big backlog."""

from __future__ import annotations

import os
import time
from typing import Any

import docker

from .bench import log
from .env import BENCH_LABEL, TEST_IMAGE

PAD = "some payload to look like a real log line, with a few more words in it"
BACKLOG_LABEL = "log-capturer-bench-backlog"  # value: the generator spec, for reuse


def numbered_script(
    duration_s: float, rate: float = 0, pad: str = PAD, end_marker: bool = True, ticks: int = 10
) -> str:
    """awk writing ``<n> <pad>`` lines 1, 2, 3 ... for ``duration_s`` seconds, then
    ``end <n>``. ``rate`` 0 = as fast as it can (buffered writes); otherwise ``rate``
    lines/s in ``ticks`` bursts a second (flushed), catching up at each second boundary."""
    end = 'printf "end %d\\n", i; ' if end_marker else ""
    if rate <= 0:
        body = (
            f"end = systime() + {duration_s:g}; i = 0; "
            f'while (1) {{ for (k = 0; k < 2000; k++) {{ i++; printf "%d {pad}\\n", i }} '
            f"if (systime() >= end) break }} {end}"
        )
    else:
        body = (
            f"start = systime(); end = start + {duration_s:g}; i = 0; sec = start; tick = 0; "
            f"while (1) {{ now = systime(); if (now >= end) break; "
            f"if (now != sec) {{ sec = now; tick = 0 }} if (tick < {ticks}) tick++; "
            f"target = {rate:g} * (now - start) + int({rate:g} * tick / {ticks}); "
            f'while (i < target) {{ i++; printf "%d {pad}\\n", i }} fflush(); '
            f'system("usleep {int(1e6 / ticks)}") }} {end}'
        )
    return f"awk 'BEGIN {{ {body} }}'"


def counted_script(lines: int, pad: str = PAD) -> str:
    """awk writing ``<n> <pad>`` lines 1 .. ``lines`` as fast as it can (buffered), then
    ``end <lines>``: a flood of a known size."""
    return (
        f"awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) printf \"%d {pad}\\n\", i; "
        f"printf \"end %d\\n\", {lines} }}'"
    )


def slow_script(duration_s: float, interval_s: float, pad: str = PAD) -> str:
    """sh writing ``<n> <pad>`` every ``interval_s`` seconds for ``duration_s``, then
    ``end <n>`` (a mostly idle container; no fork but sleep between lines)."""
    return (
        f"i=0; end=$(( $(date +%s) + {int(duration_s)} )); "
        f'while [ "$(date +%s)" -lt "$end" ]; do i=$((i+1)); echo "$i {pad}"; '
        f'sleep {interval_s:g}; done; echo "end $i"'
    )


def written_lines(client: docker.DockerClient, container_id: str) -> int:
    """N of the ``end N`` marker a numbered or slow script writes last, -1 if missing."""
    tail = client.api.logs(container_id, stdout=True, stderr=False, tail=1).decode()
    parts = tail.strip().split()
    if len(parts) == 2 and parts[0] == "end" and parts[1].isdigit():
        return int(parts[1])
    return -1


def backlog_script(lines: int, then: str = "exec sleep 2147483647") -> str:
    """N numbered stdout lines (≈150 B each in the json-file log), every 10th also a line on
    stderr, then ``then`` (by default: stay running, so the container can also serve as
    the big log of the reopen benchmark)."""
    return (
        f"awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) {{ "
        f'printf "line %d of the benchmark, some payload to look like a real log\\n", i; '
        f'if (i % 10 == 0) printf "err %d\\n", i > "/dev/stderr" }} }}\'; '
        f"echo backlog-done >&2; {then}"
    )


def backlog_expected(lines: int) -> int:
    """Lines the backlog container writes: stdout + stderr + the ``backlog-done`` marker."""
    return lines + lines // 10 + 1


def ensure_backlog(
    client: docker.DockerClient, lines: int, reuse: bool, run_id: str
) -> tuple[Any, bool]:
    """The running backlog container of ``lines`` lines: a kept one (label
    ``log-capturer-bench-backlog=v1-<lines>``) when ``reuse``, else a new one labelled
    ``log-capturer-bench=<run_id>``. Returns (container, reused)."""
    spec = f"v1-{lines}"
    if reuse:
        for c in client.containers.list(filters={"label": f"{BACKLOG_LABEL}={spec}"}):
            if c.labels.get(BENCH_LABEL):
                log(f"reusing backlog container {c.name} ({c.labels[BENCH_LABEL]})")
                return c, True
    started = time.monotonic()
    container = client.containers.run(
        TEST_IMAGE,
        ["sh", "-c", backlog_script(lines)],
        detach=True,
        name=f"bench-backlog-{lines}-{run_id}",
        labels={BENCH_LABEL: run_id, BACKLOG_LABEL: spec},
        network_mode="none",  # needs none (and an engine may have no default bridge)
    )
    log(f"writing a {lines}-line backlog in {container.name} ...")

    def done() -> bool:
        # The tail counts both streams, and awk flushes its stdout after its stderr:
        # look back far enough for the marker.
        tail = container.logs(stdout=False, stderr=True, tail=20000)
        return b"backlog-done" in tail

    while not done():
        container.reload()
        if container.status != "running":
            raise RuntimeError(f"backlog container exited early: {container.status}")
        time.sleep(1)
    log(f"backlog written in {time.monotonic() - started:.1f}s")
    return container, False


def log_file_size(container: Any) -> int:
    """Bytes of the container's json-file log (-1 if not readable from here)."""
    container.reload()
    path = container.attrs.get("LogPath") or ""
    try:
        return os.path.getsize(path)
    except OSError:
        return -1
