"""From a socket read's lines to a batch of new lines: per-stream dedup, marks, counts.

Two things make the engine send a line again, and both are dropped here, per stream:

* ``since`` is inclusive: a window reopened at a mark gets the lines at the mark's
  timestamp again (and, for a tail read, a little before it). They come first, in file
  order, and the mark's ``(ts, count)`` says how many to drop.
* A followed json-file stream repeats lines when the file rotates (Docker 20.10: the
  last 1 to 356 lines sent, at most rotations, same bytes and timestamps; measured with
  benchmarks/rotation_repeats.py). Within one stream the engine's file order is
  timestamp order, so such a repeat comes at or behind the newest timestamp (a repeat of
  the last line alone does not even step back); a line there that equals one of the
  stream's recent lines (kept in :class:`RecentLines`, across windows), as often as it
  was delivered, is a repeat. Any other line there is new (a clock that went back, or
  a second line at the newest nanosecond) and is delivered. Two real writes of the
  same bytes at the same nanosecond cannot be told from a repeat: the second is taken
  for one (none in 100,000 lines written flat out here).

Engines whose timestamps are whole seconds (Podman 4) stamp many lines alike, and a
log repeating a line within a second is common: there a line at the newest timestamp is
always new (``whole_seconds``), and only a step back is checked for repeats. (Podman's
``k8s-file`` log does not rotate by default; a repeat of the newest second's lines
at a rotation would be delivered twice.)

A batch whose lines of a stream are in strictly increasing time and all new (a
window's reads after its first: nearly every batch) is admitted with a handful of
C-level passes; any other goes line by line through the same rules.
"""

from __future__ import annotations

from array import array
from collections import Counter
from itertools import accumulate, compress, islice, repeat
from operator import countOf, eq, lt

from ..buffers import BufferBudget, Kind
from ..discovery.container import ContainerInfo
from ..docker.lines import TS_BYTES, Lines
from ..pipeline.batch import LineBatch
from ..positions.marks import Mark, seqs_of
from ..timestamps import format_rfc3339_ns, parse_docker_ts

RECENT_LINES = 1024
"""Lines of each stream kept to recognise a rotation's repeats: the engine re-sends at
most 356 (measured, see tests/unit/test_rotation_repeats.py), so 1,024 leave a margin of
almost 3x."""

RECENT_BYTES = 256 * 1024
"""Message bytes of those lines at most (the worst repeat measured: 70 KB of 1 KB lines);
the newest line is kept whatever its size."""

RECENT_LINE_COST = TS_BYTES + 4
"""What a recent line costs besides its message: its timestamp and its length."""


