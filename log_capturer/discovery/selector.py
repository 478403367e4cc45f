"""Which containers discovery hands on: filtered by the engine, judged once each."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..docker.engine import DockerEngine
from ..docker.errors import ContainerGoneError
from .container import ContainerInfo
from .events import EVENT_FILTERS
from .filters import ContainerFilter, listed_name
from .node import HostConfig, NodeIdentity


class ContainerSelector:
    """Lists and inspects containers for discovery, and remembers what it decided.

    * :meth:`list` asks ``/containers/json`` with the filters the engine can apply
      (:meth:`ContainerFilter.list_filters`) and judges each entry from the listing
      itself, so a container filtered out costs no inspect.
    * :meth:`inspect` inspects a container and judges it from that.
    * Verdicts are remembered per container id together with the name they were made
      for. The inputs of a verdict (name, labels, image, id) do not change while a
      container exists, except its name: a rename re-judges it, a restart does not need
      to. So a container that only an inspect could judge (see
      :meth:`ContainerFilter.judge_listed`) is inspected once, not at every relist,
      and an event about a container already judged out costs nothing. What is
      remembered is bounded by the last listing: containers it no longer shows are
      forgotten.
    """

    def __init__(
        self,
        engine: DockerEngine,
        container_filter: ContainerFilter,
        node: NodeIdentity | None = None,
    ) -> None:
        """``node``: names the containers' node (default: the engine's name)."""
        self.engine = engine
        self.filter = container_filter
        self.node = node or NodeIdentity(HostConfig(), engine)
        self._lock = threading.Lock()
        self._verdicts: dict[str, tuple[str, bool]] = {}  # id -> (name, captured)

    def event_filters(self) -> dict[str, list[str]]:
        """``filters`` for ``/events``: container lifecycle events, and the label filters."""
        filters = dict(EVENT_FILTERS)
        labels = self.filter.event_label_filters()
        if labels:
            filters["label"] = labels
        return filters

    def list(self) -> list[dict[str, Any]]:
        """Summaries of the containers (any state) not known to be filtered out."""
        summaries = self.engine.list_containers(all=True, filters=self.filter.list_filters())
        kept: list[dict[str, Any]] = []
        with self._lock:
            verdicts: dict[str, tuple[str, bool]] = {}
            for summary in summaries:
                cid = str(summary["Id"])
                name = listed_name(summary)
                known = self._verdicts.get(cid)
                verdict = known[1] if known and known[0] == name else None
                if verdict is None:
                    verdict = self.filter.judge_listed(summary)
                if verdict is not None:
                    verdicts[cid] = (name, verdict)
                if verdict is not False:
                    kept.append(summary)
            self._verdicts = verdicts
        return kept

    def inspect(self, container_id: str, name: str | None = None) -> ContainerInfo | None:
        """The container, if it is captured; None if it is filtered out or gone.

        With ``name`` (an event's), a container already judged out under that name is
        not inspected again.
        """
        if self.filter.is_self_id(container_id):
            return None
        if name is not None:
            with self._lock:
                if self._verdicts.get(container_id) == (name, False):
                    return None
        host = self.node.resolve()  # learnt once, before the first inspect
        try:
            data = self.engine.inspect_container(container_id)
        except ContainerGoneError:
            self.forget(container_id)
            return None
        info = ContainerInfo.from_inspect(data, host)
        captured = self.filter.matches(info)
        with self._lock:
            self._verdicts[container_id] = (info.name, captured)
        return info if captured else None

    def reset(self) -> None:
        """The filters changed (a reload): every verdict is made again."""
        with self._lock:
            self._verdicts.clear()

    def forget(self, container_id: str) -> None:
        """The container was destroyed."""
        with self._lock:
            self._verdicts.pop(container_id, None)

    def missing(self, container_ids: Iterable[str]) -> set[str]:
        """Those of ``container_ids`` the engine does not know at all (filters aside).

        One unfiltered listing, and only when there is anything to check.
        """
        wanted = set(container_ids)
        if not wanted:
            return set()
        present = {str(c["Id"]) for c in self.engine.list_containers(all=True)}
        return wanted - present
