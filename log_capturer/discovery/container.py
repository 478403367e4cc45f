"""What the daemon knows about a container, read from ``inspect``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_PROJECT = "com.docker.compose.project"
SWARM_SERVICE = "com.docker.swarm.service.name"
"""Set by Swarm on every task container: the service's name (``<stack>_<service>`` for a
stack's). Swarm also sets task, node and service ids, which are never used as labels:
a task id is new at every restart."""
SWARM_STACK = "com.docker.stack.namespace"
"""Set by ``docker stack deploy`` on a stack's services and their task containers."""

# Settings a container carries itself, as labels (no daemon config needed).
EXCLUDE_LABEL = "io.log_capturer.exclude"
"""``io.log_capturer.exclude=true``: the container is never captured."""
MULTILINE_START_LABEL = "io.log_capturer.multiline.start"
"""``io.log_capturer.multiline.start=<regex>``: the container's lines are merged into
multiline records that start at lines matching the regex (pipeline.stages.multiline,
with this start pattern, for this container, also when the stage is off)."""


@dataclass(frozen=True)
class ContainerInfo:
    """Identity and metadata carried by every record of the container."""

    id: str
    name: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    running: bool = False
    started_at: str = ""
    host: str = ""
    """The node's name (discovery/node.py), the same for every container of a daemon."""

    @property
    def compose_service(self) -> str | None:
        return self.labels.get(COMPOSE_SERVICE)

    @property
    def compose_project(self) -> str | None:
        return self.labels.get(COMPOSE_PROJECT)

    @property
    def swarm_service(self) -> str | None:
        return self.labels.get(SWARM_SERVICE)

    @property
    def swarm_stack(self) -> str | None:
        return self.labels.get(SWARM_STACK)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @classmethod
    def from_inspect(cls, data: dict[str, Any], host: str) -> ContainerInfo:
        """The container of an inspect answer, on the node named ``host``."""
        config = data.get("Config") or {}
        state = data.get("State") or {}
        return cls(
            id=data["Id"],
            name=str(data.get("Name") or "").lstrip("/"),
            image=str(config.get("Image") or data.get("Image") or ""),
            labels=dict(config.get("Labels") or {}),
            tty=bool(config.get("Tty")),
            running=bool(state.get("Running")),
            started_at=str(state.get("StartedAt") or ""),
            host=host,
        )
