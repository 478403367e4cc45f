"""Backlog capture speed as a ratio against ``docker logs`` reading the same container, same run.

Usage:
  .venv/bin/python benchmarks/capture_throughput.py [--lines 200000] [--repeat 3]
  .venv/bin/python benchmarks/capture_throughput.py --lines 2000000 --keep --json-out out.json
  .venv/bin/python benchmarks/capture_throughput.py --quick

A container writes N numbered lines on stdout (≈150 B each in its json-file log; every
10th also a line on stderr; 2,000,000 lines ≈ 297 MB) and then stays running (idle).
Then, alternating, best of ``--repeat``:

* reference: ``docker logs --timestamps <id>`` to /dev/null (the Go CLI over the API);
* stream:    this project's reading path alone: one non-follow request through the
             pooled client, frames decoded, lines joined, deduplicated, records built
             and serialized to JSON (what the file sink writes);
* daemon:    the whole daemon (python -m log_capturer run), from start until the file
             sink holds every line: start-up, discovery, monitor, queue, dispatcher.

``daemon_speed_ratio`` = docker logs time / daemon time: 1.0 or more means the daemon
captures the backlog at least as fast as ``docker logs`` reads it (the target).
``stream_ratio`` / ``daemon_ratio`` are the inverse (time ratios: above 1 = slower),
kept for comparison with older runs. No wall-clock thresholds: compare ratios between
commits on the same machine.

The backlog container is labelled ``log-capturer-bench=<run id>`` and
``log-capturer-bench-backlog=v1-<lines>``; ``--keep`` leaves it running and ``--reuse``
(the default) picks up a kept one, so the 2M-line log is written once
(``benchmarks/reopen_cost.py --reuse`` uses it too). Remove it with
``docker rm -f $(docker ps -aq --filter label=log-capturer-bench-backlog)``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from log_capturer_testkit import (
    BENCH_LABEL,
    Daemon,
    Fleet,
    cpu_seconds,
    deep_merge,
    dockerd_pid,
    rss_mb,
)
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log
from log_capturer_testkit.sink import LineCounter
from log_capturer_testkit.waiting import wait_count
from log_capturer_testkit.workloads import backlog_expected, ensure_backlog, log_file_size


def reference(container_id: str) -> dict[str, float]:
    """``docker logs --timestamps`` to /dev/null: its time, the CLI's CPU and the
    engine's CPU over the same span (how much of the machine serving the log takes)."""
    dockerd = dockerd_pid()
    engine_cpu0 = cpu_seconds(dockerd)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        ["docker", "logs", "--timestamps", container_id],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli = children.ru_utime + children.ru_stime - (children0.ru_utime + children0.ru_stime)
    return {
        "s": elapsed,
        "cli_cpu_s": cli,
        "dockerd_cpu_s": cpu_seconds(dockerd) - engine_cpu0,
    }


class StreamPath:
    """The reading path alone, through the project's internals (which the hot-path work
    may change: if they no longer fit, the result says so and the rest still runs)."""

    def __init__(self, container_id: str) -> None:
        from log_capturer.discovery.container import ContainerInfo
        from log_capturer.docker.config import DockerConfig
        from log_capturer.docker.engine import DockerEngine

        self.engine = DockerEngine(DockerConfig())
        self.engine.ensure_api_version()
        self.info = ContainerInfo.from_inspect(
            self.engine.inspect_container(container_id), str(self.engine.info()["Name"])
        )

    def run(self, expected: int) -> float:
        from log_capturer.docker.stream import LogStream
        from log_capturer.monitor.admit import StreamDedup, admit
        from log_capturer.positions.marks import ZERO

        info = self.info
        started = time.perf_counter()
        response = self.engine.open_logs(info.id, stdout=True, stderr=True, follow=False)
        count = 0
        with response:
            stream = LogStream(response, tty=False, deadline=None, max_line_bytes=1 << 20)
            dedups = {"stdout": StreamDedup(ZERO), "stderr": StreamDedup(ZERO)}
            # What the monitor and the file sink do per socket read.
            for lines in stream.batches(flush_at_eof=True):
                batch = admit(lines, dedups, info).batch
                if batch is not None:
                    batch.jsonl()
                    count += len(batch)
        elapsed = time.perf_counter() - started
        if count != expected:
            raise AssertionError(f"stream path read {count} lines, expected {expected}")
        return elapsed

    def close(self) -> None:
        self.engine.close()


def daemon_path(
    args: Any, label_value: str, expected: int, workdir: Path, n: int
) -> dict[str, float]:
    """Start a daemon that captures only the backlog container; time until the file sink
    holds every line. Also its CPU seconds and dockerd's over the same span. Then stop it
    (SIGTERM drains) and count what it wrote beyond the backlog (duplicates)."""
    dockerd = dockerd_pid()
    overrides = deep_merge(
        {"container_monitor": {"stream_window": args.stream_window}}, common.parse_sets(args.set)
    )
    daemon = Daemon(
        workdir / f"daemon{n}",
        label_value,
        overrides,
        env=common.code_env(args.code),
        label=BENCH_LABEL,
    )
    counter = LineCounter(daemon.output)
    engine_cpu0 = cpu_seconds(dockerd)
    started = time.perf_counter()
    daemon.start(wait_ready=False)
    try:
        done = wait_count(
            counter.poll, expected, args.drain_timeout, args.stall_timeout, lambda: daemon.running
        )
        elapsed = time.perf_counter() - started
        if not done:
            if not daemon.running:
                raise RuntimeError(f"daemon exited:\n{daemon.log_tail()}")
            raise RuntimeError(f"delivery stopped at {counter.count}/{expected} lines")
        cpu = cpu_seconds(daemon.pid)
        engine_cpu = cpu_seconds(dockerd) - engine_cpu0
        rss = rss_mb(daemon.pid)
        exit_code = daemon.stop()
        extra = counter.poll() - expected  # all it wrote, now that it stopped
    finally:
        counter.close()
        if daemon.running:
            daemon.stop()
    return {
        "daemon_s": elapsed,
        "daemon_cpu_s": cpu,
        "dockerd_cpu_s": engine_cpu,
        "daemon_rss_mb": rss,
        "extra_lines": extra,
        "exit_code": exit_code,
    }


