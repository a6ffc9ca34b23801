"""Per-origin streams: what a node delivered of each ``(origin, epoch)``, exactly.

A stream is a watermark ``wm`` (every seq up to it is settled: delivered, or given up
as lost and counted) plus the delivered ranges above it. Dedup is a lookup in that, so
a message is never delivered twice for the life of the stream, whatever its age; the
holes between ``wm``, the ranges and ``head`` (the highest seq known to exist) are
exactly what the node lacks. The number of ranges is bounded: past the bound the lowest
hole is given up, counted and announced (never forgotten silently).

The table of streams is the node's version vector; ``digest()`` is its wire form.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator

from plumtree.core.ids import StreamKey, message_id, stream_key
from plumtree.core.limits import MAX_DIGEST_RANGES, MAX_DIGEST_STREAMS
from plumtree.core.messages import StreamDigest

#: Delivered ranges kept above a stream's watermark; one more gives up the lowest hole.
MAX_RANGES = 4096
#: Lost ranges remembered per stream, to answer "is this id lost?" (the count is exact
#: whatever this bound; past it the oldest ranges' details are forgotten, and a seq
#: below them is "settled, unknown whether delivered": see ``settled_unknown``).
LOST_RANGES_KEPT = 1024
#: Streams retired (origin -> highest retired epoch) remembered at most.
RETIRED_MAX = 100_000
#: Streams a node keeps at most, and epochs of one origin: more are refused (counted by
#: the caller), so no message or digest can make the table grow without bound.
MAX_STREAMS = 65_536
MAX_EPOCHS_PER_ORIGIN = 64

Range = tuple[int, int]
_END = 1 << 64  # greater than any seq: bisect sentinel


class Stream:
    """One origin epoch as this node knows it."""

    __slots__ = (
        "above",
        "dirty",
        "epoch",
        "floor",
        "head",
        "held_above",
        "key",
        "last_activity",
        "lost",
        "lost_horizon",
        "lost_total",
        "origin",
        "own",
        "wire",
        "wm",
    )

    def __init__(self, origin: str, epoch: int, key: StreamKey | None = None) -> None:
        self.origin = origin
        self.epoch = epoch
        self.key = key if key is not None else stream_key(origin, epoch)
        #: every seq <= wm is settled (delivered, or lost and counted)
        self.wm = 0
        #: delivered ranges [first, last] above wm + 1, ascending, disjoint, not adjacent
        self.above: list[list[int]] = []
        #: how many seqs ``above`` holds (missing() in O(1))
        self.held_above = 0
        #: the highest seq known to exist (delivered here, announced, or in a digest)
        self.head = 0
        #: every delivered seq >= floor still has its payload in the store
        self.floor = 1
        #: this node's own stream (current epoch): contiguous, never missing anything
        self.own = False
        #: lost ranges, oldest first (the last LOST_RANGES_KEPT), and their total count
        self.lost: list[Range] = []
        self.lost_total = 0
        #: the highest seq of lost ranges forgotten (LOST_RANGES_KEPT): below it, a seq
        #: that is settled may have been delivered or lost
        self.lost_horizon = 0
        self.last_activity = 0.0
        #: changed since the durable store last saved it
        self.dirty = True
        #: its digest entry, made once per change (most streams are quiet)
        self.wire: StreamDigest | None = None

    def __repr__(self) -> str:
        return (
            f"Stream({self.origin!r}, {self.epoch}, wm={self.wm}, above={self.above}, "
            f"head={self.head}, floor={self.floor})"
        )

    # ------------------------------------------------------------------ queries

    def has(self, seq: int) -> bool:
        """Settled here: delivered, or given up as lost."""
        if seq <= self.wm:
            return True
        above = self.above
        if not above:
            return False
        i = bisect_right(above, [seq, _END])
        return i > 0 and above[i - 1][1] >= seq

    def delivered(self, seq: int) -> bool:
        """Delivered here (not merely settled as lost); False when it cannot be told."""
        return self.has(seq) and not self.is_lost(seq) and seq > self.lost_horizon

    def settled_unknown(self, seq: int) -> bool:
        """Settled, but whether delivered or lost is forgotten (very old losses)."""
        return self.has(seq) and seq <= self.lost_horizon and not self.is_lost(seq)

    def is_lost(self, seq: int) -> bool:
        return any(lo <= seq <= hi for lo, hi in self.lost)

    def top(self) -> int:
        """The highest seq delivered here (or settled)."""
        return self.above[-1][1] if self.above else self.wm

    def missing(self) -> int:
        """How many seqs up to ``head`` are neither delivered nor settled."""
        return self.head - self.wm - self.held_above if self.head > self.wm else 0

    def holes(self, limit: int = 1 << 30) -> Iterator[Range]:
        """The missing ranges, lowest first (at most ``limit``)."""
        n = 0
        start = self.wm + 1
        for lo, hi in self.above:
            if n >= limit:
                return
            if lo > start:
                yield start, lo - 1
                n += 1
            start = hi + 1
        if start <= self.head and n < limit:
            yield start, self.head

    def held_ranges(self) -> Iterator[Range]:
        """Ranges of seqs whose payload this node delivered and still holds, ascending."""
        floor = self.floor
        if self.wm >= floor:
            yield floor, self.wm
        for lo, hi in self.above:
            if hi >= floor:
                yield max(lo, floor), hi

    # ------------------------------------------------------------------ changes

    def add(self, seq: int) -> bool:
        """Record ``seq`` as delivered; False if it was settled already."""
        wm = self.wm
        if seq > self.head:
            self.head = seq
        self.dirty = True
        self.wire = None
        if seq == wm + 1:
            above = self.above
            if above and above[0][0] == seq + 1:
                first = above.pop(0)
                self.held_above -= first[1] - first[0] + 1
                self.wm = first[1]
            else:
                self.wm = seq
            return True
        if seq <= wm:
            return False
        above = self.above
        i = bisect_right(above, [seq, _END])
        prev = above[i - 1] if i > 0 else None
        if prev is not None and prev[1] >= seq:
            return False
        nxt = above[i] if i < len(above) else None
        if prev is not None and prev[1] == seq - 1:
            if nxt is not None and nxt[0] == seq + 1:
                prev[1] = nxt[1]
                del above[i]
            else:
                prev[1] = seq
        elif nxt is not None and nxt[0] == seq + 1:
            nxt[0] = seq
        else:
            above.insert(i, [seq, seq])
        self.held_above += 1
        return True

    def learn_head(self, seq: int) -> bool:
        """``seq`` exists (someone announced or holds it); True if that is news."""
        if seq > self.head:
            self.head = seq
            self.dirty = True
            self.wire = None
            return True
        return False

    def give_up(self, last: int) -> list[Range]:
        """Settle every missing seq up to ``last`` as lost; returns the ranges given up.

        The floor moves past them: we hold none of them, and a digest says so.
        """
        if last <= self.wm:
            return []
        gone = [(lo, min(hi, last)) for lo, hi in self.holes() if lo <= last]
        # a digest's "held" is [floor, wm] and the ranges: lost seqs are not held, the
        # delivered ranges merged in just above them still are
        if self.floor <= last:
            self.floor = last + 1
        above = self.above
        while above and above[0][0] <= last + 1:
            lo, hi = above.pop(0)
            self.held_above -= hi - lo + 1
            if hi > last:
                last = hi
        self.wm = last
        if last > self.head:
            self.head = last
        for r in gone:
            self.lost_total += r[1] - r[0] + 1
        lost = self.lost
        lost.extend(gone)
        if len(lost) > LOST_RANGES_KEPT:
            self.lost_horizon = max(self.lost_horizon, lost[-LOST_RANGES_KEPT - 1][1])
            del lost[:-LOST_RANGES_KEPT]
        self.dirty = True
        self.wire = None
        return gone

    def adopt(self, wm: int, head: int) -> None:
        """A node without history starts where a peer is: everything up to ``wm`` is
        before its time (not owed to it, not lost), and it holds none of it."""
        if wm > self.wm:
            if self.floor <= wm:
                self.floor = wm + 1  # (not past the ranges merged in: those are held)
            above = self.above
            while above and above[0][0] <= wm + 1:
                lo, hi = above.pop(0)
                self.held_above -= hi - lo + 1
                wm = max(wm, hi)
            self.wm = wm
            self.dirty = True
            self.wire = None
        self.learn_head(max(head, wm))

    def evicted(self, seq: int) -> None:
        """The payload of ``seq`` left the store: we hold nothing below seq + 1 now."""
        if self.floor <= seq:
            self.floor = seq + 1
            self.dirty = True
            self.wire = None

    def digest(self) -> StreamDigest:
        if self.own:
            # our own stream: contiguous
            return StreamDigest(self.origin, self.epoch, self.wm, self.wm, self.floor, [])
        wire = self.wire
        if wire is None:
            above = self.above
            if len(above) > MAX_DIGEST_RANGES:
                above = above[:MAX_DIGEST_RANGES]
            # copies: the simulator hands this very object to the receiver later
            wire = self.wire = StreamDigest(
                self.origin,
                self.epoch,
                self.wm,
                max(self.head, self.wm),
                self.floor,
                [(lo, hi) for lo, hi in above],
            )
        return wire


def digest_has(d: StreamDigest, seq: int) -> bool:
    """Does the digest's sender have ``seq`` settled (delivered or lost)?"""
    if seq <= d.wm:
        return True
    return any(lo <= seq <= hi for lo, hi in d.above)


