"""Following the engine's ``/events`` stream, and re-listing so no container is missed."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Protocol

import structlog
from tenacity import RetryCallState, stop_when_event_set

from ..backoff import capped_backoff, retrying
from ..docker.engine import DockerEngine
from ..docker.stream import ManagedResponse
from ..metrics.registry import (
    DISCOVERY_EVENTS,
    DISCOVERY_RECONNECTS,
    DISCOVERY_RELISTS,
    DISCOVERY_UP,
)

_log = structlog.get_logger(__name__)

EVENT_FILTERS = {"type": ["container"], "event": ["start", "die", "destroy", "rename"]}


class DiscoveryHandler(Protocol):
    def on_event(self, action: str, container_id: str, attributes: dict[str, Any]) -> None:
        """A container event (start, die, destroy, rename); may be delivered twice."""

    def relist(self, gap_started_ns: int | None) -> None:
        """List containers and reconcile.

        ``gap_started_ns`` is set when events may have been lost since that time.
        """


class EventWatcher:
    """Owns the discovery thread.

    It lists containers once, then follows ``/events`` from a moment before that
    listing, so nothing falls between the two. The stream is reopened every
    ``relist_interval`` (a window, as for logs) with ``since`` = the last event seen,
    so the engine replays what happened in between, and containers are listed again
    each time. After an error the stream is reopened with capped backoff and the
    listing also looks for containers that started and stopped during the gap.
    """

    def __init__(
        self,
        engine: DockerEngine,
        handler: DiscoveryHandler,
        relist_interval: float,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        event_filters: dict[str, list[str]] | None = None,
    ) -> None:
        """``event_filters``: what ``/events`` is asked for (default ``EVENT_FILTERS``;
        discovery adds label filters, see ContainerSelector.event_filters)."""
        self.engine = engine
        self.handler = handler
        self.relist_interval = relist_interval
        self.event_filters = event_filters or EVENT_FILTERS
        self._wait = capped_backoff(initial_backoff, max_backoff)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: ManagedResponse | None = None
        # Events are replayed from here on reconnect; it starts before the first listing.
        self._since_ns = time.time_ns() - 1_000_000_000
        self._gap_started: int | None = None
        self._relist_now = False  # a reload changed the filters: end the window, re-list
        self.connected = False
        self.thread = threading.Thread(target=self._run, name="discovery", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._current is not None:
                self._current.interrupt()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def reselect(self, event_filters: dict[str, list[str]]) -> None:
        """A reload changed which containers are captured: end the current window, list
        containers again and follow ``/events`` with ``event_filters`` from the last
        event seen (events meanwhile are replayed with the new filters). Any thread."""
        with self._lock:
            self.event_filters = event_filters
            self._relist_now = True
            if self._current is not None:
                self._current.yield_turn()

    def set_backoff(self, initial: float, maximum: float) -> None:
        """New waits after discovery errors (a reload)."""
        self._wait = capped_backoff(initial, maximum)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def _run(self) -> None:
        def on_retry(exc: BaseException | None, state: RetryCallState) -> None:
            self._set_connected(False)
            if self._gap_started is None:
                self._gap_started = self._since_ns
            DISCOVERY_RECONNECTS.inc()
            _log.warning("discovery_error", error=repr(exc), attempt=state.attempt_number)

        retry = retrying(
            on_retry,
            wait=lambda state: self._wait(state),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep,
        )
        try:
            retry(self._relist, None)
            while not self._stop.is_set():
                retry(self._window)
        except Exception as exc:
            if not self._stop.is_set():
                _log.exception("discovery_failed", error=repr(exc))
                raise
        finally:
            self._set_connected(False)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _window(self) -> None:
        """Follow /events for one ``relist_interval``; then re-list (or note the gap)."""
        with self._lock:
            filters = self.event_filters
        response = self.engine.open_events(self._since_ns, filters)
        with self._lock:
            self._current = response
            if self._relist_now:
                response.yield_turn()  # asked for while it opened: the filters may be old
        try:
            if self._stop.is_set():
                return
            self._set_connected(True)
            if self._gap_started is not None:
                self._relist(self._gap_started)
                self._gap_started = None
            deadline = time.monotonic() + self.relist_interval
            pending = b""
            while True:
                data = response.read(deadline)
                if not data:
                    break
                pending += data
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    if raw.strip():
                        self._dispatch(json.loads(raw))
            end = response.end_reason
        finally:
            with self._lock:
                self._current = None
            response.close()
        with self._lock:
            relist_now, self._relist_now = self._relist_now, False
        if end == "eof" and not self._stop.is_set():
            # The engine closed the stream (restarting?): events may be lost meanwhile
            # (the next window lists again, as of the gap).
            self._gap_started = self._since_ns
            DISCOVERY_RECONNECTS.inc()
            self._set_connected(False)
        elif end == "deadline" or (relist_now and not self._stop.is_set()):
            self._relist(None)

    def _dispatch(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        container_id = str(actor.get("ID") or event.get("id") or "")
        DISCOVERY_EVENTS.labels(action).inc()
        if container_id and action in EVENT_FILTERS["event"]:
            self.handler.on_event(action, container_id, dict(actor.get("Attributes") or {}))
        if "timeNano" in event:
            self._since_ns = max(self._since_ns, int(event["timeNano"]))

    def _relist(self, gap_started_ns: int | None) -> None:
        DISCOVERY_RELISTS.inc()
        self.handler.relist(gap_started_ns)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        DISCOVERY_UP.set(1 if up else 0)
