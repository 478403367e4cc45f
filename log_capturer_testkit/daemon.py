"""One log_capturer process (``python -m log_capturer run``) driven from outside.

Everything here talks to the daemon the way an operator does: its config file, its
environment, signals, /health, /ready, /metrics, its log and the files it writes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .env import FAULT_ENV, TEST_LABEL
from .metrics import Metrics, metric_total, parse_metrics
from .waiting import wait_for

Record = dict[str, Any]
"""One line of the file sink, parsed."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_records(path: Path) -> list[Record]:
    """The complete lines of a file sink output (a line being written has no newline yet
    and is left out); [] before the file exists."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in raw.splitlines(keepends=True) if line.endswith(b"\n")]


class Daemon:
    """One daemon with its own work dir (config, logs) and data dir (positions, file sink).

    It captures only containers labelled ``<label>=<run_id>``, so runs sharing the
    engine never see each other's containers. ``overrides`` are merged over a config
    made for tests (2 s windows, quick retries, file sink on); ``env`` is added to the
    environment (``PYTHONPATH`` to run another tree's code, ``LOG_CAPTURER_TEST_FAULT``).
    """

    def __init__(
        self,
        workdir: Path,
        run_id: str,
        overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        label: str = TEST_LABEL,
    ) -> None:
        self.workdir = workdir
        self.run_id = run_id
        self.port = free_port()
        self.data = workdir / "data"
        self.config: dict[str, Any] = deep_merge(
            {
                "docker": {"pool": {"wait_timeout": "10s"}},
                "container_monitor": {
                    "stream_window": "2s",
                    "include_labels": {label: run_id},
                    "retry_initial_backoff": "100ms",
                    "retry_max_backoff": "2s",
                },
                "positions": {"path": str(self.data / "positions.json"), "flush_interval": "500ms"},
                "pipeline": {"batch_wait": "50ms"},
                "sinks": {"file": {"enabled": True, "path": str(self.data / "logs.jsonl")}},
                "server": {"listen": f"127.0.0.1:{self.port}"},
                "logging": {"level": "info", "format": "json"},
            },
            overrides or {},
        )
        self.config_path = workdir / "config.yaml"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- the process ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"daemon-{self.starts}.log"

    def start(self, wait_ready: bool = True) -> Daemon:
        """Write the config and start the process (each start logs to its own file)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.starts += 1
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until it exits
        env = {**os.environ, **self.env}
        # Test faults are installed by the testkit's own entry point (the package has none).
        entry = "log_capturer_testkit.faults" if env.get(FAULT_ENV) else "log_capturer"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", entry, "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            return self.http_status("/ready") == 200

        wait_for(ready, timeout, what="daemon /ready")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` (SIGTERM: the daemon drains its queue, flushes the sinks and saves
        positions) and return the exit code; fail if it does not exit within ``timeout``."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"daemon did not stop within {timeout}s:\n{self.log_tail()}"
            ) from exc

    def reload(self) -> None:
        """Write ``self.config`` (change it first) to the config file and send SIGHUP: the
        daemon reloads it in place. Wait on :meth:`reloads` to know it is done."""
        assert self.proc is not None
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.proc.send_signal(signal.SIGHUP)

    def reloads(self, result: str) -> float:
        """How many reloads ended with ``result`` (applied, unchanged, invalid, failed)."""
        return self.metric(f'log_capturer_config_reloads_total{{result="{result}"}}')

    def kill(self) -> None:
        """SIGKILL: no drain, no positions save."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    # -- HTTP -------------------------------------------------------------------------

    def http_status(self, path: str) -> int:
        """The status of GET ``path``; 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), json.loads(exc.read())

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def metrics(self) -> Metrics:
        return parse_metrics(self.metrics_text())

    def metric(self, name: str, default: float = 0.0) -> float:
        """One series, e.g. ``'log_capturer_stream_windows_total{end="eof"}'``."""
        return self.metrics().get(name, default)

    def metric_sum(self, name: str) -> float:
        """Every series of ``name`` added up."""
        return metric_total(self.metrics(), name)

    def finished_container(self, name: str) -> bool:
        """Whether the monitor of container ``name`` read it to its end (it exited): what
        the daemon delivers of it is then queued, and a SIGTERM drains it (stop-and-drain
        before an audit). Raises if the daemon itself exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
        return any(
            e.get("event") == "monitor_stopped"
            and e.get("container_name") == name
            and e.get("reason") == "exited"
            for e in self.log_events()
        )

    def wait_monitors_done(self, timeout: float = 60) -> None:
        """Wait until no monitor runs (``log_capturer_containers_monitored`` is 0): every
        container the daemon saw has stopped and was read to its end, so the daemon will
        read nothing more of them. Stop it then, and its output is final."""
        wait_for(
            lambda: self.metric("log_capturer_containers_monitored", -1) == 0,
            timeout,
            what="every monitor to finish",
        )

    def wait_captured(self, records: int, timeout: float = 60) -> None:
        """Wait until the file sink holds ``records`` records (the daemon saw the
        containers) and then until every monitor has finished (they exited and were read
        to their end: the daemon will read nothing more of them).

        Fewer records after ``timeout`` is not an error here: the audit that follows
        names what is missing better than a count would."""
        try:
            wait_for(lambda: len(self.records()) >= records, timeout, what=f"{records} records")
        except AssertionError as exc:
            print(f"wait_captured: {exc}; auditing what arrived", file=sys.stderr)
        self.wait_monitors_done(timeout)

    def stop_and_read(self) -> list[Record]:
        """SIGTERM (the daemon drains its queue, flushes the sinks, saves positions), check
        it exited 0, and return what the file sink holds: everything this run delivered,
        with nothing more to come, so an audit of it cannot miss a late duplicate."""
        code = self.stop()
        if code != 0:
            raise AssertionError(f"daemon exited with {code} on SIGTERM:\n{self.log_tail()}")
        return self.records()

    # -- files ------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, Any]]:
        """The daemon's structlog events over all its starts, in order."""
        events = []
        for n in range(1, self.starts + 1):
            path = self.workdir / f"daemon-{n}.log"
            for line in path.read_text(errors="replace").splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    events.append({"event": "unparsed", "text": line})
        return events

    @property
    def output(self) -> Path:
        """The file sink's output (``sinks.file.path``)."""
        return Path(self.config["sinks"]["file"]["path"])

    def records(self, path: Path | None = None) -> list[Record]:
        """What the file sink holds now (complete lines)."""
        return read_records(path or self.output)
