"""What the benchmark scripts (benchmarks/*.py) share: their common flags, the code
under test, progress and summary output, and a metrics sampler. Nothing here asserts:
benchmarks report figures."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import yaml

from .env import REPO


def log(msg: str) -> None:
    """Progress on stderr (stdout carries only the JSON summary)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_json(summary: Mapping[str, Any], path: str | None) -> None:
    """Print the summary (the last thing on stdout) and write it to ``path`` if given."""
    text = json.dumps(summary, indent=1, default=str)
    print(text, flush=True)
    if path:
        Path(path).write_text(text + "\n")


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of a benchmark's figures (ratios of runs), to 3 places."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def new_run_id(prefix: str) -> str:
    return f"{prefix}{int(time.time())}-{os.getpid()}"


def docker_client(pool: int = 64) -> docker.DockerClient:
    return docker.from_env(max_pool_size=pool, timeout=120)


def engine_version(client: docker.DockerClient) -> str:
    v = client.version()
    return f"{v.get('Version')} (API {v.get('ApiVersion')})"


def code_env(code: str) -> dict[str, str]:
    """Environment that makes ``python -m log_capturer`` import the tree ``code``."""
    return {"PYTHONPATH": str(Path(code).resolve())}


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set key.path=value`` flags (values in YAML) as nested config overrides."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def precompile(code: str) -> None:
    """Byte-compile the tree's ``log_capturer`` once, as an installed daemon is: with
    PYTHONDONTWRITEBYTECODE set (these machines, the image) a daemon started from a
    source tree compiles every module at each start, about 0.1 CPU-s a run."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(code).resolve() / "log_capturer")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def code_version(code: str) -> str:
    """``<path>@<commit>`` (``+dirty`` if log_capturer/ has uncommitted changes)."""
    try:
        commit = subprocess.run(
            ["git", "-C", code, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", code, "status", "--porcelain", "log_capturer"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(code)
    return f"{Path(code).resolve()}@{commit}{'+dirty' if dirty else ''}"


def cleanup_on_sigterm() -> None:
    """SIGTERM (e.g. from ``timeout``) unwinds like Ctrl-C, so ``finally`` blocks remove
    the containers."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


class BenchParser(argparse.ArgumentParser):
    """The flags every benchmark has, with the script's own defaults.

    Always: ``--quick`` (the sizes in ``quick`` replace the defaults; flags given
    explicitly still win) and ``--json-out``; with ``containers`` (the script makes
    some): ``--keep``; with ``daemon`` (the script runs one): ``--workdir``, ``--code``.
    When the script gives a default (not None): ``--drain-timeout`` and
    ``--stall-timeout`` (waiting for delivery), ``--stream-window`` (the daemon's
    ``container_monitor.stream_window``), ``--lines`` with ``--reuse`` (the shared
    backlog container). Add the script's own flags with ``add_argument``, then call
    :meth:`parse`.
    """

    def __init__(
        self,
        doc: str | None,
        *,
        quick: Mapping[str, Any],
        drain_timeout: float | None = None,
        stall_timeout: float | None = None,
        stream_window: str | None = None,
        backlog_lines: int | None = None,
        daemon: bool = True,
        containers: bool = True,
    ) -> None:
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        self.quick = dict(quick)
        shrunk = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.quick.items())
        common = self.add_argument_group("common to the benchmarks")
        common.add_argument(
            "--quick",
            action="store_true",
            help=f"a short check that the script works: {shrunk} (explicit flags win)",
        )
        common.add_argument("--json-out", metavar="FILE", help="also write the JSON summary here")
        if containers:
            common.add_argument(
                "--keep",
                action="store_true",
                help="keep the containers it creates (debugging, reuse)",
            )
        if daemon:
            common.add_argument(
                "--workdir",
                metavar="DIR",
                help="keep the daemons' config, data and logs here (default: a temp dir, removed)",
            )
            common.add_argument(
                "--code",
                default=str(REPO),
                metavar="TREE",
                help="source tree whose log_capturer the daemon runs (default: %(default)s)",
            )
        if drain_timeout is not None:
            common.add_argument(
                "--drain-timeout",
                type=float,
                default=drain_timeout,
                metavar="S",
                help="longest wait for every line to be delivered (default: %(default)s)",
            )
        if stall_timeout is not None:
            common.add_argument(
                "--stall-timeout",
                type=float,
                default=stall_timeout,
                metavar="S",
                help="give up waiting when no line arrived for this long (default: %(default)s)",
            )
        if stream_window is not None:
            common.add_argument(
                "--stream-window",
                default=stream_window,
                help="the daemon's container_monitor.stream_window (default: %(default)s)",
            )
        if backlog_lines is not None:
            common.add_argument(
                "--lines",
                type=int,
                default=backlog_lines,
                help="stdout lines of the backlog container (default: %(default)s)",
            )
            common.add_argument(
                "--reuse",
                action=argparse.BooleanOptionalAction,
                default=True,
                help="reuse a kept backlog container of the same size (default: yes)",
            )

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        """Parse; with ``--quick``, again with the quick sizes as defaults. SIGTERM then
        unwinds like Ctrl-C (containers are removed in ``finally`` blocks)."""
        args = self.parse_args(argv)
        unknown = set(self.quick) - set(vars(args))
        if unknown:
            raise ValueError(f"--quick sets unknown options: {sorted(unknown)}")
        if args.quick:
            self.set_defaults(**self.quick)
            args = self.parse_args(argv)
        cleanup_on_sigterm()
        return args


@contextlib.contextmanager
def workdir(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """``--workdir`` (kept), or a temp dir removed at the end."""
    if args.workdir:
        path = Path(args.workdir)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


class Sampler(threading.Thread):
    """Calls ``fn`` every ``interval`` seconds and keeps (elapsed, result); a failed
    sample is counted in ``errors`` (the daemon may be busy), the sampling goes on."""

    def __init__(self, fn: Callable[[], dict[str, float]], interval: float) -> None:
        super().__init__(name="sampler", daemon=True)
        self.fn = fn
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.errors = 0
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic() - self._t0, self.fn()))
            except Exception as exc:  # a report, not a test: note it and sample again
                self.errors += 1
                log(f"sample failed: {exc!r}")
            if self._halt.wait(self.interval):
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
