"""The node's identity: the ``host`` every record, Loki stream and OTLP resource carries.

By default it is the engine's name (``Name`` of ``GET /info``, the Docker host's
hostname): the same for every container of a node and for a daemon that runs in a
container of its own (whose hostname is its container id, new at every recreate), and
the node's name under Swarm. ``host.name`` sets it instead.

When it is learnt: at the first listing (:meth:`NodeIdentity.resolve`, called by the
supervisor's ``relist`` right after the API version), before any container is inspected,
so before any record exists. Building the daemon does not need the engine (as for the
API version). While the engine does not answer, the listing fails and discovery retries
it with capped backoff (``container_monitor.retry_*_backoff``); ``/ready`` stays 503
meanwhile. Once learnt, the name does not change until the daemon restarts.
"""

from __future__ import annotations

import socket
import threading

import docker.errors
import structlog
from pydantic import Field

from ..config.types import Section
from ..docker.engine import DockerEngine, is_transient

_log = structlog.get_logger(__name__)


class HostConfig(Section):
    name: str = Field(
        "",
        description="The node's name: the host field of every file and stdout record, the "
        "Loki host label and OTLP host.name (sinks.loki.host and sinks.otlp.host override "
        "it for one sink). Empty = the engine's name (Name of the engine's /info: the Docker "
        "host's hostname, also when the daemon runs in a container), learnt at the first "
        "listing, before any container is read; while the engine does not answer, discovery "
        "retries with backoff and nothing is read.",
    )


class NodeIdentity:
    """The node's name, from the config or learnt from the engine once. Thread-safe."""

    def __init__(self, config: HostConfig, engine: DockerEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._configured = config.name
        self._name: str | None = None

    def resolve(self) -> str:
        """The name; the first call without a configured one asks the engine's ``/info``
        (retried like any API call; raises when the engine stays unavailable, and the
        caller's retry loop asks again)."""
        with self._lock:
            if self._name is not None:
                return self._name
            if self._configured:
                name, source = self._configured, "config"
            else:
                name, source = self._engine_name(), "engine"
            if not name:
                name, source = socket.gethostname(), "hostname"
            self._name = name
            _log.info("node_identity", host=name, source=source)
            return name

    def _engine_name(self) -> str:
        """``Name`` of ``/info``; "" (logged) when the engine refuses the request for good
        or has no name: only an unavailable engine raises, to be asked again."""
        try:
            info = self.engine.info()
        except docker.errors.APIError as exc:
            if is_transient(exc):
                raise
            _log.warning("engine_name_unavailable", error=repr(exc), hint=_HINT)
            return ""
        name = str(info.get("Name") or "")
        if not name:
            _log.warning("engine_name_unavailable", error="no Name in /info", hint=_HINT)
        return name


_HINT = "this machine's hostname is used instead (host.name sets the name)"
