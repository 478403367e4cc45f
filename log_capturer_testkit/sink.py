"""Following the file sink's output while the daemon writes it."""

from __future__ import annotations

import calendar
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_SECONDS: dict[bytes, int] = {}


def parse_ts(raw: bytes) -> float:
    """``2026-11-23T12:13:10.147869933Z`` -> epoch seconds (float)."""
    head = raw[:19]
    secs = _SECONDS.get(head)
    if secs is None:
        secs = calendar.timegm(time.strptime(head.decode(), "%Y-%m-%dT%H:%M:%S"))
        if len(_SECONDS) > 100_000:
            _SECONDS.clear()
        _SECONDS[head] = secs
    frac = raw[19:].rstrip(b"Z")
    return secs + (float(frac) if frac.startswith(b".") else 0.0)


def record_ts(line: bytes) -> float | None:
    """The ``ts`` of a raw sink line as epoch seconds, None if it has none."""
    start = line.find(b'"ts":"')
    if start < 0:
        return None
    start += 6
    end = line.find(b'"', start)
    try:
        return parse_ts(line[start:end])
    except ValueError:
        return None


class LineCounter:
    """Counts the complete lines of a growing file, reading only what is new (cheap: no
    parsing, for timing a daemon without competing with it for CPU)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: BinaryIO | None = None

    def poll(self) -> int:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            except FileNotFoundError:
                return 0
        while True:
            data = self._fh.read(8 << 20)
            if not data:
                return self.count
            self.count += data.count(b"\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class TailStats:
    lines: int = 0
    lag_samples: list[float] = field(default_factory=list)
    watched_lags: list[float] = field(default_factory=list)
    """The lag of every line holding ``watch`` (not in ``lag_samples``)."""


class SinkTailer(threading.Thread):
    """Follows ``logs.jsonl`` as it grows. Each read is stamped with ``time.time()``; the
    lag of the first line of every read and of every ``sample_every``-th line is
    ``arrival - ts`` (an upper bound by up to one poll interval). Every line holding
    ``watch`` (e.g. the JSON of a group's container names) has its lag in
    ``watched_lags`` instead. ``on_line`` (if given) sees every complete line with its
    arrival time. :meth:`stop` reads what is left."""

    def __init__(
        self,
        path: Path,
        sample_every: int = 100,
        poll: float = 0.02,
        on_line: Callable[[bytes, float], None] | None = None,
        watch: bytes | None = None,
    ) -> None:
        super().__init__(name="sink-tailer", daemon=True)
        self.path = path
        self.sample_every = sample_every
        self.poll = poll
        self.on_line = on_line
        self.watch = watch
        self.stats = TailStats()
        self._halt = threading.Event()
        self._window: tuple[float, float] | None = None

    def measure_between(self, start: float, end: float) -> None:
        """Only keep lag samples of lines whose ts is in [start, end] (epoch seconds)."""
        self._window = (start, end)

    def run(self) -> None:
        fh = None
        pending = b""
        try:
            while not self._halt.is_set():
                if fh is None:
                    try:
                        fh = open(self.path, "rb")  # noqa: SIM115 - closed in finally
                    except FileNotFoundError:
                        self._halt.wait(self.poll)
                        continue
                data = fh.read(4 << 20)
                if not data:
                    self._halt.wait(self.poll)
                    continue
                now = time.time()
                data = pending + data
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                self._consume(data[:cut], now)
            if fh is not None:  # whatever is left once asked to stop
                data = pending + fh.read()
                cut = data.rfind(b"\n") + 1
                self._consume(data[:cut], time.time())
        finally:
            if fh is not None:
                fh.close()

    def _consume(self, chunk: bytes, now: float) -> None:
        if not chunk:
            return
        lines = chunk.split(b"\n")
        lines.pop()  # after the last newline
        s = self.stats
        s.lines += len(lines)
        window = self._window
        watch = self.watch
        for idx in range(0, len(lines), self.sample_every):
            if watch is not None and watch in lines[idx]:
                continue
            ts = record_ts(lines[idx])
            if ts is None or (window and not window[0] <= ts <= window[1]):
                continue
            s.lag_samples.append(now - ts)
        if watch is not None and watch in chunk:
            for line in lines:
                if watch in line:
                    ts = record_ts(line)
                    if ts is not None and (not window or window[0] <= ts <= window[1]):
                        s.watched_lags.append(now - ts)
        if self.on_line is not None:
            for line in lines:
                self.on_line(line, now)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
