"""What a node keeps across restarts, as plain data (the durable store reads and writes
it; the core restores from it). No I/O here: the store lives in ``plumtree/store``."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from plumtree.core.ids import format_id, message_id, stream_key
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


class DeliveryRecord(msgspec.Struct, frozen=True, gc=False):
    """One delivery as the node's delivery log keeps it: ``cursor`` is the node's
    delivery number (1, 2, 3...), ``at`` the wall-clock time of the delivery. One is
    made per delivery (a struct, untracked by the collector); the durable store saves
    exactly these."""

    cursor: int
    origin: str
    epoch: int
    seq: int
    hops: int
    sender: str
    at: float
    payload: bytes | None

    @property
    def id(self) -> str:
        """The message id (hex), derived from ``(origin, epoch, seq)``."""
        return format_id(message_id(stream_key(self.origin, self.epoch), self.seq))


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

    ``epoch`` is this node's own epoch (its own stream is among ``streams``, or its
    seqs in ``replay``); ``cursor`` the number of its last delivery; ``messages``
    oldest first, with floors in ``streams`` that already account for the payloads
    left out; ``replay``: deliveries newer than the saved streams.
    """

    epoch: int
    cursor: int = 0
    streams: list[StreamState] = field(default_factory=list)
    messages: list[KeptMessage] = field(default_factory=list)
    #: deliveries committed after the streams were last saved, in order: ``(origin,
    #: epoch, seq)`` (the streams are checkpoints; the delivery rows are the truth)
    replay: list[tuple[str, int, int]] = field(default_factory=list)
