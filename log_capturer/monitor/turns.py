"""Taking turns on scarce connections: end the longest-held log streams when others wait.

With more monitored containers than ``docker.pool.max_open``, a stream holds its
connection for a whole ``stream_window`` (30 s by default) and the rest wait; a
container started meanwhile would wait minutes for its first line. While someone
waits for a connection, this keeper ends, oldest first, as many streams as there are
waiters among those held at least ``contended_window``. ``since``-resume makes an
early end lossless; the stream's monitor simply opens its next window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol

import structlog

from ..docker.pool import DockerConnectionPool
from ..metrics.registry import STREAM_TURNS_YIELDED

_log = structlog.get_logger(__name__)


class TakesTurns(Protocol):
    def stream_age(self) -> float | None: ...

    def yield_turn(self) -> bool: ...


class TurnKeeper:
    """Owns one thread that checks the pool every ``interval`` and cuts long turns."""

    def __init__(
        self,
        pool: DockerConnectionPool,
        monitors: Callable[[], Iterable[TakesTurns]],
        min_turn: float,
        interval: float = 0.25,
    ) -> None:
        self.pool = pool
        self._monitors = monitors
        self.min_turn = min_turn
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="turn-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                _log.exception("turn_keeper_failed")

    def check(self) -> int:
        """Cut up to one stream per waiter; returns how many were cut."""
        waiting = self.pool.stats().waiting
        if not waiting:
            return 0
        held = []
        for monitor in self._monitors():
            age = monitor.stream_age()
            if age is not None and age >= self.min_turn:
                held.append((age, monitor))
        held.sort(key=lambda pair: pair[0], reverse=True)
        cut = 0
        for _, monitor in held:
            if cut >= waiting:
                break
            if monitor.yield_turn():
                cut += 1
        if cut:
            STREAM_TURNS_YIELDED.inc(cut)
        return cut
