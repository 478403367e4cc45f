"""Memory probe for a daemon under a soak or a benchmark (an investigation tool, never in
the image): where its resident memory is, sampled from inside the process.

Load it with the daemon's environment (the soak: ``--daemon-env``):
``PYTHONPATH=benchmarks/memprobe MEMPROBE_OUT=/tmp/probe.jsonl``. Python imports this
``sitecustomize`` at start; in a ``log_capturer`` process it starts a thread that every
``MEMPROBE_INTERVAL`` seconds (30) appends one JSON line to ``MEMPROBE_OUT``:

* ``rss_kb`` and ``smaps``: resident KiB of ``/proc/self/smaps`` by mapping kind
  (``brk``: glibc's main heap; ``arena64``: glibc's per-thread arenas, mappings aligned
  on 64 MiB; ``stack``: 8 MiB thread stacks; ``anon>=1M``/``anon1M``: other anonymous
  mappings, pymalloc's 1 MiB arenas among them; ``file``: code);
* ``mallinfo``: glibc's ``mallinfo2()`` (``arena``: heap bytes, ``uordblks``: in use,
  ``fordblks``: free inside the heaps, ``hblkhd``: in their own mappings);
* ``pymalloc``: from ``sys._debugmallocstats()`` (arenas, bytes in used blocks);
* ``gc_objects`` and ``blocks`` (``sys.getallocatedblocks()``: bytes objects included,
  which the gc does not track);
* ``state``: what the daemon keeps per container (ledger entries, selector verdicts,
  recent lines, the positions file's size, metric samples).

``MEMPROBE_TRACE=1`` starts ``tracemalloc`` at once and adds to each sample the ten
source lines whose allocations grew most since the sample at ``MEMPROBE_TRACE_FROM`` s
(180; ``grown``: what Python allocated, bytes objects and buffers included, not C
libraries; slows the daemon down).
``MEMPROBE_MAPS=1`` adds every anonymous mapping of 64 KiB resident or more (``maps``)
and glibc's ``malloc_info`` per arena (``arenas``: free bytes, heap size).
``MEMPROBE_RECENT_LINES=N`` keeps N recent lines a stream instead of 1,024 (an experiment).
``MEMPROBE_TRIM=1`` calls ``malloc_trim(0)`` after each sample (``rss_kb_after_trim``);
``MEMPROBE_STACK=N`` sets ``threading.stack_size(N)`` before any thread starts.
``python benchmarks/memprobe/sitecustomize.py FILE...`` prints the samples as a table.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
from typing import Any

OUT = os.environ.get("MEMPROBE_OUT", "")
STACK = int(os.environ.get("MEMPROBE_STACK", "0") or 0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo() -> dict[str, int]:
    fn = ctypes.CDLL(None).mallinfo2
    fn.restype = _MallInfo2
    info = fn()
    return {field[0]: int(getattr(info, field[0])) for field in _MallInfo2._fields_}


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _kind(start: int, size: int, perms: str, path: str) -> str:
    if path == "[heap]":
        return "brk"
    if path.startswith("["):
        return path
    if path:
        return "file"
    if perms.startswith("---"):
        return "guard"
    if start % (64 << 20) == 0:
        return "arena64"
    if size == 1 << 20:
        return "anon1M"
    if size in (8 << 20, (8 << 20) + 4096) or (STACK and size in (STACK, STACK + 4096)):
        return "stack"
    return "anon>=1M" if size >= 1 << 20 else "anon<1M"


def all_mappings() -> list[list[Any]]:
    """Every mapping of ``/proc/self/smaps``: [start, size KiB, rss KiB, kind]."""
    out: list[list[Any]] = []
    with open("/proc/self/smaps") as fh:
        for line in fh:
            parts = line.split()
            if not parts[0].endswith(":"):  # a mapping's first line
                start, end = (int(x, 16) for x in parts[0].split("-"))
                path = parts[5] if len(parts) > 5 else ""
                kind = _kind(start, end - start, parts[1], path)
                out.append([hex(start), (end - start) >> 10, 0, kind])
            elif parts[0] == "Rss:" and out:
                out[-1][2] = int(parts[1])
    return out


def smaps(maps: list[list[Any]]) -> dict[str, dict[str, int]]:
    """Resident KiB of ``maps`` (:func:`all_mappings`) by mapping kind."""
    groups: dict[str, list[int]] = {}
    for _, _, rss, kind in maps:
        current = groups.setdefault(kind, [0, 0])
        current[0] += 1
        current[1] += rss
    return {kind: {"n": n, "rss_kb": kb} for kind, (n, kb) in groups.items()}


_PYMALLOC = {
    "arenas_current": r"# arenas allocated current\s*=\s*([\d,]+)",
    "arenas_highwater": r"# arenas highwater mark\s*=\s*([\d,]+)",
    "allocated_blocks_bytes": r"# bytes in allocated blocks\s*=\s*([\d,]+)",
    "available_blocks_bytes": r"# bytes in available blocks\s*=\s*([\d,]+)",
}


def pymalloc() -> dict[str, int]:
    """Figures of ``sys._debugmallocstats()``, which writes to the C stderr (fd 2)."""
    fd, path = tempfile.mkstemp()
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(fd, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    with open(path) as fh:
        text = fh.read()
    os.unlink(path)
    out = {}
    for key, pattern in _PYMALLOC.items():
        found = re.search(pattern, text)
        if found:
            out[key] = int(found.group(1).replace(",", ""))
    return out


def state() -> dict[str, Any]:
    """What the running daemon keeps per container (found through the gc)."""
    from prometheus_client import REGISTRY

    from log_capturer.supervisor import Supervisor

    found = [o for o in gc.get_objects() if type(o) is Supervisor]
    if not found:
        return {}
    sup = found[0]
    monitors = list(sup.monitors.values())
    recent = [r for m in monitors for r in m._recent.values()]
    out: dict[str, Any] = {
        "ledger": len(sup.ledger.container_ids()),
        "verdicts": len(sup.selector._verdicts),
        "monitors": len(monitors),
        "recent_lines": sum(len(r) for r in recent),
        "recent_bytes": sum(r.size for r in recent),
        "queue_lines": len(sup.queue),
        "buffered": {str(k): v for k, v in sup.buffers.held().items()},
        "metric_samples": sum(len(m.samples) for m in REGISTRY.collect()),
    }
    with contextlib.suppress(OSError):
        out["positions_file_bytes"] = os.path.getsize(sup.config.positions.path)
    return out


def arenas() -> list[dict[str, int]]:
    """glibc's ``malloc_info`` per arena: free bytes (fast bins, the rest), heap size."""
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    fd, path = tempfile.mkstemp()
    os.close(fd)
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    with open(path) as fh:
        text = fh.read()
    os.unlink(path)
    out = []
    for nr, body in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
        heap = {"nr": int(nr)}
        for kind, size in re.findall(r'<total type="(\w+)" count="\d+" size="(\d+)"', body):
            heap[kind] = int(size)
        for kind, size in re.findall(r'<system type="(\w+)" size="(\d+)"', body):
            heap["system_" + kind] = int(size)
        out.append(heap)
    return out


