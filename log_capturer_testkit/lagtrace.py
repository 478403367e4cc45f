"""Reading what ``benchmarks/lagtrace/sitecustomize.py`` wrote: where each followed line's
delivery time went, per group of containers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .stats import percentile

PARTS = ("engine_to_read", "read_to_queued", "queued_to_taken", "taken_to_written", "total")
"""Docker timestamp -> socket read decoded -> queued -> taken by the dispatcher -> written
(the file sink's write returned); total = written - Docker timestamp."""


def _parts(row: list[float]) -> dict[str, float]:
    ts, read, put, got, _start, end = row
    return {
        "engine_to_read": read - ts,
        "read_to_queued": put - read,
        "queued_to_taken": got - put,
        "taken_to_written": end - got,
        "total": end - ts,
    }


def summarize(path: Path, groups: Mapping[str, str]) -> dict[str, Any]:
    """Per group (name -> a substring of its containers' names): each part's p50/p99/max,
    the mean of each part over the group's slowest 1 % of lines, and how many lines were
    queued ahead of its small batches; plus the dispatcher's checkpoints."""
    found: dict[str, list[dict[str, float]]] = {name: [] for name in groups}
    ahead: dict[str, list[float]] = {name: [] for name in groups}
    checkpoints: list[float] = []
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields[0] == "C":
                checkpoints.append(float(fields[2]))
                continue
            times = [float(x) for x in fields[4:10]]
            if not all(times[:4]):
                continue  # a line not seen at every step (e.g. its read was not followed)
            for name, marker in groups.items():
                if marker in fields[1]:
                    found[name].append(_parts(times))
                    if int(fields[10]) >= 0:
                        ahead[name].append(float(fields[10]))
    out: dict[str, Any] = {}
    for name, rows in found.items():
        if not rows:
            continue
        slowest = sorted(rows, key=lambda r: r["total"])[-max(1, len(rows) // 100) :]
        out[name] = {
            "lines": len(rows),
            **{
                part: {
                    "p50": round(percentile([r[part] for r in rows], 0.5), 3),
                    "p99": round(percentile([r[part] for r in rows], 0.99), 3),
                    "max": round(max(r[part] for r in rows), 3),
                }
                for part in PARTS
            },
            "slowest_1pct_mean": {
                part: round(sum(r[part] for r in slowest) / len(slowest), 3) for part in PARTS
            },
            "lines_queued_ahead_p50_p99_max": [
                percentile(ahead[name], 0.5),
                percentile(ahead[name], 0.99),
                max(ahead[name], default=0),
            ],
        }
    out["checkpoint_s_p50_p99_max"] = [
        round(percentile(checkpoints, 0.5), 4),
        round(percentile(checkpoints, 0.99), 4),
        round(max(checkpoints, default=0.0), 4),
    ]
    return out