def digest_held(d: StreamDigest) -> Iterator[Range]:
    """Ranges the digest's sender delivered and still holds, ascending."""
    floor = max(d.floor, 1)
    if d.wm >= floor:
        yield floor, d.wm
    for lo, hi in d.above:
        if hi >= floor and lo <= hi:
            yield max(lo, floor), hi


def subtract(ranges: Iterable[Range], minus: Iterable[Range]) -> Iterator[Range]:
    """``ranges`` without ``minus``; both ascending and disjoint."""
    cut = iter(minus)
    current = next(cut, None)
    for lo, hi in ranges:
        while current is not None and current[1] < lo:
            current = next(cut, None)
        while lo <= hi:
            if current is None or current[0] > hi:
                yield lo, hi
                break
            if current[0] > lo:
                yield lo, current[0] - 1
            lo = current[1] + 1
            if current[1] <= hi:
                current = next(cut, None)


def settled_ranges(d: StreamDigest) -> Iterator[Range]:
    """Everything the digest's sender has settled, ascending."""
    if d.wm >= 1:
        yield 1, d.wm
    last = d.wm
    for lo, hi in d.above:
        if lo > last and hi >= lo:
            yield lo, hi
            last = hi


class StreamTable:
    """The version vector: every stream this node knows, by key and by (origin, epoch)."""

    __slots__ = ("_cursor", "by_key", "by_origin", "retired")

    def __init__(self) -> None:
        self.by_key: dict[StreamKey, Stream] = {}
        #: origin -> {epoch: stream}
        self.by_origin: dict[str, dict[int, Stream]] = {}
        #: origin -> highest epoch retired: older messages of it are refused (replays)
        self.retired: dict[str, int] = {}
        #: where the next digest starts when there are more streams than a digest holds
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.by_key)

    def __iter__(self) -> Iterator[Stream]:
        return iter(self.by_key.values())

    def get(self, key: StreamKey) -> Stream | None:
        return self.by_key.get(key)

    def find(self, origin: str, epoch: int) -> Stream | None:
        epochs = self.by_origin.get(origin)
        return None if epochs is None else epochs.get(epoch)

    def ensure(self, origin: str, epoch: int, key: StreamKey | None = None) -> Stream | None:
        """The stream of ``(origin, epoch)``, made if new; None if that epoch is retired
        (a replay of something long settled) or ``key`` does not match."""
        epochs = self.by_origin.get(origin)
        if epochs is not None:
            stream = epochs.get(epoch)
            if stream is not None:
                return stream if key is None or key == stream.key else None
        if epoch <= self.retired.get(origin, -1):
            return None
        if len(self.by_key) >= MAX_STREAMS or (
            epochs is not None and len(epochs) >= MAX_EPOCHS_PER_ORIGIN
        ):
            return None
        computed = stream_key(origin, epoch)
        if key is not None and key != computed:
            return None
        if computed in self.by_key:  # pragma: no cover - a 64-bit collision
            return None
        stream = Stream(origin, epoch, computed)
        self.by_key[computed] = stream
        if epochs is None:
            epochs = self.by_origin[origin] = {}
        epochs[epoch] = stream
        return stream

    def retire(self, stream: Stream) -> None:
        """Forget a finished stream; its epoch and older ones are refused from now on."""
        self.by_key.pop(stream.key, None)
        epochs = self.by_origin.get(stream.origin)
        if epochs is not None:
            epochs.pop(stream.epoch, None)
            if not epochs:
                del self.by_origin[stream.origin]
        retired = self.retired
        if stream.epoch > retired.get(stream.origin, -1):
            retired.pop(stream.origin, None)  # re-insert: newest last, oldest evicted
            retired[stream.origin] = stream.epoch
            while len(retired) > RETIRED_MAX:
                del retired[next(iter(retired))]

    def message_id(self, stream: Stream, seq: int) -> bytes:
        return message_id(stream.key, seq)

    def digest(self, limit: int = MAX_DIGEST_STREAMS) -> list[StreamDigest]:
        """The vector's wire form; with more streams than ``limit``, a window that moves
        on each call so every stream is compared in turn."""
        # a stream with nothing in it (our own before our first broadcast) says nothing
        streams = [s for s in self.by_key.values() if s.head or s.wm]
        if len(streams) <= limit:
            return [s.digest() for s in streams]
        start = self._cursor % len(streams)
        self._cursor = start + limit
        window = (streams + streams)[start : start + limit]
        return [s.digest() for s in window]

    def missing(self) -> int:
        return sum(s.missing() for s in self.by_key.values())

    def lost(self) -> int:
        return sum(s.lost_total for s in self.by_key.values())
