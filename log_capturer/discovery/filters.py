"""Which containers to capture: name, label and image filters, and never ourselves."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path

from ..monitor.config import MonitorConfig
from .container import ContainerInfo

_CONTAINER_ID = re.compile(r"/(?:docker/)?containers/([0-9a-f]{64})/")
_CGROUP_ID = re.compile(r"(?:docker[-/]|/)([0-9a-f]{64})(?:\.scope)?$")


class ContainerFilter:
    """Decides whether a container is captured, from the ``container_monitor`` filters."""

    def __init__(self, config: MonitorConfig, self_id: str = "") -> None:
        self.config = config
        self.self_id = self_id

    def is_self(self, info: ContainerInfo) -> bool:
        return bool(self.self_id) and info.id.startswith(self.self_id)

    def matches(self, info: ContainerInfo) -> bool:
        c = self.config
        if self.is_self(info):
            return False
        if c.include_names and not any(fnmatchcase(info.name, p) for p in c.include_names):
            return False
        if any(fnmatchcase(info.name, p) for p in c.exclude_names):
            return False
        if c.include_images and not any(fnmatchcase(info.image, p) for p in c.include_images):
            return False
        if any(fnmatchcase(info.image, p) for p in c.exclude_images):
            return False
        if not all(_label_matches(info.labels, k, v) for k, v in c.include_labels.items()):
            return False
        return not any(_label_matches(info.labels, k, v) for k, v in c.exclude_labels.items())


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
