"""The spool's replayer: a thread that sends the spooled payloads oldest first, retrying
without limit, and deletes an entry once all of it is settled."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic

import structlog

from ...backoff import backoff_seconds
from .outcomes import P, Stopping
from .spool import DiskSpool, SpoolEntry

_log = structlog.get_logger(__name__)


class SpoolReplayer(Generic[P]):
    """Replays ``spool`` through ``deliver`` (which retries forever and raises
    :class:`Stopping` once ``stopping`` is set). Started on first use (:meth:`wake`);
    :meth:`stop` ends and joins its thread."""

    def __init__(
        self,
        name: str,
        spool: DiskSpool,
        read: Callable[[bytes], P],
        deliver: Callable[[P], None],
        stopping: threading.Event,
        backoff: tuple[float, float],
    ) -> None:
        self.name = name
        self._spool = spool
        self._read = read
        self._deliver = deliver
        self._stopping = stopping
        self._backoff = backoff
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        """Something was spooled: replay it (start the thread if it is not running)."""
        self._wake.set()
        self.start()

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name=f"{self.name}-spool-replayer", daemon=True
                )
                self._thread.start()

    def interrupt(self) -> None:
        """End a wait for new entries (``stopping`` was set)."""
        self._wake.set()

    def stop(self, timeout: float) -> bool:
        """Set ``stopping`` and join the thread (at most ``timeout``); False if it did not
        end."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stopping.set()
        self._wake.set()
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            _log.error("sink_replayer_did_not_stop", sink=self.name, timeout=timeout)
            return False
        return True

    def _run(self) -> None:
        replayed = 0
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._wake.clear()
                entry = self._spool.peek()
                if entry is None:
                    if replayed:
                        _log.info("sink_spool_drained", sink=self.name, records=replayed)
                        replayed = 0
                    self._wake.wait(1.0)
                    continue
                replayed += self._replay_one(entry)
                attempt = 0
            except Stopping:
                break
            except Exception as exc:  # a disk error must not end replay: report, wait, retry
                attempt += 1
                _log.error("sink_replay_failed", sink=self.name, error=str(exc), exc_info=True)
                if self._stopping.wait(backoff_seconds(attempt, *self._backoff)):
                    break

    def _replay_one(self, entry: SpoolEntry) -> int:
        try:
            payload = self._read(entry.data)
        except ValueError as exc:
            _log.error(
                "sink_spool_entry_unreadable", sink=self.name, seq=entry.seq, error=str(exc)
            )
            self._spool.set_aside(entry, str(exc))
            return 0
        self._deliver(payload)
        self._spool.remove(entry)
        return entry.records
