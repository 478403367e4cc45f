"""What a reload (SIGHUP) can change in place: the diff between the running config and
the file's, split into keys applied live and keys that need a restart.

A key is live only if it is listed in :data:`LIVE_KEYS` (a key path or the path of a
section all of whose keys are live); every other key, including keys added later that
nobody wired into the reload, needs a restart: a reload names it in the log and keeps
the running value (:func:`plan_reload` builds the config the daemon goes on with).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .loader import Config

MONITOR_FILTER_KEYS = tuple(
    f"container_monitor.{key}"
    for key in (
        "include_names",
        "exclude_names",
        "include_labels",
        "exclude_labels",
        "include_images",
        "exclude_images",
    )
)
"""Which containers are captured: a reload re-lists, starts the newly selected ones and
stops the deselected ones."""

MONITOR_READ_KEYS = tuple(
    f"container_monitor.{key}"
    for key in (
        "stream_window",
        "max_line_bytes",
        "retry_initial_backoff",
        "retry_max_backoff",
        "resume_tail_lines",
        "resume_tail_max_lines",
        "reorder_tolerance",
        "tail_hold_max_bytes",
        "max_stream_hold",
        "max_lines_per_second",
        "max_bytes_per_second",
    )
)
"""How a container's log is read: each running monitor ends its window and starts again
from its read position with the new settings."""

LIVE_KEYS: tuple[str, ...] = (
    *MONITOR_FILTER_KEYS,
    *MONITOR_READ_KEYS,
    "container_monitor.start_from",
    "container_monitor.contended_window",
    "container_monitor.relist_interval",
    "sinks",
    "pipeline",
    "positions.flush_interval",
    "logging.level",
)
"""Keys (or whole sections) a reload applies without a restart; any other key needs one
(``docker``, ``server``, ``positions.path``, ``container_monitor.stdout`` and ``stderr``,
``container_monitor.self_container_id``, ``logging.format``, ...)."""


_MONITOR_PREFIX = "container_monitor."
RELOAD_RULE = "\n".join(
    textwrap.wrap(
        "SIGHUP reloads this file in place (with the environment overrides the daemon started "
        "with); an invalid file changes nothing. These keys apply without a restart: every "
        "key of sinks and pipeline, "
        + ", ".join(k for k in LIVE_KEYS if "." in k and not k.startswith(_MONITOR_PREFIX))
        + ", and container_monitor's "
        + ", ".join(
            k.removeprefix(_MONITOR_PREFIX) for k in LIVE_KEYS if k.startswith(_MONITOR_PREFIX)
        )
        + ". Any other key keeps its running value until a restart (a reload names it).",
        width=95,
        break_on_hyphens=False,
    )
)
"""The reload rule, stated once (the reference prints it in its header)."""


def is_live(key: str) -> bool:
    """Whether a reload applies ``key`` (a dotted key path) in place."""
    return any(key == live or key.startswith(live + ".") for live in LIVE_KEYS)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted paths of the keys whose values differ, sorted. Mappings are compared key
    by key (``container_monitor.include_labels.app``), lists as a whole."""
    out: list[str] = []
    _diff(old.model_dump(mode="json"), new.model_dump(mode="json"), "", out)
    return sorted(out)


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                _diff(old[key], new[key], path, out)
    elif old != new:
        out.append(prefix)


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does: ``live`` keys are applied, ``restart`` keys keep their running
    values in ``effective``, the config the daemon goes on with."""

    live: tuple[str, ...]
    restart: tuple[str, ...]
    effective: Config

    @property
    def changed(self) -> bool:
        """Anything to apply."""
        return bool(self.live)

    def touches(self, *prefixes: str) -> bool:
        """Whether a live key is, or is under, one of ``prefixes``."""
        return any(
            key == prefix or key.startswith(prefix + ".")
            for key in self.live
            for prefix in prefixes
        )

    def sinks_changed(self) -> list[str]:
        """Names of the sinks (``sinks.<name>``) whose settings changed."""
        return sorted({key.split(".")[1] for key in self.live if key.startswith("sinks.")})


def plan_reload(running: Config, loaded: Config) -> ReloadPlan:
    """Split the difference between the running config and the file's (``loaded``,
    already validated) and build the config to go on with: ``loaded`` with every key
    that needs a restart at its running value."""
    keys = changed_keys(running, loaded)
    live = tuple(k for k in keys if is_live(k))
    restart = tuple(k for k in keys if not is_live(k))
    if not restart:
        return ReloadPlan(live, restart, loaded)
    data = loaded.model_dump(mode="json")
    kept = running.model_dump(mode="json")
    for key in restart:
        _copy(kept, data, key.split("."))
    return ReloadPlan(live, restart, Config.model_validate(data))


def _copy(source: dict[str, Any], target: dict[str, Any], path: list[str]) -> None:
    """Set ``path`` in ``target`` to its value in ``source`` (removed where absent)."""
    for part in path[:-1]:
        source = source.get(part, {})
        target = target.setdefault(part, {})
    if path[-1] in source:
        target[path[-1]] = source[path[-1]]
    else:
        target.pop(path[-1], None)


def split_problems(problems: Iterable[str]) -> list[dict[str, str]]:
    """``ConfigError`` problems (``key: message``) as ``{"key", "message"}`` pairs for
    the log."""
    out = []
    for problem in problems:
        key, sep, message = problem.partition(": ")
        out.append({"key": key, "message": message} if sep else {"key": "", "message": key})
    return out
