"""What happened inside a state machine, for the application, logs, metrics and /v1/events.

Events are small frozen structs; the runtime drains them after every call into the core.
"""

from __future__ import annotations

import msgspec

from plumtree.core.ids import MessageId


class Event(msgspec.Struct, frozen=True, tag_field="kind"):
    """Base class; ``kind`` (the tag) names the event in JSON."""


# --- Plumtree -------------------------------------------------------------------------


class Delivered(Event, tag="delivered", frozen=True):
    """A broadcast reached this node's application (exactly once per id).

    ``cursor`` numbers this node's deliveries 1, 2, 3...: an application that notes the
    last one it handled resumes after it with nothing lost and nothing twice.
    ``repaired``: it came by anti-entropy, not down the tree.
    """

    id: MessageId
    payload: bytes
    origin: str
    sender: str
    hops: int
    at: float
    epoch: int = 0
    seq: int = 0
    cursor: int = 0
    repaired: bool = False


class MessagesLost(Event, tag="messages_lost", frozen=True):
    """Messages ``first..last`` of ``(origin, epoch)`` will never be delivered here:
    no reachable member holds them any more (``reason`` "unavailable"), or too many
    holes were open at once ("limit"). Counted, logged at WARNING, and in health."""

    origin: str
    epoch: int
    first: int
    last: int
    count: int
    reason: str


class PeerAdded(Event, tag="peer_added", frozen=True):
    peer: str
    eager: bool


class PeerRemoved(Event, tag="peer_removed", frozen=True):
    peer: str


class PeerPromoted(Event, tag="promoted", frozen=True):
    """``peer`` became eager; ``reason`` says why (graft, ihave, gossip, repair, ...)."""

    peer: str
    reason: str


class PeerDemoted(Event, tag="demoted", frozen=True):
    """``peer`` became lazy; ``reason`` says why (duplicate, prune, optimization)."""

    peer: str
    reason: str


class GraftSent(Event, tag="graft_sent", frozen=True):
    peer: str
    ids: list[MessageId]
    attempt: int


class GraftFailed(Event, tag="graft_failed", frozen=True):
    """All Graft attempts for ``id`` ran out: the gap is counted, never hidden."""

    id: MessageId
    attempts: int


class PruneSent(Event, tag="prune_sent", frozen=True):
    peer: str
    reason: str


class CacheEvicted(Event, tag="cache_evicted", frozen=True):
    """Payloads left the cache before their TTL because it was full (the count since
    the last such event: one per maintenance tick)."""

    count: int


class OwnSeqsSkipped(Event, tag="own_seqs_skipped", frozen=True):
    """Peers hold our own epoch's seqs ``first..last`` that our store lacks (its data
    dir is an older copy of itself): our next broadcasts are numbered after them."""

    epoch: int
    first: int
    last: int


# --- the stack (core/stack.py) ---------------------------------------------------------


class JoinPending(Event, tag="join_pending", frozen=True):
    """Join attempt ``attempt`` through ``seeds`` taught us no member yet; the next
    one goes out in ``retry_in`` seconds."""

    seeds: list[str]
    attempt: int
    retry_in: float


class Joined(Event, tag="joined", frozen=True):
    """A join succeeded: ``alive`` members are known alive (ourselves included)."""

    alive: int


class Isolated(Event, tag="isolated", frozen=True):
    """No member besides this node is alive: it joins through its seeds again."""

    seeds: list[str]


class Reconciled(Event, tag="reconciled", frozen=True):
    """Plumtree's peers were set right against the member table (drift repaired)."""

    added: int
    removed: int


# --- SWIM -----------------------------------------------------------------------------


class MemberJoined(Event, tag="member_joined", frozen=True):
    name: str
    addr: str
    incarnation: int
    meta: dict[str, str]


class MemberUpdated(Event, tag="member_updated", frozen=True):
    name: str
    addr: str
    incarnation: int
    meta: dict[str, str]


class MemberSuspected(Event, tag="member_suspected", frozen=True):
    name: str
    incarnation: int
    by: str


class MemberAlive(Event, tag="member_alive", frozen=True):
    """A suspected (or dead) member proved it is alive (refutation or rejoin)."""

    name: str
    incarnation: int


class MemberFailed(Event, tag="member_failed", frozen=True):
    name: str
    incarnation: int
    by: str


class MemberLeft(Event, tag="member_left", frozen=True):
    name: str
    incarnation: int


class MemberReaped(Event, tag="member_reaped", frozen=True):
    """A dead or left member was forgotten after the reap time."""

    name: str


class Refuted(Event, tag="refuted", frozen=True):
    """We were suspected or declared dead and answered with a higher incarnation."""

    incarnation: int
    by: str


class NameConflict(Event, tag="name_conflict", frozen=True):
    """A claim to ``name`` from ``claimed_addr`` was refused: a live member holds the
    name at ``addr`` (reported once per conflict; every refusal is counted)."""

    name: str
    addr: str
    claimed_addr: str


class NameTaken(Event, tag="name_taken", frozen=True):
    """This node's own name is held by a live member at ``addr`` (the seed at ``seed``
    said so in its join reply): the node stops joining; pick another name."""

    name: str
    addr: str
    seed: str


class PartitionSuspected(Event, tag="partition_suspected", frozen=True):
    """Many members failed at once: more likely our network than their processes."""

    failed: int
    alive: int