def main() -> int:
    parser = common.BenchParser(
        __doc__,
        quick={"lines": 100_000, "repeat": 1, "daemon_repeat": 1},
        drain_timeout=1800,
        stall_timeout=120,
        stream_window="30s",
        backlog_lines=200_000,
    )
    parser.add_argument("--repeat", type=int, default=3, help="docker logs / stream runs (best of)")
    parser.add_argument("--daemon-repeat", type=int, default=1, help="daemon runs (best of)")
    parser.add_argument("--no-stream", action="store_true", help="skip the stream-path figure")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="a daemon config key, e.g. container_monitor.read_ahead_bytes=1MiB (repeatable)",
    )
    args = parser.parse()
    common.precompile(args.code)
    # The stream path imports log_capturer in this process: from --code, like the daemon.
    sys.path.insert(0, str(Path(args.code).resolve()))
    client = common.docker_client()
    run_id = common.new_run_id("backlog")
    containers = Fleet(client, run_id, label=BENCH_LABEL)
    container = None
    reused = False
    try:
        container, reused = ensure_backlog(client, args.lines, args.reuse, run_id)
        label_value = container.labels[BENCH_LABEL]
        expected = backlog_expected(args.lines)
        size = log_file_size(container)
        stream: StreamPath | None = None
        stream_error = ""
        if not args.no_stream:
            try:
                stream = StreamPath(container.id)
            except Exception as exc:
                stream_error = f"{type(exc).__name__}: {exc}"
        refs: list[dict[str, float]] = []
        ours: list[float] = []
        for n in range(args.repeat):
            refs.append(reference(container.id))
            log(f"docker logs run {n + 1}: {refs[-1]['s']:.2f}s")
            if stream is not None and not stream_error:
                try:
                    ours.append(stream.run(expected))
                    log(f"stream path run {n + 1}: {ours[-1]:.2f}s")
                except Exception as exc:
                    stream_error = f"{type(exc).__name__}: {exc}"
        if stream is not None:
            stream.close()
        runs = []
        with common.workdir(args, "bench-backlog-") as workdir:
            for n in range(args.daemon_repeat):
                runs.append(daemon_path(args, label_value, expected, workdir, n))
                log(f"daemon run {n + 1}: {runs[-1]['daemon_s']:.2f}s")
        best = min(runs, key=lambda r: r["daemon_s"])
        ref = min(refs, key=lambda r: r["s"])
        best_ref = ref["s"]
        whole = best["daemon_s"]
        result: dict[str, Any] = {
            "benchmark": "capture_throughput",
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "engine": common.engine_version(client),
            "code": common.code_version(args.code),
            "lines": expected,
            "log_file_bytes": size,
            "container_reused": reused,
            "docker_logs_s": round(best_ref, 3),
            "docker_logs_lines_per_s": round(expected / best_ref),
            # What serving the log costs: the engine's CPU and the CLI's, per million
            # lines, while `docker logs` read it, and the engine's while the daemon did.
            "docker_logs_cli_cpu_s": round(ref["cli_cpu_s"], 2),
            "dockerd_cpu_s_during_docker_logs": round(ref["dockerd_cpu_s"], 2),
            "dockerd_cpu_s_per_million_lines": round(ref["dockerd_cpu_s"] / expected * 1e6, 2),
            "daemon_s": round(whole, 3),
            "daemon_lines_per_s": round(expected / whole),
            "daemon_speed_ratio": round(best_ref / whole, 3),
            "daemon_ratio": round(whole / best_ref, 2),
            "daemon_cpu_s": round(best["daemon_cpu_s"], 2),
            "daemon_cpu_s_per_million_lines": round(best["daemon_cpu_s"] / expected * 1e6, 2),
            "dockerd_cpu_s_during_daemon": round(best["dockerd_cpu_s"], 2),
            "daemon_rss_mb": round(best["daemon_rss_mb"], 1),
            "daemon_extra_lines": best["extra_lines"],
            "daemon_exit_codes": [r["exit_code"] for r in runs],
            "daemon_config": common.parse_sets(args.set),
        }
        if ours:
            result.update(
                {
                    "stream_s": round(min(ours), 3),
                    "stream_lines_per_s": round(expected / min(ours)),
                    "stream_ratio": round(min(ours) / best_ref, 2),
                }
            )
        if stream_error:
            result["stream_error"] = stream_error
        common.write_json(result, args.json_out)
    finally:
        if args.keep or reused:
            if container is not None:
                log(f"keeping backlog container {container.name}")
        else:
            containers.remove_all()  # only this run's label: never a reused container
    return 0


if __name__ == "__main__":
    sys.exit(main())
