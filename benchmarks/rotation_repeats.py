"""Rotation repeats: what a followed json-file stream re-sends when the log rotates.

Usage:
  .venv/bin/python benchmarks/rotation_repeats.py                  # 60,000 lines, ~30 s
  .venv/bin/python benchmarks/rotation_repeats.py --quick          # 6,000 lines, max-size 100k
  .venv/bin/python benchmarks/rotation_repeats.py --burst 1000 --pause 0.5 --pad 1000 --runs 3

A container with ``--log-opt max-size=--max-size --log-opt max-file=--max-file`` writes
``--lines`` numbered lines (``n <i>``, plus ``--pad`` bytes), ``--burst`` at a time with
``--pause`` seconds between bursts (100 / 0.05 s: about 2,000 lines/s). The engine is
followed from the start the way ``docker logs -f --timestamps`` does (one plain follow
request of stdout, no log_capturer involved) while a thread polls the log file's size
to count rotations. Sizes the "recent lines" a dedup must remember (issue 11 item 1).

Reported per run, and the worst over all runs:

* received vs written lines, duplicates, rotations seen;
* each repeat: ``k`` lines received again, ``lines_back`` (from the newest line sent to
  the first repeated one), ``ns_back`` (the newest timestamp minus the first repeated
  line's), ``bytes_back`` (message bytes of the repeated lines), whether the repeat is a
  contiguous suffix of what was sent with the same timestamps (``suffix``), and
  ``same_ts`` (K = 1 with the previous line's own timestamp: no step back at all).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

import docker

from log_capturer.timestamps import parse_docker_ts
from log_capturer_testkit import BENCH_LABEL, Fleet
from log_capturer_testkit import bench as common
from log_capturer_testkit.bench import log


class RotationWatch:
    """Counts rotations of one json-file log: its size dropping between two polls."""

    def __init__(self, path: str, interval: float = 0.005) -> None:
        self.path = path
        self.interval = interval
        self.rotations = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = 0
        while not self._stop.wait(self.interval):
            try:
                size = os.path.getsize(self.path)
            except FileNotFoundError:
                continue  # between the rename and the new file
            if size < last:
                self.rotations += 1
            last = size

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def follow(client: docker.DockerClient, container_id: str) -> list[tuple[int, bytes]]:
    """(timestamp ns, message) of every stdout line of one follow request, to its end."""
    out = []
    stream = client.api.logs(
        container_id, stream=True, follow=True, timestamps=True, stdout=True, stderr=False
    )
    try:
        for frame in stream:  # one frame per line (non-TTY)
            ts, _, message = frame.rstrip(b"\n").partition(b" ")
            out.append((parse_docker_ts(ts), message))
    finally:
        stream.close()
    return out


def repeats(lines: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """Every run of lines received again, described (see the module docstring)."""
    first_seen: dict[tuple[int, bytes], int] = {}  # line -> index of its first copy
    sent: list[tuple[int, bytes]] = []  # first copies, in order
    out = []
    i = 0
    while i < len(lines):
        if lines[i] not in first_seen:
            first_seen[lines[i]] = len(sent)
            sent.append(lines[i])
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i] in first_seen:
            i += 1
        run = lines[start:i]
        origin = [first_seen[line] for line in run]
        newest = max(ts for ts, _ in sent)
        out.append(
            {
                "k": len(run),
                "lines_back": len(sent) - origin[0],
                "ns_back": newest - run[0][0],
                "bytes_back": sum(len(m) for _, m in run),
                "suffix": origin == list(range(len(sent) - len(run), len(sent))),
                "same_ts": len(run) == 1 and run[0][0] == newest,
                "at_line": len(sent),
            }
        )
    return out


def one_run(
    client: docker.DockerClient, containers: Fleet, args: argparse.Namespace
) -> dict[str, Any]:
    padding = " " + "p" * args.pad if args.pad else ""
    script = (
        f'i=0; while [ $i -lt {args.lines} ]; do i=$((i+1)); echo "n $i{padding}"; '
        f"if [ $((i % {args.burst})) -eq 0 ]; then sleep {args.pause}; fi; done"
    )
    config = {"max-size": args.max_size, "max-file": str(args.max_file)}
    container = containers.run(
        script, log_config=docker.types.LogConfig(type="json-file", config=config)
    )
    container.reload()
    watch = RotationWatch(container.attrs["LogPath"])
    started = time.monotonic()
    try:
        lines = follow(client, container.id)
    finally:
        watch.stop()
    found = repeats(lines)
    return {
        "written": args.lines,
        "received": len(lines),
        "duplicates": len(lines) - len(set(lines)),
        "seconds": round(time.monotonic() - started, 1),
        "rotations": watch.rotations,
        "repeats": found,
    }


def main() -> None:
    p = common.BenchParser(
        __doc__, quick={"lines": 6_000, "max_size": "100k"}, daemon=False
    )
    p.add_argument("--lines", type=int, default=60_000)
    p.add_argument("--burst", type=int, default=100, help="lines written between pauses")
    p.add_argument("--pause", type=float, default=0.05, help="seconds between bursts")
    p.add_argument("--pad", type=int, default=0, help="bytes added to each line")
    p.add_argument("--max-size", default="1m")
    p.add_argument("--max-file", type=int, default=5)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse()
    client = common.docker_client()
    containers = Fleet(
        client, common.new_run_id("rotation"), label=BENCH_LABEL, keep=args.keep
    )
    runs = []
    try:
        for n in range(args.runs):
            runs.append(one_run(client, containers, args))
            log(f"run {n + 1}: {runs[-1]['duplicates']} duplicates, "
                f"{runs[-1]['rotations']} rotations, k={[r['k'] for r in runs[-1]['repeats']]}")
    finally:
        containers.remove_all()
    every = [r for run in runs for r in run["repeats"]]
    summary = {
        "engine": common.engine_version(client),
        "settings": {k: v for k, v in vars(args).items() if k != "json_out"},
        "runs": runs,
        "worst": {
            "k": max((r["k"] for r in every), default=0),
            "lines_back": max((r["lines_back"] for r in every), default=0),
            "ns_back": max((r["ns_back"] for r in every), default=0),
            "bytes_back": max((r["bytes_back"] for r in every), default=0),
            "all_suffixes": all(r["suffix"] for r in every),
            "same_ts_repeats": sum(r["same_ts"] for r in every),
            "rotations": sum(run["rotations"] for run in runs),
            "repeats": len(every),
        },
    }
    common.write_json(summary, args.json_out)


if __name__ == "__main__":
    main()
