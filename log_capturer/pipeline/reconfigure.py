"""A reload's changes to delivery (:class:`Reconfiguration`), what the dispatcher tracks
while it applies one (:class:`Handover`), and the swap of the sinks itself."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from ..buffers import BufferBudget
from ..config.loader import Config
from ..config.reload import ReloadPlan
from ..sinks.base import Sink
from ..sinks.config import build_sink, enabled_sinks
from .batch import Batch
from .config import PipelineConfig
from .stages import StageChain
from .stages.chain import build_stages

_log = structlog.get_logger(__name__)


@dataclass
class Reconfiguration:
    """A reload's changes to delivery, applied by the dispatcher thread between two
    deliveries (:meth:`~.dispatcher.Dispatcher.reconfigure`).

    ``sinks``: the sink names in their delivery order after the change; ``build``: a
    builder per sink to (re)build, added or changed (a sink not named in ``sinks`` is
    removed); ``restore``: builders of the running config, used when a changed sink
    cannot be built. ``stages``: the new chain, or None to keep it.
    """

    config: PipelineConfig
    flush_interval: float
    sinks: list[str]
    build: dict[str, Callable[[], Sink]] = field(default_factory=dict)
    restore: dict[str, Callable[[], Sink]] = field(default_factory=dict)
    stages: StageChain | None = None
    done: threading.Event = field(default_factory=threading.Event)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    """Sinks that could not be built with their new settings (their old ones run, if any)."""

    def swaps(self, running: list[Sink]) -> bool:
        """Whether sinks or stages change (what is queued and held is delivered first)."""
        return (
            bool(self.build)
            or self.stages is not None
            or self.sinks != [sink.name for sink in running]
        )

    def removes_or_replaces(self, name: str) -> bool:
        """Sink ``name`` leaves at this change (its retries stop)."""
        return name in self.build or name not in self.sinks


def delivery_change(
    old: Config, new: Config, plan: ReloadPlan, running: list[Sink], buffers: BufferBudget
) -> Reconfiguration:
    """What ``plan`` (from ``old`` to ``new``) changes in the delivery of ``running``."""
    names = enabled_sinks(new.sinks)
    running_names = {sink.name for sink in running}
    changed = set(plan.sinks_changed())
    build: dict[str, Callable[[], Sink]] = {}
    restore: dict[str, Callable[[], Sink]] = {}
    for name in names:
        if name not in running_names or name in changed:
            build[name] = functools.partial(build_sink, name, new.sinks)
        if name in running_names and name in changed:
            restore[name] = functools.partial(build_sink, name, old.sinks)
    stages = None
    if plan.touches("pipeline.stages"):
        stages = build_stages(new.pipeline.stages, buffers)
    _log.info(
        "config_reload_delivery",
        sinks=names,
        started=sorted(build),
        removed=sorted(running_names - set(names)),
        stages_rebuilt=stages is not None,
    )
    return Reconfiguration(
        new.pipeline, new.positions.flush_interval, names, build, restore, stages
    )


@dataclass
class Handover:
    """While a reconfiguration drains: sinks about to be closed (``leaving``: their writes
    are bounded by drain_timeout; ``replacing``: those of them that get a replacement),
    those that gave up, the deliveries a replaced sink gave up on (``carry``:
    acknowledged once its replacement accepted them), and a delivery whose retries the
    reload cut short with the sinks that had accepted it (``interrupted``)."""

    leaving: frozenset[str] = frozenset()
    replacing: frozenset[str] = frozenset()
    gave_up: set[str] = field(default_factory=set)
    carry: list[list[Batch]] = field(default_factory=list)
    interrupted: tuple[list[Batch], set[str]] | None = None

    def begin(self, change: Reconfiguration, running: list[Sink]) -> None:
        """``change`` starts to drain (a delivery it interrupted before is kept)."""
        names = {sink.name for sink in running}
        self.replacing = frozenset(names & set(change.build))
        self.leaving = self.replacing | (names - set(change.sinks))

    def hands_over(self, name: str) -> bool:
        """``name`` gave up and is not replaced: what it did not take is abandoned."""
        return name in self.gave_up and name not in self.replacing


def swap_sinks(running: list[Sink], change: Reconfiguration) -> list[Sink]:
    """Close the sinks ``change`` removes or replaces, then build the new ones (a changed
    sink that cannot be built is restored with its running settings); the sinks in their
    new order. RuntimeError if none is left."""
    by_name = {sink.name: sink for sink in running}
    for name, sink in by_name.items():
        if change.removes_or_replaces(name):
            _close(sink)
    out: list[Sink] = []
    for name in change.sinks:
        builder = change.build.get(name)
        if builder is None:
            out.append(by_name[name])
            continue
        built = _build(name, builder, change)
        if built is None:
            change.failed.append(name)
            if name in by_name and name in change.restore:
                built = _build(name, change.restore[name], change)
        if built is not None:
            out.append(built)
    if not out:
        # Nothing would receive the lines, and positions would move past them.
        raise RuntimeError("no sink left after the reload: " + "; ".join(change.errors))
    return out


def _close(sink: Sink) -> None:
    try:
        sink.close()
    except Exception:
        _log.exception("sink_close_failed", sink=sink.name)


def _build(name: str, builder: Callable[[], Sink], change: Reconfiguration) -> Sink | None:
    try:
        sink = builder()
        sink.recover({}, None)  # a torn last line of a file it appends to is cut
    except Exception as exc:
        change.errors.append(f"sinks.{name}: {exc}")
        _log.exception("sink_start_failed", sink=name)
        return None
    return sink
