"""What a node keeps across restarts, as plain data (the durable store reads and writes
it; the core restores from it). No I/O here: the store lives in ``plumtree/store``."""

from __future__ import annotations

from dataclasses import dataclass, field

from plumtree.core.streams import Range, Stream


@dataclass(frozen=True, slots=True)
class StreamState:
    """One stream as saved: its watermark, delivered ranges above it, what is known to
    exist, what is held, and what was given up."""

    origin: str
    epoch: int
    wm: int
    head: int
    floor: int
    above: tuple[Range, ...] = ()
    lost_total: int = 0
    lost: tuple[Range, ...] = ()

    @classmethod
    def of(cls, stream: Stream) -> StreamState:
        return cls(
            stream.origin,
            stream.epoch,
            stream.wm,
            stream.head,
            stream.floor,
            tuple((lo, hi) for lo, hi in stream.above),
            stream.lost_total,
            tuple(stream.lost),
        )


@dataclass(frozen=True, slots=True)
class KeptMessage:
    """A payload kept for repair; ``age``: seconds since it was delivered."""

    origin: str
    epoch: int
    seq: int
    hops: int
    age: float
    payload: bytes


@dataclass(frozen=True, slots=True)
class NodeState:
    """Everything a restarted node resumes from.

    ``epoch`` is this node's own epoch (its own stream is among ``streams``, its
    watermark the last durable seq); ``cursor`` the number of its last delivery;
    ``messages`` oldest first, with floors in ``streams`` that already account for
    the payloads left out.
    """

    epoch: int
    cursor: int = 0
    streams: list[StreamState] = field(default_factory=list)
    messages: list[KeptMessage] = field(default_factory=list)
