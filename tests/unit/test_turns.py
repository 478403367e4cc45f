"""Turn keeping: while connections are waited for, the longest-held streams end first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from log_capturer.monitor.turns import TurnKeeper


@dataclass
class FakeMonitor:
    age: float | None
    yielded: bool = False

    def stream_age(self) -> float | None:
        return self.age

    def yield_turn(self) -> bool:
        self.yielded = True
        return True


class FakePool:
    def __init__(self, waiting: int) -> None:
        self.waiting = waiting

    def stats(self) -> Any:
        return self


def keeper(waiting: int, monitors: list[FakeMonitor]) -> TurnKeeper:
    return TurnKeeper(FakePool(waiting), lambda: monitors, min_turn=2.0)  # type: ignore[arg-type]


def test_nobody_waits_nobody_is_cut() -> None:
    monitors = [FakeMonitor(100.0), FakeMonitor(50.0)]
    assert keeper(0, monitors).check() == 0
    assert not any(m.yielded for m in monitors)


def test_one_cut_per_waiter_oldest_first_and_never_a_fresh_turn() -> None:
    young, old, older = FakeMonitor(1.0), FakeMonitor(5.0), FakeMonitor(9.0)
    idle = FakeMonitor(None)
    monitors = [young, old, older, idle]
    assert keeper(1, monitors).check() == 1
    assert older.yielded and not old.yielded
    assert keeper(5, monitors).check() == 2  # only turns held >= min_turn are cut
    assert old.yielded and not young.yielded and not idle.yielded
