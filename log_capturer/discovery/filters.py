"""Which containers to capture: name, label and image filters, and never ourselves."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from .config import SelectionConfig
from .container import EXCLUDE_LABEL, ContainerInfo

_CONTAINER_ID = re.compile(r"/(?:docker/)?containers/([0-9a-f]{64})/")
_CGROUP_ID = re.compile(r"(?:docker[-/]|/)([0-9a-f]{64})(?:\.scope)?$")


# Go regexp metacharacters (regexp.QuoteMeta); any other character stands for itself.
_GO_REGEXP_META = frozenset("\\.+*?()|[]{}^$")
# Attributes the engine writes into a container event over the container's labels of
# the same name: a label filter on these keys would test the attribute, so it is not
# sent to /events (the listing, which reads the labels themselves, still gets it).
_EVENT_ATTRIBUTES = frozenset({"name", "image", "exitCode", "oldName", "signal"})


class ContainerFilter:
    """Decides whether a container is captured, from the ``container_monitor`` filters.

    The engine applies what it can express (Docker 20.10, API 1.41, checked here):

    * ``label``: ``key`` (present, any value) or ``key=value``; several must all hold.
      That is ``include_labels`` exactly, so it goes to ``/containers/json`` and
      ``/events``. The engine has no negation: ``exclude_labels`` stays here.
    * ``name`` on ``/containers/json``: unanchored Go regular expressions (any of them),
      tried on the name with and without its leading ``/``; an invalid one matches
      nothing. ``include_names`` globs made of literal characters, ``*`` and ``?`` are
      sent as anchored expressions that match exactly the names the glob does; a glob
      with a ``[...]`` class is not sent (the engine then lists every name). On
      ``/events`` the engine's container filter is an exact/prefix match, so names are
      never sent there.
    * Images (the engine's ``ancestor``/``image`` filters are not globs), exclusions and
      the own-container check stay here.

    What the engine sends back is a superset of what :meth:`matches` accepts, so every
    container is still checked here; the engine filters only spare the work.
    """

    def __init__(self, config: SelectionConfig, self_id: str = "") -> None:
        self.config = config
        self.self_id = self_id

    def is_self_id(self, container_id: str) -> bool:
        return bool(self.self_id) and container_id.startswith(self.self_id)

    def matches(self, info: ContainerInfo) -> bool:
        """The whole decision, from what ``inspect`` says."""
        return self._decide(info.id, info.name, info.labels, info.image) is True

    def judge_listed(self, summary: dict[str, Any]) -> bool | None:
        """The decision from one ``/containers/json`` entry, without an inspect; None when
        only an inspect can tell.

        The listing carries the name, the labels and the image, but shows the image id
        instead of the name the container was created from when that name now points
        to another image: then, if image filters are set, it takes an inspect.
        """
        image = str(summary.get("Image") or "")
        known_image = image if image and image != summary.get("ImageID") else None
        return self._decide(
            str(summary["Id"]), listed_name(summary), summary.get("Labels") or {}, known_image
        )

    def _decide(
        self, container_id: str, name: str, labels: dict[str, str], image: str | None
    ) -> bool | None:
        c = self.config
        if self.is_self_id(container_id):
            return False
        if labels.get(EXCLUDE_LABEL, "").strip().lower() == "true":
            return False
        if c.include_names and not any(fnmatchcase(name, p) for p in c.include_names):
            return False
        if any(fnmatchcase(name, p) for p in c.exclude_names):
            return False
        if not all(_label_matches(labels, k, v) for k, v in c.include_labels.items()):
            return False
        if any(_label_matches(labels, k, v) for k, v in c.exclude_labels.items()):
            return False
        if not (c.include_images or c.exclude_images):
            return True
        if image is None:
            return None
        if c.include_images and not any(fnmatchcase(image, p) for p in c.include_images):
            return False
        return not any(fnmatchcase(image, p) for p in c.exclude_images)

    # -- what the engine can filter ------------------------------------------------------

    def list_filters(self) -> dict[str, list[str]]:
        """``filters`` for ``GET /containers/json``: labels and names the engine can test."""
        filters: dict[str, list[str]] = {}
        labels = self._label_filters(self.config.include_labels)
        if labels:
            filters["label"] = labels
        names = [engine_name_pattern(p) for p in self.config.include_names]
        if names and all(n is not None for n in names):
            filters["name"] = sorted({n for n in names if n is not None})
        return filters

    def event_label_filters(self) -> list[str]:
        """``label`` filters for ``GET /events`` (the event attributes hide a few keys)."""
        usable = {k: v for k, v in self.config.include_labels.items() if k not in _EVENT_ATTRIBUTES}
        return self._label_filters(usable)

    @staticmethod
    def _label_filters(labels: dict[str, str]) -> list[str]:
        # The engine splits key=value at the first "=": a key holding one cannot be sent.
        return [
            key if value in ("", "*") else f"{key}={value}"
            for key, value in sorted(labels.items())
            if "=" not in key
        ]


def engine_name_pattern(glob: str) -> str | None:
    """The engine's ``name`` filter matching exactly the names ``glob`` matches (with
    :func:`fnmatch.fnmatchcase`), or None when the glob has a character class."""
    out = ["^"]
    for ch in glob:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            return None
        elif ch in _GO_REGEXP_META:
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append("$")
    return "".join(out)


def listed_name(summary: dict[str, Any]) -> str:
    """A listed container's own name: ``Names`` also holds ``/other/alias`` for links."""
    names = [str(n) for n in summary.get("Names") or []]
    own = next((n for n in names if n.count("/") == 1), names[0] if names else "")
    return own.lstrip("/")


def _label_matches(labels: dict[str, str], key: str, value: str) -> bool:
    if key not in labels:
        return False
    return value in ("", "*") or labels[key] == value


def detect_own_container_id(proc: Path = Path("/proc/self")) -> str:
    """This process's container id, if it runs in a Docker container ('' otherwise).

    The engine bind-mounts ``/etc/hostname`` from ``.../containers/<id>/``, which
    shows in mountinfo (cgroup v1 and v2); the cgroup path is the fallback.
    """
    try:
        for line in (proc / "mountinfo").read_text().splitlines():
            fields = line.split(" ")
            match = _CONTAINER_ID.search(fields[3]) if len(fields) > 3 else None
            if match:
                return match.group(1)
    except OSError:
        pass  # no /proc: not in a container we can recognise
    try:
        for line in (proc / "cgroup").read_text().splitlines():
            match = _CGROUP_ID.search(line)
            if match:
                return match.group(1)
    except OSError:
        pass
    return ""
