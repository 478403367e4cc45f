"""Loki's answers read without a Loki: the 400 texts recorded from the real v3.4.6
(tests/fixtures/loki_400.json), and the bound on requests when a 400 names nothing."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from log_capturer.sinks.loki import LokiSinkConfig
from log_capturer.sinks.loki.encode import Push, Streams
from log_capturer.sinks.loki.responses import classify
from log_capturer.sinks.network.bisection import max_requests
from log_capturer.sinks.network.delivery import Delivery
from log_capturer.sinks.network.loki_format import label_text, parse_label_text
from log_capturer.sinks.network.outcomes import ACCEPTED, Accepted, Refused, Transient
from tests.loki_cases import CASES, recorded


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_recorded_400_names_exactly_the_refused_entries(name: str) -> None:
    case, rec = CASES[name], recorded()[name]
    push = case.push(rec.run, rec.now)
    disallowed: list[str] = []
    outcome = classify(400, rec.text, {}, push, disallowed.append)
    assert isinstance(outcome, Refused)
    named = sorted(p for positions, _ in outcome.named for p in positions)
    assert named == case.refused
    assert list(outcome.unresolved) == (case.unresolved or [])
    if case.resend:
        assert outcome.resend is not None and not outcome.resend.has_metadata
        assert [push.streams.lines[i] for i in outcome.resend.positions] == [
            push.streams.lines[p] for p in case.resend
        ]
        assert len(disallowed) == 1
    else:
        assert outcome.resend is None and not disallowed
    for _positions, reason in outcome.named:  # each group carries its own line of the text
        assert reason in rec.text and "errors like" not in reason


def test_a_400_naming_a_stream_in_an_unknown_way_leaves_only_that_stream_in_doubt() -> None:
    streams = Streams()
    streams.add({"app": "a"}, [1, 2], [b"x", b"y"], [(), ()])
    streams.add({"app": "b"}, [1, 2, 3], [b"x", b"y", b"z"], [(), (), ()])
    push = Push(streams, range(5), "protobuf")
    text = "stream '{app=\"b\", service_name=\"b\"}' has something new: 'boom'\n"
    outcome = classify(400, text, {}, push)
    assert isinstance(outcome, Refused)
    assert list(outcome.unresolved) == [2, 3, 4] and not outcome.named


@pytest.mark.parametrize(
    ("status", "kind"),
    [(204, Accepted), (429, Transient), (503, Transient), (500, Transient), (408, Transient),
     (401, Refused), (404, Refused), (422, Refused), (413, Refused)],
)
def test_statuses(status: int, kind: type) -> None:
    streams = Streams()
    streams.add({"app": "a"}, [1], [b"x"], [()])
    assert isinstance(classify(status, "boom", {}, Push(streams, range(1), "json")), kind)


def test_a_too_large_5xx_is_split_not_retried() -> None:
    streams = Streams()
    streams.add({"app": "a"}, [1, 2], [b"x", b"y"], [(), ()])
    text = "rpc error: code = ResourceExhausted desc = grpc: received message larger than max"
    outcome = classify(500, text, {}, Push(streams, range(2), "json"))
    assert isinstance(outcome, Refused) and list(outcome.split) == [0, 1]
    assert not outcome.unresolved and not outcome.named  # no entry is to blame


def test_retry_after_is_read_and_capped() -> None:
    streams = Streams()
    streams.add({"app": "a"}, [1], [b"x"], [()])
    push = Push(streams, range(1), "json")
    outcome = classify(429, "slow down", {"Retry-After": "7"}, push)
    assert isinstance(outcome, Transient) and outcome.retry_after == 7.0
    outcome = classify(503, "", {"Retry-After": "100000"}, push)
    assert isinstance(outcome, Transient) and outcome.retry_after == 300.0


def test_label_text_round_trips_what_go_escapes() -> None:
    labels = {"a": 'quo"te \\ back\nnl é {},=', "b": "\t\x01", "c": ""}
    assert parse_label_text(label_text(labels)) == labels
    # Go's strconv.Quote spelling, as in Loki's messages
    assert parse_label_text('{a="x\\x01\\u00e9\\a", b="\\101"}') == {"a": "x\x01é\a", "b": "A"}
    assert parse_label_text("{a=1}") is None and parse_label_text("nope") is None


# -- the bound on requests per refused batch -----------------------------------------------


class _Scripted(Delivery[Push]):
    """A Delivery whose server is a function: refuses the ``bad`` entries with a text that
    names nothing (as a 400 of a newer Loki might), stores the rest; counts requests."""

    def __init__(self, bad: set[str], tmp: Path) -> None:
        class Endpoint:
            name = "scripted"
            url = "http://127.0.0.1:9"
            headers: Mapping[str, str] = {}

            def classify(self, status: int, text: str, headers: Mapping[str, str],
                         payload: Push) -> Any:
                raise AssertionError("not used")

            def from_spool(self, data: bytes) -> Push:
                return Push.from_spool(data)

        config = LokiSinkConfig(spool_max_bytes=0)
        super().__init__(Endpoint(), config, spool_dir=str(tmp / "spool"),
                         dead_letter_path=str(tmp / "dead.jsonl"))
        self.bad = bad
        self.requests = 0
        self.stored: list[str] = []
        self.lock = threading.Lock()

    def _post(self, payload: Push) -> Accepted | Refused[Push]:
        self.requests += 1
        lines = [payload.streams.lines[i].decode() for i in payload.positions]
        self.stored += [line for line in lines if line not in self.bad]
        if any(line in self.bad for line in lines):
            return Refused(400, "a reason this sink cannot read", unresolved=range(len(lines)))
        return ACCEPTED


def _push(n: int) -> Push:
    streams = Streams()
    streams.add({"app": "a"}, list(range(n)), [f"line {i}".encode() for i in range(n)], [()] * n)
    return Push(streams, range(n), "protobuf")


def _dead(tmp: Path) -> list[dict[str, Any]]:
    import json

    path = tmp / "dead.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("n", [1, 2, 3, 21, 50, 64, 1000, 10_000])
def test_one_unnamed_bad_entry_is_found_within_the_bound(tmp_path: Path, n: int) -> None:
    assert max_requests(n) == 3 + math.ceil(math.log2(n))
    for bad_at in sorted({0, n // 2, n - 1}):
        out = tmp_path / f"{n}-{bad_at}"
        delivery = _Scripted({f"line {bad_at}"}, out)
        try:
            delivery.deliver([_push(n)])
        finally:
            delivery.close()
        assert delivery.requests <= max_requests(n)
        dead = _dead(out)
        assert [d["line"] for d in dead] == [f"line {bad_at}"]
        assert not any(d.get("unresolved") for d in dead)
        assert set(delivery.stored) == {f"line {i}" for i in range(n)} - {f"line {bad_at}"}


@pytest.mark.parametrize("seed", range(20))
def test_many_unnamed_bad_entries_never_exceed_the_bound_and_nothing_is_lost(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    n = rng.choice([5, 37, 200, 1500])
    bad = {f"line {i}" for i in rng.sample(range(n), rng.randint(1, max(1, n // 10)))}
    delivery = _Scripted(bad, tmp_path)
    try:
        delivery.deliver([_push(n)])
    finally:
        delivery.close()
    assert delivery.requests <= max_requests(n)
    dead = _dead(tmp_path)
    dead_lines = {d["line"] for d in dead}
    assert bad <= dead_lines  # every refused entry is in the dead-letter file
    sure = {d["line"] for d in dead if not d.get("unresolved")}
    assert sure <= bad  # entries dead-lettered as refused really were
    everything = {f"line {i}" for i in range(n)}
    assert everything <= set(delivery.stored) | dead_lines  # stored or dead-lettered
