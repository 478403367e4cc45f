"""Did every line arrive exactly once, in order per stream? Three ways to know what was sent:

* a list the test wrote (:func:`assert_exactly_once`);
* the engine's own log of each container (:func:`audit_engine`, the soak);
* numbered lines ``1 .. N`` then ``end N`` (:func:`audit_numbered`, the benchmarks:
  millions of lines, counted without keeping them).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from .fleet import engine_lines


def by_stream(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(container_name, stream) -> messages in delivery order."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        out[(record["container_name"], record["stream"])].append(record["message"])
    return out


@dataclass
class StreamAudit:
    """One stream: what was expected against what was delivered."""

    expected: int = 0
    delivered: int = 0
    lost: int = 0  # expected lines that never arrived (counting repeats)
    duplicated: int = 0  # extra copies of expected lines
    unexpected: int = 0  # lines nobody wrote
    exact: bool = True  # delivered == expected: each once, nothing else, in order
    missing_sample: list[str] = field(default_factory=list)
    duplicated_sample: list[str] = field(default_factory=list)
    unexpected_sample: list[str] = field(default_factory=list)

    @property
    def out_of_order(self) -> bool:
        """Every line once and nothing else, but not in the order written."""
        return not self.exact and not (self.lost or self.duplicated or self.unexpected)


def compare_stream(expected: list[str], got: list[str]) -> StreamAudit:
    """Compare one stream's delivered messages with what was written."""
    audit = StreamAudit(expected=len(expected), delivered=len(got), exact=got == expected)
    if audit.exact:
        return audit
    want, have = Counter(expected), Counter(got)
    for message, n in want.items():
        k = have.get(message, 0)
        if k < n:
            audit.lost += n - k
            audit.missing_sample.append(message)
        elif k > n:
            audit.duplicated += k - n
            audit.duplicated_sample.append(message)
    for message, k in have.items():
        if message not in want:
            audit.unexpected += k
            audit.unexpected_sample.append(message[:60])
    for sample in (audit.missing_sample, audit.duplicated_sample, audit.unexpected_sample):
        del sample[5:]
    return audit


def assert_exactly_once(
    records: list[dict[str, Any]], container: str, stream: str, expected: list[str]
) -> None:
    """Every expected line of ``container``/``stream`` delivered once, nothing else, in order."""
    audit = compare_stream(expected, by_stream(records).get((container, stream), []))
    if audit.exact:
        return
    raise AssertionError(
        f"{container}/{stream}: expected {audit.expected} lines, got {audit.delivered}; "
        f"missing {audit.lost} {audit.missing_sample}, "
        f"duplicated {audit.duplicated} {audit.duplicated_sample}, "
        f"unexpected {audit.unexpected} {audit.unexpected_sample}, "
        f"out of order: {audit.out_of_order}"
    )


@dataclass
class EngineAudit:
    """Containers audited against the engine's own log, all streams added up."""

    containers: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    out_of_order: int = 0  # streams with every line once but in another order
    engine: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False)


def audit_engine(
    client: docker.DockerClient,
    names: Iterable[str],
    records: Iterable[Mapping[str, Any]],
    known: Mapping[str, dict[str, list[str]]] | None = None,
) -> EngineAudit:
    """Each named container's stdout and stderr, as the engine logged them, against the
    records delivered for it. ``engine`` keeps what the engine had, per container;
    ``known``: what it had of containers removed since (read before they were)."""
    delivered = by_stream(records)
    audit = EngineAudit()
    for name in names:
        expected = known[name] if known and name in known else engine_lines(client, name)
        audit.engine[name] = expected
        audit.containers += 1
        for stream, lines in expected.items():
            one = compare_stream(lines, delivered.get((name, stream), []))
            audit.expected += one.expected
            audit.delivered += one.delivered
            audit.lost += one.lost
            audit.duplicated += one.duplicated
            audit.unexpected += one.unexpected
            audit.out_of_order += one.out_of_order
    return audit


@dataclass
class NumberedAudit:
    """Containers that wrote ``1 ..`` ``N`` then ``end N`` on stdout (workloads.py)."""

    containers: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    unexpected: int = 0
    incomplete: list[str] = field(default_factory=list)

    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.incomplete)


def audit_numbered(path: Path, names: Iterable[str]) -> NumberedAudit:
    """Read the file sink output at ``path``: check each number of every container in
    ``names`` arrived exactly once, and its end marker once. (Counts, not order: the
    benchmarks read millions of lines.)"""
    wanted = set(names)
    seen: dict[str, bytearray] = {}
    ends: dict[str, list[int]] = {}
    audit = NumberedAudit(containers=len(wanted))
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue
            rec = json.loads(raw)
            name = rec.get("container_name")
            if name not in wanted:
                continue
            audit.delivered += 1
            msg: str = rec["message"]
            head = msg.split(" ", 2)
            if head[0] == "end" and len(head) > 1:
                ends.setdefault(name, []).append(int(head[1]))
                continue
            if rec.get("stream") != "stdout" or not head[0].isdigit():
                audit.unexpected += 1
                continue
            n = int(head[0])
            bits = seen.setdefault(name, bytearray())
            if n >= len(bits):
                bits.extend(b"\0" * max(n + 1 - len(bits), len(bits)))
            if bits[n] < 255:
                bits[n] += 1
    for name in sorted(wanted):
        end = ends.get(name, [])
        if len(end) != 1:
            audit.incomplete.append(f"{name}: {len(end)} end markers")
            if len(end) > 1:
                audit.duplicated += len(end) - 1
        bits = seen.get(name, bytearray())
        top = end[0] if end else max((i for i, b in enumerate(bits) if b), default=0)
        audit.expected += top + 1
        for i in range(1, top + 1):
            c = bits[i] if i < len(bits) else 0
            if c == 0:
                audit.lost += 1
            elif c > 1:
                audit.duplicated += c - 1
        audit.unexpected += sum(1 for i in range(top + 1, len(bits)) if bits[i])
    if len(audit.incomplete) > 20:
        audit.incomplete = [*audit.incomplete[:20], f"... {len(audit.incomplete) - 20} more"]
    return audit
