"""Checked times saved with the positions: only once what they prove was delivered.

A checked time C of a stream says every line of the stream stamped before C was read.
Saved, it lets a restart reopen past the stream's history (monitor/resume.py), so it
may be saved only once everything read up to the proof was acknowledged by every sink:
otherwise a crash would make the restart skip an undelivered line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from log_capturer.discovery.container import ContainerInfo
from log_capturer.pipeline.batch import LineBatch
from log_capturer.positions.ledger import Ledger
from log_capturer.positions.marks import ZERO, Mark
from log_capturer.positions.store import PositionFile
from tests.unit.batches import line_batch

INFO = ContainerInfo(id="d" * 64, name="quiet", image="img:1")
S = 1_000_000_000
T0 = 1_795_000_000 * S
STREAMS = ("stdout", "stderr")


def batch(ts_ns: int, seq: int = 1, stream: str = "stdout") -> LineBatch:
    return line_batch(INFO, [(stream, ts_ns, f"line {ts_ns}")], [seq])


def ledger_at(path: Path) -> Ledger:
    ledger = Ledger(str(path))
    ledger.load([])
    assert ledger.begin_reading(INFO, STREAMS, start_now=False) is not None
    return ledger


def saved_checked(path: Path) -> dict[str, int]:
    return PositionFile(path).load().checked.get(INFO.id, {})


def test_a_checked_time_is_saved_only_once_what_was_read_is_delivered(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    # Read up to T0 (queued, not acknowledged), then proven: nothing unseen before T0+5s.
    ledger.note_checked(INFO.id, {"stdout": T0 + 5 * S}, {"stdout": Mark(T0, 1)})
    ledger.save({}, force=True)
    assert saved_checked(path) == {}  # a crash now must not skip the line at T0
    assert ledger.checked_times(INFO.id) == {}
    ledger.acknowledge([batch(T0)])
    assert ledger.dirty
    assert ledger.save({})
    assert saved_checked(path) == {"stdout": T0 + 5 * S}
    assert ledger.checked_times(INFO.id) == {"stdout": T0 + 5 * S}


def test_a_crash_before_delivery_restarts_from_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.acknowledge([batch(T0)])
    ledger.save({})
    # Lines up to T0+1s read and queued, a proof up to T0+9s; the daemon dies before the
    # sinks accept them: the file knows only the delivered mark.
    ledger.note_checked(INFO.id, {"stdout": T0 + 9 * S}, {"stdout": Mark(T0 + S, 1)})
    ledger.save({}, force=True)
    restarted = Ledger(str(path))
    restarted.load([])
    assert restarted.checked_times(INFO.id) == {}
    position = restarted.begin_reading(INFO, STREAMS, start_now=False)
    assert position is not None and position.read["stdout"] == Mark(T0, 1)


def test_a_quiet_stream_is_saved_at_once_when_its_time_passes_its_last_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.acknowledge([batch(T0)])
    ledger.save({})
    # Proven behind its last line (a line received): not worth a save of its own.
    ledger.note_checked(INFO.id, {"stdout": T0 - S}, {"stdout": Mark(T0, 1)})
    assert not ledger.dirty
    # Proven past it (the engine ended a proof read): the file is due.
    ledger.note_checked(INFO.id, {"stdout": T0 + 3 * S}, {"stdout": Mark(T0, 1)})
    assert ledger.dirty
    assert ledger.save({})
    # Further moves of a quiet stream wait for the next save.
    ledger.note_checked(INFO.id, {"stdout": T0 + 60 * S}, {"stdout": Mark(T0, 1)})
    assert not ledger.dirty
    assert saved_checked(path) == {"stdout": T0 + 3 * S}
    ledger.acknowledge([batch(T0 + 61 * S, stream="stderr")])
    ledger.save({})
    assert saved_checked(path) == {"stdout": T0 + 60 * S}


def test_a_stream_that_never_had_a_line_keeps_its_checked_time(tmp_path: Path) -> None:
    # A quiet stderr next to a busy stdout: after a restart it must not be read from the
    # beginning of the log (a full read of the file by the engine) every time.
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.note_checked(INFO.id, {"stderr": T0}, {"stderr": ZERO})
    assert ledger.save({})
    restarted = Ledger(str(path))
    restarted.load([])
    assert restarted.checked_times(INFO.id) == {"stderr": T0}
    position = restarted.begin_reading(INFO, STREAMS, start_now=False)
    assert position is not None and position.read == {"stdout": ZERO, "stderr": ZERO}


def test_of_two_pending_proofs_each_is_saved_when_its_position_is_delivered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.note_checked(INFO.id, {"stdout": T0 + S}, {"stdout": Mark(T0, 1)})
    ledger.note_checked(INFO.id, {"stdout": T0 + 2 * S}, {"stdout": Mark(T0 + S, 1)})
    ledger.note_checked(INFO.id, {"stdout": T0 + 3 * S}, {"stdout": Mark(T0 + 2 * S, 1)})
    ledger.acknowledge([batch(T0)])
    assert ledger.checked_times(INFO.id) == {"stdout": T0 + S}
    ledger.acknowledge([batch(T0 + S)])  # the middle proof was superseded by the newest
    assert ledger.checked_times(INFO.id) == {"stdout": T0 + S}
    ledger.acknowledge([batch(T0 + 2 * S)])
    assert ledger.checked_times(INFO.id) == {"stdout": T0 + 3 * S}
    ledger.note_checked(INFO.id, {"stdout": T0 + 2 * S}, {"stdout": Mark(T0 + 2 * S, 1)})
    assert ledger.checked_times(INFO.id) == {"stdout": T0 + 3 * S}  # never back


def test_an_old_positions_file_without_checked_times_loads(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "sinks": {},
                "containers": {
                    INFO.id: {
                        "name": "quiet",
                        "streams": {"stdout": {"ts": "x", "ts_ns": T0, "count": 2}},
                    }
                },
            }
        )
    )
    ledger = Ledger(str(path))
    ledger.load([])
    assert ledger.checked_times(INFO.id) == {}
    assert ledger.delivered(INFO.id) == {"stdout": Mark(T0, 2)}


def test_the_file_round_trips_checked_times_readably(tmp_path: Path) -> None:
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.acknowledge([batch(T0, 2)])
    ledger.note_checked(INFO.id, {"stdout": T0 + S}, {"stdout": Mark(T0, 2)})
    ledger.save({})
    streams = json.loads(path.read_text())["containers"][INFO.id]["streams"]
    assert streams["stdout"]["checked_ns"] == T0 + S
    assert streams["stdout"]["checked"].endswith("Z")
    assert streams["stdout"]["ts_ns"] == T0 and streams["stdout"]["count"] == 2
    assert "checked_ns" not in streams.get("stderr", {})


def test_a_checked_time_in_the_future_is_not_trusted(tmp_path: Path) -> None:
    # The wall clock was set back while the daemon was down: lines the engine stamps
    # now may be before the saved time, and since must not skip them.
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.acknowledge([batch(T0)])
    future = time.time_ns() + 3600 * S
    ledger.note_checked(INFO.id, {"stdout": future}, {"stdout": Mark(T0, 1)})
    ledger.save({})
    assert saved_checked(path) == {"stdout": future}
    restarted = Ledger(str(path))
    restarted.load([])
    assert restarted.checked_times(INFO.id) == {}


def test_a_proof_of_both_streams_is_saved_for_both_once_both_are_delivered(
    tmp_path: Path,
) -> None:
    # stderr has nothing pending, stdout has: neither time runs ahead of the other (after
    # a crash a quiet stderr far ahead would make the next start read stdout alone).
    path = tmp_path / "positions.json"
    ledger = ledger_at(path)
    ledger.acknowledge([batch(T0 - S, stream="stderr")])
    ledger.note_checked(
        INFO.id,
        {"stdout": T0 + S, "stderr": T0 + S},
        {"stdout": Mark(T0, 1), "stderr": Mark(T0 - S, 1)},
    )
    assert ledger.checked_times(INFO.id) == {}
    ledger.acknowledge([batch(T0)])
    assert ledger.checked_times(INFO.id) == {"stdout": T0 + S, "stderr": T0 + S}
