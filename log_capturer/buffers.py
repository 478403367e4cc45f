"""What the monitors hold in memory besides the queue, counted in bytes against one total.

Per container the daemon holds lines it cannot queue yet or must remember:

* ``tail_hold``: the lines of a tail read held back until the read is proven gap-free
  (resume.py). They grow with a backlog: a tail goes up to ``resume_tail_max_lines``
  lines, and at the end of a busy run many containers far behind are read at once (the
  500-container drain peak of benchmarks/README.md). Bounded per monitor by
  ``container_monitor.tail_hold_max_bytes`` and in total by
  ``container_monitor.buffer_budget``: a hold that does not fit is given up and the
  read done again with a plain ``since``, which holds nothing (a line is never dropped
  or repeated: the held lines were not delivered, and the plain read starts from the
  same mark).
* ``recent``: each stream's recent lines, kept to recognise a rotation's repeats
  (admit.py: at most 1,024 lines and 256 KiB of messages per stream).
* ``partial``: a line the engine split at 16 KiB, while its pieces arrive (at most
  ``max_line_bytes`` per stream; dropped and read again whole if a window ends first).
* ``multiline``: the records the multiline stage holds until their group ends (at most
  its ``max_bytes`` and ``max_lines`` per container stream).

The last three are bounded per stream by their own limits and cannot be given up
without losing or repeating a line, so they are counted, not refused (and not charged
to the total: recent lines of a thousand busy streams would otherwise leave no room
for the held tails, and every reopen would become a plain ``since`` read, which makes
the engine read the log file from its start). Every figure is a message's bytes plus
:data:`LINE_OVERHEAD` per line, and is on /metrics as
``log_capturer_buffered_bytes{kind}``.
"""

from __future__ import annotations

import threading
from enum import StrEnum

LINE_OVERHEAD = 120
"""Bytes a line held as columns costs besides its message: its timestamp's bytes object
(64), the message's object header, and its slots in the column lists (tracemalloc: 112
for a recent line, 120 for a held one, whatever the message's length)."""


class Kind(StrEnum):
    """What the bytes are held for (the metric's ``kind`` label)."""

    TAIL_HOLD = "tail_hold"
    RECENT = "recent"
    PARTIAL = "partial"
    MULTILINE = "multiline"


def lines_cost(lines: int, message_bytes: int) -> int:
    """What ``lines`` lines with ``message_bytes`` of messages cost held."""
    return message_bytes + LINE_OVERHEAD * lines


class BufferBudget:
    """Bytes held by kind; a kind that reserves (:meth:`try_reserve`: the held tails)
    gets at most ``total`` bytes. Thread-safe; every monitor thread and the dispatcher
    report to the same one."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._lock = threading.Lock()
        self._held = dict.fromkeys(Kind, 0)
        self.refused = 0  # reservations refused because the total was reached

    def try_reserve(self, kind: Kind, size: int) -> bool:
        """Take ``size`` bytes for ``kind`` if its total allows; False (nothing taken) if not."""
        with self._lock:
            if self._held[kind] + size > self.total:
                self.refused += 1
                return False
            self._held[kind] += size
            return True

    def add(self, kind: Kind, size: int) -> None:
        """Count ``size`` more bytes (negative: fewer) of a kind bounded elsewhere."""
        if size:
            with self._lock:
                self._held[kind] += size

    def release(self, kind: Kind, size: int) -> None:
        self.add(kind, -size)

    def held(self) -> dict[Kind, int]:
        """Bytes held now, by kind."""
        with self._lock:
            return dict(self._held)
