"""Pushes a real Loki v3.4.6 refuses in part, and the 400 text it answers to each.

Each :class:`Case` builds a push (relative to a time ``now`` and a ``run`` label of the
test's own) and says which of its entries Loki refuses. The texts Loki answered are
recorded in ``tests/fixtures/loki_400.json``, with the run label and the times replaced
``python -m tests.loki_cases`` provokes every case against the real binary
(../shared/peers) and rewrites that file with the exact texts, the run label and the
time each push was built with. tests/unit/test_loki_responses.py rebuilds each push and
reads its recorded text without a Loki; tests/unit/test_loki_sink.py provokes the cases
again against the real Loki and checks each text is the recorded one but for the run
label, the times and the tenant (:func:`normalize`).
"""

from __future__ import annotations

import calendar
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from log_capturer.sinks.loki.encode import Meta, Push, Streams
from log_capturer_testkit.loki import LIMITS_TENANT, NO_METADATA_TENANT

FIXTURE = Path(__file__).parent / "fixtures" / "loki_400.json"
HOUR_NS = 3600 * 10**9

Entry = tuple[int, str, Meta]  # ts offset from now (ns), line, metadata


@dataclass(frozen=True)
class Case:
    """A push of ``streams`` (label sets, each with its entries) and Loki's verdict."""

    tenant: str | None  # None: the test's own tenant (default limits)
    streams: Callable[[str], list[tuple[dict[str, str], list[Entry]]]]
    refused: list[int] = field(default_factory=list)  # positions Loki refuses, named
    resend: list[int] = field(default_factory=list)  # positions to send again, changed
    unresolved: list[int] | None = None  # positions refused without being named
    setup: Callable[[str], list[tuple[dict[str, str], list[Entry]]]] | None = None
    labels_raw: str | None = None  # a labels text Loki cannot parse (protobuf only)

    def push(self, run: str, now: int, setup: bool = False) -> Push:
        build = self.setup if setup and self.setup else self.streams
        streams = Streams()
        for labels, entries in build(run):
            streams.add(
                labels,
                [now + e[0] for e in entries],
                [e[1].encode() for e in entries],
                [e[2] for e in entries],
                text=self.labels_raw,
            )
        return Push(streams, range(len(streams)), "protobuf")


def _ok(n: int, offset: int = 0) -> list[Entry]:
    return [(offset + i, f"ok {i}", ()) for i in range(n)]


