"""The settling of a refused payload (log_capturer/sinks/network/bisection.py), driven by a
scripted server: which parts are sent, what is stored, what becomes a dead letter."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

from log_capturer.sinks.network.bisection import Bisection
from log_capturer.sinks.network.outcomes import ACCEPTED, Accepted, Refused


@dataclass
class Entries:
    """A payload of numbered entries."""

    ids: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def content_headers(self) -> Mapping[str, str]:
        return {}

    def body(self) -> bytes:
        return b""

    def subset(self, positions: Sequence[int]) -> Self:
        return type(self)([self.ids[p] for p in positions])

    def merge(self, others: Sequence[Self]) -> list[Self]:
        return [type(self)(self.ids + [i for other in others for i in other.ids])]

    def timestamps_ns(self) -> Sequence[int]:
        return self.ids

    def dead_letters(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return [{"id": self.ids[p]} for p in positions]

    def to_spool(self) -> bytes:
        return b""


Server = Callable[[Entries], Accepted | Refused[Entries]]


def settle(payload: Entries, server: Server) -> tuple[list[int], list[int], list[list[int]]]:
    """Send ``payload`` and then what the bisection asks for: (stored ids in the order they
    were stored, dead-lettered ids, the parts sent)."""
    stored: list[int] = []
    sent = [payload.ids]
    first = server(payload)
    assert isinstance(first, Refused)
    plan = Bisection(payload, first)
    while (part := plan.next_part()) is not None:
        sent.append(part.ids)
        outcome = server(part)
        if outcome is ACCEPTED:
            stored += part.ids
        plan.answered(outcome)
    plan.finish()
    dead = [item.payload.ids[p] for item in plan.dead for p in item.positions]
    return stored, dead, sent


def too_large_over(limit: int, too_big: frozenset[int] = frozenset()) -> Server:
    """A server that refuses any request of more than ``limit`` entries, or holding an
    entry of ``too_big``, for its size (as Loki's 'received message larger than max')."""

    def answer(part: Entries) -> Accepted | Refused[Entries]:
        if len(part) > limit or too_big.intersection(part.ids):
            return Refused(500, "grpc: received message larger than max",
                           split=range(len(part)))
        return ACCEPTED

    return answer


def test_a_request_refused_for_its_size_is_stored_whole_in_halves_and_nothing_is_blamed() -> None:
    payload = Entries(list(range(19220)))
    stored, dead, sent = settle(payload, too_large_over(16000))  # one size refusal, two halves
    assert stored == payload.ids and dead == []
    assert [len(part) for part in sent] == [19220, 9610, 9610]


def test_halves_still_too_large_are_halved_again_in_order() -> None:
    payload = Entries(list(range(1000)))
    stored, dead, sent = settle(payload, too_large_over(100))
    assert stored == payload.ids and dead == []
    assert len(sent) == 1 + 2 + 4 + 8 + 16  # halved until a part fits: 1000/16 <= 100


def test_an_entry_too_large_alone_is_the_only_dead_letter() -> None:
    payload = Entries(list(range(64)))
    stored, dead, _ = settle(payload, too_large_over(1000, frozenset({37})))
    assert dead == [37]
    assert stored == [i for i in payload.ids if i != 37]


def test_an_unnamed_refused_entry_is_still_found_by_bisection() -> None:
    payload = Entries(list(range(64)))

    def refuses_13(part: Entries) -> Accepted | Refused[Entries]:
        if 13 in part.ids:
            return Refused(400, "bad entry", unresolved=range(len(part)))
        return ACCEPTED

    stored, dead, _ = settle(payload, refuses_13)
    assert dead == [13] and sorted(stored) == [i for i in payload.ids if i != 13]