class RecentLines:
    """The latest lines admitted in one stream, oldest first, packed.

    Bounded by ``max_lines`` and ``budget`` (message bytes), trimmed from the oldest
    when either is exceeded by a quarter (so a trim, a move of the buffers, is paid
    once per quarter of the bound, not at every read). The lines are copied into two
    buffers of their own: their canonical timestamps (TS_BYTES each) and their messages
    one after the other, with each message's length, a third of what keeping each line's
    two bytes objects costs (a slow stream fills its bound over many minutes, and a
    soak's RSS grew by that for as long; benchmarks/README.md, "Memory"). Only a read
    with lines at or behind the stream's newest timestamp unpacks them (:meth:`counts`).
    """

    __slots__ = ("_buffers", "_lengths", "_messages", "_size", "_stamps", "budget", "max_lines")

    def __init__(
        self,
        budget: int = RECENT_BYTES,
        max_lines: int = RECENT_LINES,
        buffers: BufferBudget | None = None,
    ) -> None:
        self.budget = budget
        self.max_lines = max_lines
        self._stamps = bytearray()  # TS_BYTES per line
        self._messages = bytearray()  # the messages, one after the other
        self._lengths = array("I")  # each message's length
        self._size = 0  # == len(self._messages)
        self._buffers = buffers  # counts what is kept (kind "recent"), if given

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def size(self) -> int:
        """Message bytes kept."""
        return self._size

    @property
    def cost(self) -> int:
        """Bytes kept: messages, timestamps and lengths."""
        return self._size + RECENT_LINE_COST * len(self._lengths)

    def add(self, ts: list[bytes], messages: list[bytes], size: int) -> None:
        count = len(ts)
        if count > self.max_lines:  # only the newest can be kept
            ts = ts[-self.max_lines :]
            messages = messages[-self.max_lines :]
            size = sum(map(len, messages))
            count = self.max_lines
        if count == 1:
            stamps = ts[0]
            self._messages += messages[0]
            self._lengths.append(len(messages[0]))
        else:
            stamps = b"".join(ts)
            self._messages += b"".join(messages)
            self._lengths.extend(map(len, messages))
        if len(stamps) != TS_BYTES * count:  # not canonical (never from the decoders)
            stamps = b"".join(format_rfc3339_ns(parse_docker_ts(t)).encode() for t in ts)
        self._stamps += stamps
        self._size += size
        if self._buffers is not None:
            self._buffers.add(Kind.RECENT, size + RECENT_LINE_COST * count)
        if (
            len(self._lengths) > self.max_lines + self.max_lines // 4
            or self._size > self.budget + self.budget // 4
        ):
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest lines until both bounds hold (keeping the newest line)."""
        lengths = self._lengths
        drop = max(0, len(lengths) - self.max_lines)
        cut = sum(lengths[:drop])
        last = len(lengths) - 1
        while self._size - cut > self.budget and drop < last:
            cut += lengths[drop]
            drop += 1
        _drop_front(self._stamps, TS_BYTES * drop)
        _drop_front(self._messages, cut)
        del lengths[:drop]  # an array moves its items in place
        self._size -= cut
        if self._buffers is not None:
            self._buffers.add(Kind.RECENT, -cut - RECENT_LINE_COST * drop)

    def release(self) -> None:
        """Forget every line (the stream's monitor ended)."""
        if self._buffers is not None:
            self._buffers.add(Kind.RECENT, -self.cost)
        self._stamps = bytearray()
        self._messages = bytearray()
        self._lengths = array("I")
        self._size = 0

    def counts(self) -> Counter[tuple[bytes, bytes]]:
        """How many times each ``(ts, message)`` was admitted lately."""
        stamps = bytes(self._stamps)
        messages = bytes(self._messages)
        keys = []
        start = 0
        at = 0
        for end in accumulate(self._lengths):
            keys.append((stamps[at : at + TS_BYTES], messages[start:end]))
            start = end
            at += TS_BYTES
        return Counter(keys)


def _drop_front(buffer: bytearray, count: int) -> None:
    """Remove ``count`` bytes from the front of ``buffer`` in place. (``del buffer[:count]``
    only moves its start, and its next growth then copies it to a new allocation: a
    malloc and a free of the whole buffer at every trim, which fragments the C heap.)"""
    keep = len(buffer) - count
    with memoryview(buffer) as view:
        view[:keep] = view[count:]
    del buffer[keep:]


class StreamDedup:
    """Admits one stream's lines of one window: numbers them, drops what was sent before.

    ``mark`` starts as the stream's read position and follows the newest line admitted
    (a line stamped in the past by a clock that went back does not move it back).
    """

    __slots__ = (
        "_at_ts",
        "_caught_up",
        "_last",
        "_mark_text",
        "_replay",
        "_seen",
        "_whole_seconds",
        "clock_backwards",
        "dropped",
        "mark",
        "recent",
        "resent",
    )

    def __init__(
        self, mark: Mark, recent: RecentLines | None = None, whole_seconds: bool = False
    ) -> None:
        """``whole_seconds``: the engine stamps lines with their second only (see the
        module docstring)."""
        self.mark = mark
        self._whole_seconds = whole_seconds
        self._mark_text = format_rfc3339_ns(mark.ts_ns).encode()
        self.recent = recent if recent is not None else RecentLines()
        self._last = b""  # the newest timestamp of the window
        self._seen = 0  # lines of the window at that timestamp
        self._caught_up = False  # a line past the mark was admitted
        # While lines come behind the newest timestamp: the recent lines not matched yet,
        # and how many lines were admitted at each timestamp.
        self._replay: Counter[tuple[bytes, bytes]] | None = None
        self._at_ts: Counter[bytes] = Counter()
        self.dropped = 0  # covered by the mark (inclusive since)
        self.resent = 0  # repeated by the engine at a rotation
        self.clock_backwards = 0  # new lines stamped earlier than the newest

    def admit(
        self, ts: list[bytes], messages: list[bytes], size: int
    ) -> tuple[list[bool], list[int]] | None:
        """None if every line is new and in order (seqs follow from the timestamps);
        otherwise, per line, whether it is new and its seq. ``size``: the messages' bytes."""
        if (
            self._caught_up
            and self._replay is None
            and ts[0] > self._last
            and all(map(lt, ts, islice(ts, 1, None)))
        ):
            last = ts[-1]
            self._last = last
            self._seen = 1  # strictly increasing: one line at the newest timestamp
            self.mark = Mark(parse_docker_ts(last), 1)
            self._mark_text = last
            self.recent.add(ts, messages, size)
            return None
        return self._admit_each(ts, messages)

    def _admit_each(self, ts: list[bytes], messages: list[bytes]) -> tuple[list[bool], list[int]]:
        keep: list[bool] = []
        seqs: list[int] = []
        # Lines known delivered (new ones, and those the mark covers): the recent lines.
        seen_ts: list[bytes] = []
        seen_messages: list[bytes] = []
        for stamp, message in zip(ts, messages, strict=True):
            if not self._caught_up:
                # The engine sends the lines at the mark again (inclusive since) first.
                if stamp > self._last:
                    self._last = stamp
                    self._seen = 1
                else:
                    self._seen += 1
                if stamp < self._mark_text or (
                    stamp == self._mark_text and self._seen <= self.mark.seq
                ):
                    self.dropped += 1
                    keep.append(False)
                    seqs.append(0)
                    seen_ts.append(stamp)
                    seen_messages.append(message)
                    continue
                self._caught_up = True
                seq = self._seen
            elif stamp > self._last:
                self._last = stamp
                self._seen = seq = 1
                self._replay = None
            elif stamp == self._last and self._whole_seconds:
                self._seen += 1  # one more line in the newest second
                seq = self._seen
            else:
                # At or behind the newest timestamp: a line sent again (a rotation), or new.
                if self._replay is None:
                    self._replay = self.recent.counts()
                    self._replay.update(zip(seen_ts, seen_messages, strict=True))
                    self._at_ts = Counter(stamp for stamp, _ in self._replay.elements())
                key = (stamp, message)
                if self._replay[key] > 0:
                    self._replay[key] -= 1
                    self.resent += 1
                    keep.append(False)
                    seqs.append(0)
                    continue
                if stamp < self._last:  # new, stamped in the past: deliver, mark stays
                    self.clock_backwards += 1
                    self._at_ts[stamp] += 1
                    keep.append(True)
                    seqs.append(self._at_ts[stamp])
                    seen_ts.append(stamp)
                    seen_messages.append(message)
                    continue
                self._seen += 1  # a new line at the newest timestamp
                seq = self._seen
            if stamp > self._mark_text or seq > self.mark.seq:
                self.mark = Mark(parse_docker_ts(stamp), seq)
                self._mark_text = stamp
            if self._replay is not None:
                self._at_ts[stamp] += 1
            keep.append(True)
            seqs.append(seq)
            seen_ts.append(stamp)
            seen_messages.append(message)
        if seen_ts:
            self.recent.add(seen_ts, seen_messages, sum(map(len, seen_messages)))
        return keep, seqs


class Admitted:
    """What :func:`admit` took of a read: the batch of new lines and its counts."""

    __slots__ = ("batch", "bytes", "lines")

    def __init__(self, batch: LineBatch | None, lines: dict[str, int], size: dict[str, int]):
        self.batch = batch
        self.lines = lines
        self.bytes = size


def admit(lines: Lines, dedups: dict[str, StreamDedup], container: ContainerInfo) -> Admitted:
    """The new lines of a read, as a batch (None if there are none). Lines of streams
    not in ``dedups`` (not asked for) are dropped; each stream's dedup sees its own
    lines, in order."""
    streams = lines.streams
    first = streams[0]
    if streams.count(first) == len(streams):  # one stream: the usual read
        dedup = dedups.get(first)
        if dedup is None:
            return Admitted(None, {}, {})
        size = lines.size
        result = dedup.admit(lines.stamps, lines.messages, size)
        if result is None:
            batch = LineBatch(container, lines, {first: dedup.mark}, size=size)
            return Admitted(batch, {first: len(lines)}, {first: size})
        keep, seqs = result
        return _selected(lines, keep, seqs, dedups, container)
    results: dict[str, tuple[list[bool], list[int]] | None] = {}
    masks: dict[str, list[bool]] = {}
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for stream in sorted(set(streams)):
        mask = masks[stream] = list(map(eq, streams, repeat(stream)))
        counts[stream] = count = countOf(mask, True)
        dedup = dedups.get(stream)
        if dedup is None:
            results[stream] = ([False] * count, [0] * count)
            continue
        mine = list(compress(lines.messages, mask))
        sizes[stream] = sum(map(len, mine))
        results[stream] = dedup.admit(list(compress(lines.stamps, mask)), mine, sizes[stream])
    if all(result is None for result in results.values()):
        ends = {s: dedups[s].mark for s in results}
        batch = LineBatch(container, lines, ends, size=sum(sizes.values()))
        return Admitted(batch, counts, sizes)
    # Back into the read's order, line by line (rare: a window's first read, a step back).
    own: dict[str, tuple[list[bool], list[int]]] = {}
    for stream, result in results.items():
        if result is None:
            mine_ts = list(compress(lines.stamps, masks[stream]))
            result = ([True] * len(mine_ts), seqs_of([stream] * len(mine_ts), mine_ts))
        own[stream] = result
    cursors = {stream: iter(zip(*own[stream], strict=True)) for stream in own}
    in_order = [next(cursors[stream]) for stream in streams]
    return _selected(
        lines, [kept for kept, _ in in_order], [seq for _, seq in in_order], dedups, container
    )


def _selected(
    lines: Lines,
    keep: list[bool],
    seqs: list[int],
    dedups: dict[str, StreamDedup],
    container: ContainerInfo,
) -> Admitted:
    if not any(keep):
        return Admitted(None, {}, {})
    kept = lines.select(keep)
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for stream, message in zip(kept.streams, kept.messages, strict=True):
        counts[stream] = counts.get(stream, 0) + 1
        sizes[stream] = sizes.get(stream, 0) + len(message)
    batch = LineBatch(
        container,
        kept,
        {s: dedups[s].mark for s in counts},
        list(compress(seqs, keep)),
        size=sum(sizes.values()),
    )
    return Admitted(batch, counts, sizes)