def sample(trim: bool) -> dict[str, Any]:
    gc.collect()
    record: dict[str, Any] = {"rss_kb": rss_kb(), "threads": threading.active_count()}
    maps = all_mappings()
    record["smaps"] = smaps(maps)
    record["mallinfo"] = mallinfo()
    record["pymalloc"] = pymalloc()
    record["gc_objects"] = len(gc.get_objects())
    record["blocks"] = sys.getallocatedblocks()
    record["state"] = state()
    if os.environ.get("MEMPROBE_MAPS") == "1":
        # every anonymous mapping holding 64 KiB or more
        record["maps"] = [m for m in maps if m[3] != "file" and m[2] >= 64]
        record["arenas"] = arenas()
    if trim:
        ctypes.CDLL(None).malloc_trim(0)
        record["rss_kb_after_trim"] = rss_kb()
    return record


def _grown(base: list[Any]) -> list[Any]:
    import tracemalloc

    if not base:
        base.append(tracemalloc.take_snapshot())
        return []
    stats = tracemalloc.take_snapshot().compare_to(base[0], "lineno")
    return [[str(s.traceback), s.size_diff, s.count_diff] for s in stats[:10]]


def _loop(interval: float, trim: bool) -> None:
    started = time.monotonic()
    trace_from = float(os.environ.get("MEMPROBE_TRACE_FROM", "180"))
    base: list[Any] = []
    while True:
        time.sleep(interval)
        try:
            now = time.monotonic() - started
            record = {"t": round(now, 1), **sample(trim)}
            if os.environ.get("MEMPROBE_TRACE") == "1" and now >= trace_from:
                record["grown"] = _grown(base)
        except Exception as exc:  # a probe must not take the daemon down
            record = {"error": repr(exc)}
        with open(OUT, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def report(paths: list[str]) -> None:
    """The samples of probe files as a table (MB)."""
    mb = 1 / 1024
    head = (
        "     t    rss  trim   brk arena64 anon1M+ stack | pyArenas pyUsed"
        " | heap  used  free mmap"
    )
    for path in paths:
        print(f"== {path}\n{head}")
        with open(path) as fh:
            for line in fh:
                r = json.loads(line)
                if "error" in r:
                    print(r)
                    continue
                kb = {k: v["rss_kb"] for k, v in r["smaps"].items()}
                mi = {k: v / 2**20 for k, v in r["mallinfo"].items()}
                py = r["pymalloc"]
                print(
                    f"{r['t']:6.0f} {r['rss_kb'] * mb:6.1f}"
                    f" {r.get('rss_kb_after_trim', 0) * mb:5.1f}"
                    f" {kb.get('brk', 0) * mb:5.1f} {kb.get('arena64', 0) * mb:7.1f}"
                    f" {(kb.get('anon>=1M', 0) + kb.get('anon1M', 0)) * mb:6.1f}"
                    f" {kb.get('stack', 0) * mb:5.1f} | {py.get('arenas_current', 0):8d}"
                    f" {py.get('allocated_blocks_bytes', 0) / 2**20:6.1f} | {mi['arena']:5.1f}"
                    f" {mi['uordblks']:5.1f} {mi['fordblks']:5.1f} {mi['hblkhd']:4.1f}"
                    f"  {json.dumps(r.get('state', {}))}"
                )


if __name__ == "__main__":
    report(sys.argv[1:])
elif OUT and "log_capturer" in " ".join(sys.orig_argv):
    if STACK:
        threading.stack_size(STACK)
    if os.environ.get("MEMPROBE_RECENT_LINES"):  # an experiment: fewer recent lines a stream
        from log_capturer.monitor import admit

        admit.RecentLines.__init__.__defaults__ = (
            admit.RECENT_BYTES,
            int(os.environ["MEMPROBE_RECENT_LINES"]),
            None,
        )
    if os.environ.get("MEMPROBE_TRACE") == "1":
        import tracemalloc

        tracemalloc.start()
    interval = float(os.environ.get("MEMPROBE_INTERVAL", "30"))
    trim = os.environ.get("MEMPROBE_TRIM") == "1"
    threading.Thread(target=_loop, args=(interval, trim), name="memprobe", daemon=True).start()