CASES: dict[str, Case] = {
    "line_too_long": Case(
        LIMITS_TENANT,
        lambda run: [({"app": "a", "run": run}, [(0, "ok 0", ()), (1, "y" * 2000, ()),
                                                 (2, "ok 1", ())])],
        refused=[1],
    ),
    "lines_too_long_grouped": Case(
        LIMITS_TENANT,
        lambda run: [({"app": "a", "run": run}, [(0, "y" * 1500, ()), (1, "z" * 1500, ()),
                                                 (2, "ok", ()), (3, "y" * 2500, ())])],
        refused=[0, 1, 3],
    ),
    "too_many_labels": Case(
        LIMITS_TENANT,
        lambda run: [
            ({"app": "b", "run": run, "x": "1", "y": "2", "z": "3"}, _ok(3)),
            ({"app": "a", "run": run}, _ok(2)),
        ],
        refused=[0, 1, 2],
    ),
    "several_streams_several_errors": Case(
        LIMITS_TENANT,
        lambda run: [
            ({"app": "a", "run": run}, [(0, "y" * 2000, ()), (1, "ok", ())]),
            ({"app": "b", "run": run, "x": "1", "y": "2", "z": "3"}, _ok(2)),
            ({"app": "c", "run": run}, [(0, "ok", ()), (1, "q" * 1100, ())]),
        ],
        refused=[0, 2, 3, 5],
    ),
    "too_old": Case(
        LIMITS_TENANT,
        lambda run: [({"app": "a", "run": run}, [(-2 * HOUR_NS, "old", ()),
                                                 (-3 * HOUR_NS, "older", ()),
                                                 (0, "ok", ())])],
        refused=[0, 1],
    ),
    "too_new": Case(
        LIMITS_TENANT,
        lambda run: [({"app": "a", "run": run}, [(0, "ok", ()), (HOUR_NS, "future", ())])],
        refused=[1],
    ),
    "label_value_too_long": Case(
        None,
        lambda run: [({"app": "a", "run": run, "v": "q" * 2100}, _ok(2)),
                     ({"app": "b", "run": run}, _ok(1))],
        refused=[0, 1],
    ),
    "label_name_too_long": Case(
        None,
        lambda run: [({"app": "a", "run": run, "n" * 1100: "x"}, _ok(2)),
                     ({"app": "b", "run": run}, _ok(1))],
        refused=[0, 1],
    ),
    "metadata_too_large": Case(
        LIMITS_TENANT,
        lambda run: [({"app": "a", "run": run}, [(0, "big", (("k", "v" * 200),)),
                                                 (1, "small", (("k", "v"),))])],
        refused=[0],
    ),
    "metadata_too_many": Case(
        LIMITS_TENANT,
        lambda run: [({"app": "a", "run": run}, [(0, "many", (("a", "1"), ("b", "2"), ("c", "3"))),
                                                 (1, "few", (("a", "1"),))])],
        refused=[0],
    ),
    "metadata_disallowed": Case(
        NO_METADATA_TENANT,
        lambda run: [({"app": "a", "run": run}, [(0, "with", (("k", "v"),)), (1, "without", ())]),
                     ({"app": "b", "run": run}, _ok(1))],
        resend=[0],
    ),
    "too_far_behind": Case(
        None,
        lambda run: [({"app": "a", "run": run}, [(-2 * HOUR_NS, "behind 0", ()),
                                                 (-2 * HOUR_NS + 1_500_000_007, "behind 1", ())])],
        refused=[0, 1],
        setup=lambda run: [({"app": "a", "run": run}, _ok(1))],
    ),
    "unparsable_labels": Case(
        None,
        lambda run: [({"app": "a", "run": run}, _ok(3))],
        unresolved=[0, 1, 2],
        labels_raw='{1bad="x"}',
    ),
}

# -- placeholders: the parts of a text that differ between runs ----------------------------

_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_GO_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})? \+0000 UTC")
_TENANT = re.compile(r"user '[^']*'")


def normalize(text: str, run: str) -> str:
    """``text`` with the run label, the times and the tenant replaced by placeholders."""
    text = text.replace(run, "{run}")
    text = _GO_TIME.sub("{go_time}", text)
    text = _RFC3339.sub("{rfc3339}", text)
    return _TENANT.sub("user '{tenant}'", text)


@dataclass(frozen=True)
class Recording:
    """What Loki answered to a case's push built with ``run`` and ``now``."""

    run: str
    now: int
    text: str


def recorded() -> dict[str, Recording]:
    return {name: Recording(**doc) for name, doc in json.loads(FIXTURE.read_text()).items()}


def provoke(url: str, case: Case, tenant: str, run: str, now: int) -> tuple[int, str, Push]:
    """Send the case's push (after its setup push) to a real Loki; (status, text, push)."""
    import requests

    def send(push: Push) -> requests.Response:
        headers = {**push.content_headers, "X-Scope-OrgID": case.tenant or tenant}
        return requests.post(url + "/loki/api/v1/push", data=push.body(), headers=headers,
                             timeout=10)

    if case.setup is not None:
        answer = send(case.push(run, now, setup=True))
        assert answer.status_code == 204, answer.text
    push = case.push(run, now)
    answer = send(push)
    return answer.status_code, answer.text, push


def _record() -> None:  # pragma: no cover - run by hand against the real Loki
    from log_capturer_testkit.loki import RealLoki

    workdir = Path(tempfile.mkdtemp(prefix="loki-cases-"))
    loki = RealLoki(workdir).start()
    try:
        out = {}
        for name, case in CASES.items():
            run = f"rec{calendar.timegm(time.gmtime())}"
            now = time.time_ns()
            status, text, _ = provoke(loki.url, case, "recorder", run, now)
            assert status == 400, (name, status, text)
            out[name] = {"run": run, "now": now, "text": text}
            print(f"{name}: {normalize(text, run)[:200]}")
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    finally:
        loki.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_record())
