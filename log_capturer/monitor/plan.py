"""The requests of one window: which streams, from where (positions: positions/marks.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ReadPlan:
    """One request of a window: which streams, from where, following or not."""

    streams: tuple[str, ...]
    since_ns: int
    follow: bool


def plan_window(checked: Mapping[str, int], lag_threshold_ns: int, follow: bool) -> list[ReadPlan]:
    """The requests of one window, from each stream's checked time (see resume.Checked;
    at least its mark's timestamp).

    Streams within ``lag_threshold_ns`` of the newest are read together, from the
    oldest of their times (re-sent lines are dropped by dedup). A stream further
    behind (a quiet stderr after a restart) is read on its own, without following,
    from its own time: a shared ``since`` would re-send the other stream's whole
    history every window, and moving its time forward without having read it could
    skip a line the engine wrote late.
    """
    if not checked:
        return []
    newest = max(checked.values())
    behind = tuple(s for s, ts in checked.items() if newest - ts > lag_threshold_ns)
    together = tuple(s for s in checked if s not in behind)
    plans = [ReadPlan((s,), checked[s], follow=False) for s in behind]
    plans.append(ReadPlan(together, min(checked[s] for s in together), follow=follow))
    return plans
