"""Capture speed as a ratio against ``docker logs`` reading the same container, same run.

Usage: .venv/bin/python benchmarks/capture_throughput.py [--lines 200000] [--repeat 3]

A container writes N numbered lines on stdout (and every 10th also on stderr) and
exits. Then, alternating, best of ``--repeat``:

* reference: ``docker logs --timestamps <id>`` to /dev/null (the Go CLI over the API);
* stream:    this project's reading path alone: one non-follow request through the
             pooled client, frames decoded, lines joined, deduplicated, records built
             and serialized to JSON (what the monitor and the file sink do per read);
* daemon:    the whole daemon (python -m log_capturer run), from start until the file
             sink holds every line: start-up, discovery, monitor, queue, dispatcher.

Ratios above 1 mean slower than ``docker logs``. No wall-clock thresholds: compare
ratios between commits on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import docker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from log_capturer.discovery.container import ContainerInfo  # noqa: E402
from log_capturer.docker.config import DockerConfig  # noqa: E402
from log_capturer.docker.engine import DockerEngine  # noqa: E402
from log_capturer.docker.stream import LogStream  # noqa: E402
from log_capturer.monitor.admit import admit_batch  # noqa: E402
from log_capturer.monitor.marks import ZERO, StreamDedup  # noqa: E402
from log_capturer.pipeline.record import records_jsonl  # noqa: E402
from log_capturer.timestamps import format_rfc3339_ns  # noqa: E402
from tests.integration.harness import Daemon, wait_for  # noqa: E402

LABEL = "log-capturer-bench"  # default; --label to tell your containers from others'


def reference(container_id: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "logs", "--timestamps", container_id],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def stream_path(engine: DockerEngine, info: ContainerInfo, expected: int) -> float:
    started = time.perf_counter()
    response = engine.open_logs(info.id, stdout=True, stderr=True, follow=False)
    count = 0
    with response:
        stream = LogStream(response, tty=False, deadline=None, max_line_bytes=1 << 20)
        dedups = {"stdout": StreamDedup(ZERO), "stderr": StreamDedup(ZERO)}
        # What the monitor and the file sink do per socket read.
        for batch in stream.batches(flush_at_eof=True):
            records = admit_batch(batch, dedups, info).records
            records_jsonl(records)
            count += len(records)
    elapsed = time.perf_counter() - started
    assert count == expected, (count, expected)
    return elapsed


def daemon_path(run_id: str, info: ContainerInfo, expected: int, label: str = LABEL) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(
            Path(tmp),
            run_id,
            {"container_monitor": {"stream_window": "30s"}, "pipeline": {"batch_size": 2000}},
            label=label,
            env={"PYTHONPATH": str(REPO)},  # this tree's code, not an installed copy
        )
        # The container exited before this daemon ever saw it, which a first start skips
        # (it would capture every stopped container on the host); a position at zero makes
        # it resume the container from its beginning, as after a restart.
        zero = {"ts": format_rfc3339_ns(0), "ts_ns": 0, "count": 0}
        daemon.data.mkdir(parents=True)
        positions = {info.id: {"name": info.name, "streams": {"stdout": zero, "stderr": zero}}}
        (daemon.data / "positions.json").write_text(
            json.dumps({"version": 1, "sinks": {}, "containers": positions})
        )
        started = time.perf_counter()
        daemon.start(wait_ready=False)
        path = daemon.data / "logs.jsonl"
        seen = [0]

        # Count only what was appended since the last look: re-reading the whole file
        # every 50 ms would take a good part of the CPU the daemon is measured on.
        with contextlib.ExitStack() as stack:
            files: list[BinaryIO] = []

            def done() -> bool:
                if not files:
                    try:
                        files.append(stack.enter_context(open(path, "rb")))
                    except FileNotFoundError:
                        return False
                seen[0] += files[0].read().count(b"\n")
                return seen[0] >= expected

            wait_for(done, 600, interval=0.05, what="all lines in the file sink")
            elapsed = time.perf_counter() - started
        daemon.stop()
        return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default=LABEL, help="label key of the benchmark container")
    args = parser.parse_args()
    client = docker.from_env()
    run_id = f"bench{int(time.time())}"
    script = (
        f"awk 'BEGIN {{ for (i = 1; i <= {args.lines}; i++) {{ "
        f'printf "line %d of the benchmark, some payload to look like a real log\\n", i; '
        f'if (i % 10 == 0) printf "err %d\\n", i > "/dev/stderr" }} }}\''
    )
    container = client.containers.run(
        "log-capturer-test/busybox:1",
        ["sh", "-c", script],
        detach=True,
        labels={args.label: run_id},
    )
    try:
        container.wait(timeout=300)
        expected = args.lines + args.lines // 10
        engine = DockerEngine(DockerConfig())
        engine.ensure_api_version()
        info = ContainerInfo.from_inspect(engine.inspect_container(container.id))
        ref, ours = [], []
        for _ in range(args.repeat):
            ref.append(reference(container.id))
            ours.append(stream_path(engine, info, expected))
        engine.close()
        whole = daemon_path(run_id, info, expected, args.label)
        best_ref = min(ref)
        result = {
            "lines": expected,
            "docker_logs_s": round(best_ref, 3),
            "stream_s": round(min(ours), 3),
            "daemon_s": round(whole, 3),
            "stream_ratio": round(min(ours) / best_ref, 2),
            "daemon_ratio": round(whole / best_ref, 2),
            "stream_lines_per_s": round(expected / min(ours)),
            "daemon_lines_per_s": round(expected / whole),
        }
        print(json.dumps(result, indent=1))
    finally:
        container.remove(force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
