"""Where a line's delivery time goes: the daemon side of ``live_throughput.py --trace``.

Python imports ``sitecustomize`` at start from its path; the benchmark puts this folder on
the daemon's ``PYTHONPATH`` and names an output file in ``LOG_CAPTURER_LAG_TRACE``. Without
that variable nothing happens. It wraps, in whichever ``log_capturer`` tree the daemon runs
(so the code before a change is traced alike):

* ``LogStream.batches``: a socket read's lines are decoded (read);
* ``BatchQueue.put`` / ``get``: queued (put), taken by the dispatcher (get), and how many
  lines were queued when a small batch was put (ahead);
* ``FileSink.write``: its start and end (written);
* ``Dispatcher.checkpoint``: its start and length.

For each read of at most ``SMALL`` lines every line is followed, else its first and last
(lines are keyed by their Docker timestamp). One ``L`` row per followed line at its write
(container, lines of its batch, lines of the delivery, ts, read, put, get, write start,
write end, ahead; epoch seconds, 0 or -1 when not seen) and one ``C`` row per checkpoint,
appended to the file every 2,000 rows and at exit. It costs CPU: use it to see where the
time goes, not for the headline figures. ``log_capturer_testkit.lagtrace`` reads the file.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

SMALL = 8
_OUT = os.environ.get("LOG_CAPTURER_LAG_TRACE", "")


def _install(out: str) -> None:
    from log_capturer.docker import stream
    from log_capturer.pipeline import dispatcher, queue
    from log_capturer.sinks import file
    from log_capturer.timestamps import parse_docker_ts

    read: dict[bytes, float] = {}
    put: dict[bytes, float] = {}
    got: dict[bytes, float] = {}
    ahead: dict[bytes, int] = {}
    rows: list[str] = []
    lock = threading.Lock()

    def flush() -> None:
        with lock:
            text, rows[:] = "".join(rows), []
        if text:
            with open(out, "a") as fh:
                fh.write(text)

    atexit.register(flush)

    def of_lines(lines: Any) -> Sequence[bytes]:
        # ``Lines.stamps`` (``Lines.ts`` in trees before the rename)
        found = getattr(lines, "stamps", None)
        return found if found is not None else lines.ts  # type: ignore[no-any-return]

    def stamps(batch: Any) -> Sequence[bytes]:
        lines = getattr(batch, "lines", None)
        if lines is not None:
            return of_lines(lines)
        return [t.encode() for t in batch.ts_texts()]

    def followed(ts: Sequence[bytes]) -> Sequence[bytes]:
        return ts if len(ts) <= SMALL else (ts[0], ts[-1])

    batches = stream.LogStream.batches

    def traced_batches(self: Any, flush_at_eof: bool = False) -> Iterator[Any]:
        for lines in batches(self, flush_at_eof):
            now = time.time()
            for stamp in followed(of_lines(lines)):
                read.setdefault(stamp, now)
            yield lines

    queue_put = queue.BatchQueue.put

    def traced_put(self: Any, batch: Any, stop: threading.Event) -> bool:
        keys = followed(stamps(batch))
        if len(batch) <= SMALL:
            queued = len(self)
            for stamp in keys:
                ahead.setdefault(stamp, queued)
        ok = queue_put(self, batch, stop)
        if ok:
            now = time.time()
            for stamp in keys:
                put.setdefault(stamp, now)
        return ok

    queue_get = queue.BatchQueue.get

    def traced_get(self: Any, max_records: int, max_wait: float, timeout: float) -> Any:
        out = queue_get(self, max_records, max_wait, timeout)
        now = time.time()
        for batch in out:
            for stamp in followed(stamps(batch)):
                got.setdefault(stamp, now)
        return out

    checkpoint = dispatcher.Dispatcher.checkpoint

    def traced_checkpoint(self: Any, force: bool = False) -> bool:
        started = time.time()
        ok = checkpoint(self, force)
        with lock:
            rows.append(f"C {started:.6f} {time.time() - started:.6f}\n")
        return ok

    write = file.FileSink.write

    def traced_write(self: Any, batches: list[Any]) -> None:
        started = time.time()
        write(self, batches)
        ended = time.time()
        delivery = sum(map(len, batches))
        new: list[str] = []
        for batch in batches:
            ts = stamps(batch)
            name = batch.container.name
            for stamp in followed(ts):
                new.append(
                    f"L {name} {len(ts)} {delivery} {parse_docker_ts(stamp) / 1e9:.6f} "
                    f"{read.pop(stamp, 0.0):.6f} {put.pop(stamp, 0.0):.6f} "
                    f"{got.pop(stamp, 0.0):.6f} {started:.6f} {ended:.6f} "
                    f"{ahead.pop(stamp, -1)}\n"
                )
        with lock:
            rows.extend(new)
            full = len(rows) >= 2000
        if full:
            flush()

    stream.LogStream.batches = traced_batches  # type: ignore[method-assign]
    queue.BatchQueue.put = traced_put  # type: ignore[method-assign]
    queue.BatchQueue.get = traced_get  # type: ignore[method-assign]
    dispatcher.Dispatcher.checkpoint = traced_checkpoint  # type: ignore[method-assign]
    file.FileSink.write = traced_write  # type: ignore[method-assign]


if _OUT:
    _install(_OUT)
