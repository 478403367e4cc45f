"""The daemon: builds every part from the config, starts them, and stops them in order."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

import structlog
from pydantic import ValidationError

from .buffers import BufferBudget
from .config.loader import Config, ConfigError, load_config
from .config.reload import (
    MONITOR_FILTER_KEYS,
    MONITOR_READ_KEYS,
    ReloadPlan,
    plan_reload,
    split_problems,
)
from .discovery.container import ContainerInfo
from .discovery.events import EventWatcher
from .discovery.filters import ContainerFilter, detect_own_container_id
from .discovery.node import NodeIdentity
from .discovery.selector import ContainerSelector
from .docker.engine import DockerEngine
from .docker.errors import ContainerGoneError
from .logging_setup import set_level
from .metrics.collectors import register_runtime_collectors
from .metrics.registry import CONFIG_RELOADS, CONFIG_RESTART_PENDING
from .monitor.container_monitor import ContainerMonitor
from .monitor.turns import TurnKeeper
from .pipeline.dispatcher import Dispatcher
from .pipeline.queue import BatchQueue
from .pipeline.reconfigure import delivery_change
from .pipeline.stages.chain import build_stages
from .positions.ledger import Ledger, MonitorEnd
from .server.http import StatusServer
from .sinks.config import build_sinks
from .sinks.network.auth import SecretUnavailableError, make_auth
from .sinks.network.config import NetworkSinkConfig
from .timestamps import TimestampError, parse_docker_ts

_log = structlog.get_logger(__name__)


class Supervisor:
    """Owns the engine client, discovery, the monitors, the pipeline and the HTTP server.

    It only wires them: where each container is read from and where it is in its life
    is the :class:`~.positions.ledger.Ledger`'s.

    Shutdown order (SIGTERM/SIGINT): stop discovery, stop every monitor (their
    streams are interrupted, the pool wakes its waiters), deliver what is queued,
    save positions, close sinks, close the pool, stop the HTTP server.

    SIGHUP reloads ``config_path`` in place (:meth:`reload`, in the main loop's thread:
    the handler only sets a flag).
    """

    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        mc = config.container_monitor
        self.engine = DockerEngine(config.docker)
        self.node = NodeIdentity(config.host, self.engine)
        self.ledger = Ledger(config.positions.path)
        self.sinks = build_sinks(config.sinks)
        pc = config.pipeline
        self.queue = BatchQueue(pc.queue_records, pc.queue_bytes, pc.when_full == "drop_newest")
        self.buffers = BufferBudget(mc.buffer_budget)
        self.dispatcher = Dispatcher(
            self.queue,
            self.sinks,
            self.ledger,
            pc,
            config.positions.flush_interval,
            stages=build_stages(pc.stages, self.buffers),
        )
        self.filter = ContainerFilter(mc, mc.self_container_id or detect_own_container_id())
        self.selector = ContainerSelector(self.engine, self.filter, self.node)
        self.watcher = EventWatcher(
            self.engine,
            self,
            mc.relist_interval,
            mc.retry_initial_backoff,
            mc.retry_max_backoff,
            event_filters=self.selector.event_filters(),
        )
        self.server = StatusServer(config.server.listen, self.health, self.ready)
        self._collectors = register_runtime_collectors(self.engine.pool, buffers=self.buffers)
        self._lock = threading.RLock()
        self._monitors: dict[str, ContainerMonitor] = {}
        self._listed_once = False
        self._stop = threading.Event()
        self._stopping = False
        self._wake = threading.Event()  # a signal arrived: the main loop looks at once
        self._reload_requested = threading.Event()
        self._reselected = False  # the next listing follows a reload's new filters
        self.turns = TurnKeeper(
            self.engine.pool,
            lambda: self.monitors.values(),
            min_turn=config.container_monitor.contended_window,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM or SIGINT, reloading the config at SIGHUP; returns the exit
        code."""
        self._install_signal_handlers()
        self.start()
        try:
            while not self._stop.is_set():
                self._wake.wait(1.0)
                self._wake.clear()
                if self._reload_requested.is_set() and not self._stop.is_set():
                    self._reload_requested.clear()
                    self.reload()
                if not self.dispatcher.alive:
                    _log.error("dispatcher_died")
                    break
        finally:
            self.shutdown()
        return 0 if self._stop.is_set() else 1

    def _install_signal_handlers(self) -> None:
        """Handlers only set flags: the main loop acts on them."""

        def stop(signum: int, frame: FrameType | None) -> None:
            _log.info("signal_received", signal=signal.Signals(signum).name)
            self._stop.set()
            self._wake.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            _log.info("signal_received", signal=signal.Signals(signum).name)
            self._reload_requested.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def start(self) -> None:
        self.ledger.load(self.sinks)
        for result in ("applied", "unchanged", "invalid", "failed"):
            CONFIG_RELOADS.labels(result)
        _log.info(
            "starting",
            containers_with_positions=len(self.ledger.container_ids()),
            sinks=[s.name for s in self.sinks],
            self_container=self.filter.self_id[:12],
        )
        self.server.start()
        self.dispatcher.start()
        self.engine.start_maintenance()
        self.turns.start()
        self.watcher.start()

    def shutdown(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            monitors = list(self._monitors.values())
        started = time.monotonic()
        _log.info("stopping", monitors=len(monitors), queued=len(self.queue))
        self.turns.stop()
        self.watcher.stop()
        for monitor in monitors:
            monitor.stop()
        self.engine.pool.close()  # wakes monitors waiting for a connection
        self.watcher.join(10)
        for monitor in monitors:
            monitor.join(10)
        self.dispatcher.stop()
        for sink in self.dispatcher.sinks:  # a reload may have replaced self.sinks
            try:
                sink.close()
            except Exception:
                _log.exception("sink_close_failed", sink=sink.name)
        self.engine.close()
        self.server.stop()
        self._collectors.unregister()
        _log.info(
            "stopped",
            seconds=round(time.monotonic() - started, 3),
            delivered=self.dispatcher.delivered,
        )

    # -- health ----------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The process works: its threads are alive and it is not shutting down."""
        detail = {
            "dispatcher": self.dispatcher.alive,
            "discovery": self.watcher.alive,
            "stopping": self._stopping,
        }
        return (self.dispatcher.alive and self.watcher.alive and not self._stopping), detail

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """The engine answers /_ping and discovery is connected to /events."""
        engine_up = self.engine.ping() if not self._stopping else False
        detail = {
            "engine": engine_up,
            "discovery": self.watcher.connected,
            "monitors": len(self._monitors),
        }
        return (engine_up and self.watcher.connected and not self._stopping), detail

    # -- discovery handler ---------------------------------------------------------------

    def on_event(self, action: str, container_id: str, attributes: dict[str, Any]) -> None:
        if action in ("start", "die"):
            # "die" of a container we never saw start: read what it left.
            self.ensure_monitor(container_id, name=attributes.get("name"))
        elif action == "destroy":
            self.selector.forget(container_id)
            self.ledger.destroyed(container_id)
        elif action == "rename":
            self._refresh(container_id)

    def relist(self, gap_started_ns: int | None) -> None:
        """Start what the listing shows should be read. ``gap_started_ns``: events may
        have been missed since then, so containers that started and stopped meanwhile are
        found by their StartedAt; the first listing after a restart treats the time the
        daemon was down (since its last positions save) as such a gap."""
        self.engine.ensure_api_version()
        self.node.resolve()  # before any container is inspected: every record carries it
        first = not self._listed_once
        if first and gap_started_ns is None:
            gap_started_ns = self.ledger.down_since_ns
        # After a reload changed the filters, a running container newly selected is one
        # "already running when first seen": container_monitor.start_from decides.
        first_seen, self._reselected = first or self._reselected, False
        containers = self.selector.list()  # filtered: see ContainerSelector
        present = {c["Id"] for c in containers}
        for summary in containers:
            cid = summary["Id"]
            state = summary.get("State")
            if state in ("running", "restarting", "paused"):
                self.ensure_monitor(cid, first_listing=first_seen)
            elif cid in self._monitors:
                continue
            elif self.ledger.unfinished(cid):
                self.ensure_monitor(cid)  # stopped while we were down: read the rest
            elif gap_started_ns is not None and state in ("exited", "dead"):
                self._catch_up_after_gap(cid, gap_started_ns)
        if first:
            unlisted = [cid for cid in self.ledger.container_ids() if cid not in present]
            pruned = self.ledger.prune(self.selector.missing(unlisted))
            if pruned:
                _log.info("positions_pruned", containers=pruned)
        self._listed_once = True

    def _catch_up_after_gap(self, cid: str, gap_started_ns: int) -> None:
        """A container that started and stopped while events were not followed."""
        try:
            data = self.engine.inspect_container(cid)
        except ContainerGoneError:
            return
        started = (data.get("State") or {}).get("StartedAt") or ""
        try:
            started_ns = parse_docker_ts(started.encode())
        except TimestampError:
            return
        if started_ns >= gap_started_ns - 1_000_000_000:
            self.ensure_monitor(cid)

    # -- monitors ------------------------------------------------------------------------

    def ensure_monitor(
        self, container_id: str, first_listing: bool = False, name: str | None = None
    ) -> None:
        """Start a monitor for the container unless one runs, it is filtered out, or done.

        ``first_listing``: found running by the first listing (or the first after a
        reload changed the filters); if the ledger has no position for it,
        ``container_monitor.start_from`` decides where it is read from.
        ``name``: the container's name from an event, so one already filtered out is not
        inspected again."""
        with self._lock:
            if self._stopping:
                return
            existing = self._monitors.get(container_id)
            if existing is not None and existing.alive:
                return
        info = self.selector.inspect(container_id, name)
        if info is None:  # filtered out or gone
            return
        streams = ContainerMonitor.streams_for(info, self.config.container_monitor)
        if not streams:
            return
        with self._lock:
            if self._stopping or container_id in self._monitors:
                return
            start_now = first_listing and self.config.container_monitor.start_from == "now"
            position = self.ledger.begin_reading(info, streams, start_now)
            if position is None:
                return  # this run was read to its end already
            monitor = ContainerMonitor(
                info,
                self.engine,
                self.queue,
                self.config.container_monitor,
                position,
                self._monitor_exited,
                self.ledger,
                buffers=self.buffers,
            )
            self._monitors[container_id] = monitor
            monitor.start()
        _log.info(
            "monitor_started",
            container_id=info.short_id,
            container_name=info.name,
            tty=info.tty,
            running=info.running,
            marks={s: (m.ts_ns, m.seq) for s, m in position.read.items()},
        )

    def _monitor_exited(self, monitor: ContainerMonitor) -> None:
        cid = monitor.info.id
        end = monitor.finished_reason or MonitorEnd.ERROR
        with self._lock:
            if self._monitors.get(cid) is monitor:
                del self._monitors[cid]
            self.ledger.end_reading(cid, end, monitor.info.started_at)
        if end is MonitorEnd.EXITED:
            # A restart while this monitor drained found it still alive and did nothing:
            # look once more, so the new run is not left to the next relist.
            try:
                self.ensure_monitor(cid)
            except Exception as exc:
                _log.warning("recheck_after_exit_failed", container_id=cid[:12], error=repr(exc))

    def _refresh(self, container_id: str) -> None:
        try:
            data = self.engine.inspect_container(container_id)
        except ContainerGoneError:
            return
        info = ContainerInfo.from_inspect(data, self.node.resolve())
        with self._lock:
            monitor = self._monitors.get(container_id)
        if monitor is not None:
            monitor.update_info(info)
        elif info.running:
            self.ensure_monitor(container_id)

    @property
    def monitors(self) -> dict[str, ContainerMonitor]:
        with self._lock:
            return dict(self._monitors)

    # -- reload (SIGHUP) -------------------------------------------------------------------

    def reload(self) -> str:
        """Read and validate the config file again and apply what can change in place;
        returns (and counts) the result: applied, unchanged, invalid or failed.

        An invalid file changes nothing (one ``config_reload_invalid`` event names every
        bad key). Keys that need a restart (see config/reload.py) keep their running
        values and are named in one ``config_reload_needs_restart`` warning; the other
        changes apply (:meth:`_apply`). Runs in the main loop's thread."""
        try:
            result = self._reload()
        except Exception:
            _log.exception("config_reload_failed")
            result = "failed"
        CONFIG_RELOADS.labels(result).inc()
        return result

    def _reload(self) -> str:
        if self.config_path is None:
            _log.error("config_reload_failed", error="no config file to reload")
            return "failed"
        try:
            loaded = load_config(self.config_path)
            plan = plan_reload(self.config, loaded)
        except ConfigError as exc:
            return self._reload_invalid(exc.problems)
        except ValidationError as exc:  # the mix of running and new values does not hold
            return self._reload_invalid([str(e["msg"]) for e in exc.errors()])
        problems = self._secrets_missing(plan)
        if problems:
            return self._reload_invalid(problems)
        CONFIG_RESTART_PENDING.set(len(plan.restart))
        if plan.restart:
            _log.warning(
                "config_reload_needs_restart",
                keys=list(plan.restart),
                hint="left at their running values until the daemon restarts",
            )
        if not plan.changed:
            _log.info("config_reload_unchanged", path=self.config_path)
            return "unchanged"
        errors = self._apply(plan)
        if errors:
            _log.error("config_reload_failed", errors=errors, keys=list(plan.live))
            return "failed"
        _log.info("config_reload_applied", path=self.config_path, keys=list(plan.live))
        return "applied"

    def _reload_invalid(self, problems: list[str]) -> str:
        errors = split_problems(problems)
        _log.error(
            "config_reload_invalid",
            path=self.config_path,
            keys=[e["key"] for e in errors],
            errors=errors,
            hint="the running configuration stays",
        )
        return "invalid"

    def _secrets_missing(self, plan: ReloadPlan) -> list[str]:
        """Network sinks to (re)build whose credentials cannot be read: the reload is
        refused (as at start, where they stop the daemon) rather than lose the sink."""
        problems = []
        for name in plan.sinks_changed():
            section = getattr(plan.effective.sinks, name)
            if section.enabled and isinstance(section, NetworkSinkConfig):
                try:
                    make_auth(section, name)
                except SecretUnavailableError as exc:
                    problems.append(f"sinks.{name}: {exc}")
        return problems

    def _apply(self, plan: ReloadPlan) -> list[str]:
        """Apply the live changes of ``plan``, delivery first, then discovery; the errors
        (a sink that could not start: its running one stays when it can)."""
        old, new = self.config, plan.effective
        errors: list[str] = []
        if plan.touches("logging.level"):
            set_level(new.logging.level)
        if plan.touches("sinks", "pipeline", "positions.flush_interval"):
            pc = new.pipeline
            self.queue.resize(pc.queue_records, pc.queue_bytes, pc.when_full == "drop_newest")
            change = delivery_change(old, new, plan, self.dispatcher.sinks, self.buffers)
            if not self.dispatcher.reconfigure(change, self._stop):
                return ["stopped before the delivery changes were applied"]
            errors += change.errors
            if change.failed:  # a later reload tries them again
                kept = {name: getattr(old.sinks, name) for name in change.failed}
                new = new.model_copy(update={"sinks": new.sinks.model_copy(update=kept)})
        self.config = new
        mc = new.container_monitor
        self.turns.min_turn = mc.contended_window
        self.watcher.relist_interval = mc.relist_interval
        self.watcher.set_backoff(mc.retry_initial_backoff, mc.retry_max_backoff)
        if plan.touches(*MONITOR_FILTER_KEYS):
            self._reselect()
        if plan.touches(*MONITOR_READ_KEYS):
            self._restart_monitors()
        return errors

    def _reselect(self) -> None:
        """The filters changed: judge every container again, stop the monitors of those
        no longer selected (what they read is still delivered; their positions stay, so
        a container selected again later resumes where it stopped), and list again
        (discovery's thread starts the newly selected ones)."""
        mc = self.config.container_monitor
        self.filter.config = mc
        self.selector.reset()
        self._reselected = True
        self.watcher.reselect(self.selector.event_filters())
        dropped = [m for m in self.monitors.values() if not self.filter.matches(m.info)]
        for monitor in dropped:
            monitor.stop()
        for monitor in dropped:
            monitor.join(10)
        if dropped:
            _log.info(
                "monitors_deselected", containers=[m.info.short_id for m in dropped]
            )

    def _restart_monitors(self) -> None:
        """How logs are read changed: every monitor ends its window and a new one goes on
        from its read position (what entered the queue) with the new settings."""
        monitors = list(self.monitors.values())
        for monitor in monitors:
            monitor.stop()
        for monitor in monitors:
            monitor.join(10)
        for monitor in monitors:
            self.ensure_monitor(monitor.info.id)
        _log.info("monitors_restarted", monitors=len(monitors))
