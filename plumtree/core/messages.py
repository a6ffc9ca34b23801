"""Every message of both protocols, as msgspec structs.

Structs are tagged and array-like so that the msgpack form is compact ([tag, f1, f2, ...])
and the decoder can type-check and bound every field while it parses. The constraints
here are the validation: a decoded message is always well-formed.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from plumtree.core import limits
from plumtree.core.ids import MAX_EPOCH, MESSAGE_ID_LEN
from plumtree.core.ids import MAX_SEQ as MAX_STREAM_SEQ

MsgIdField = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_LEN, max_length=MESSAGE_ID_LEN)]
RoundField = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_ROUND)]
EpochField = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH)]
#: a position in a stream (0: before its first message)
StreamSeqField = Annotated[int, msgspec.Meta(ge=0, le=MAX_STREAM_SEQ)]
SeqField = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_SEQ)]
IncarnationField = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_INCARNATION)]
NameField = Annotated[str, msgspec.Meta(min_length=1, max_length=limits.MAX_NAME_LEN)]
AddrField = Annotated[str, msgspec.Meta(max_length=limits.MAX_ADDR_LEN)]
LabelField = Annotated[str, msgspec.Meta(max_length=limits.MAX_LABEL_LEN)]
PayloadField = Annotated[bytes, msgspec.Meta(max_length=limits.MAX_PAYLOAD_BYTES)]
MetaField = Annotated[
    dict[
        Annotated[str, msgspec.Meta(max_length=limits.MAX_META_KEY_LEN)],
        Annotated[str, msgspec.Meta(max_length=limits.MAX_META_VALUE_LEN)],
    ],
    msgspec.Meta(max_length=limits.MAX_META_ENTRIES),
]


class _Msg(msgspec.Struct, array_like=True, frozen=True, tag_field="t"):
    """Base of all wire messages (tag first, then the fields in order)."""


# --- Plumtree -------------------------------------------------------------------------


class Gossip(_Msg, tag=1, frozen=True):
    """Eager push of a payload. ``round`` is the sender's hop level (the origin sends 0).

    ``id`` is ``stream_key(origin, epoch)`` followed by the sequence number (see
    ``core/ids.py``); a receiver checks that the two agree before it believes either.
    """

    id: MsgIdField
    round: RoundField
    origin: NameField
    epoch: EpochField
    payload: PayloadField


class Repair(Gossip, tag=6, frozen=True):
    """A copy sent by anti-entropy to a node that lacks it: delivered like a Gossip,
    but it says nothing about the tree (no promotion, no forwarding, no IHave)."""


class IHave(_Msg, tag=2, frozen=True):
    """Lazy announcement: (id, announcer's hop level) pairs."""

    entries: Annotated[
        list[tuple[MsgIdField, RoundField]], msgspec.Meta(max_length=limits.MAX_IHAVE_IDS)
    ]


class StreamDigest(msgspec.Struct, array_like=True, frozen=True):
    """What a node holds of one stream ``(origin, epoch)``: one entry of a version vector.

    * ``wm``: every seq up to it was delivered (or given up as lost: see ``floor``);
    * ``above``: further delivered ranges ``(first, last)``, ascending, above ``wm + 1``
      (a sender with more than the wire allows lists the lowest ones only);
    * ``head``: the highest seq the sender knows to exist (it may lack it);
    * ``floor``: the sender still holds the payload of every seq >= floor it delivered.
    """

    origin: NameField
    epoch: EpochField
    wm: StreamSeqField
    head: StreamSeqField
    floor: StreamSeqField
    above: Annotated[
        list[tuple[StreamSeqField, StreamSeqField]],
        msgspec.Meta(max_length=limits.MAX_DIGEST_RANGES),
    ]


class Sync(_Msg, tag=5, frozen=True):
    """Anti-entropy: the sender's version vector (Scuttlebutt-style).

    The receiver sends back, as Repair messages, what the sender lacks and it holds
    (oldest first, a bounded batch), and answers with its own vector (``reply``) when it
    lacks something the sender holds or when the sender asks (``want``: it is repairing
    and needs to hear from everyone). ``fresh``: the sender has no history (a first
    start, or a restart without its store); it takes the receiver's vector as its
    starting point instead of being sent everything the receiver holds.
    """

    streams: Annotated[list[StreamDigest], msgspec.Meta(max_length=limits.MAX_DIGEST_STREAMS)]
    reply: bool = False
    want: bool = False
    fresh: bool = False


class Graft(_Msg, tag=3, frozen=True):
    """Ask the receiver to make the link eager and resend these ids (none: link only)."""

    ids: Annotated[list[MsgIdField], msgspec.Meta(max_length=limits.MAX_IHAVE_IDS)]


class Prune(_Msg, tag=4, frozen=True):
    """Ask the receiver to make the link lazy."""


# --- SWIM -----------------------------------------------------------------------------


class Ping(_Msg, tag=10, frozen=True):
    """Direct probe. ``target`` is the name the prober believes it is talking to."""

    seq: SeqField
    target: Annotated[str, msgspec.Meta(max_length=limits.MAX_NAME_LEN)]


class Ack(_Msg, tag=11, frozen=True):
    """Answer to a Ping (directly, or relayed for a PingReq)."""

    seq: SeqField


class PingReq(_Msg, tag=12, frozen=True):
    """Ask the receiver to probe ``target`` on our behalf (indirect probe)."""

    seq: SeqField
    target: NameField
    target_addr: AddrField


class Nack(_Msg, tag=13, frozen=True):
    """Lifeguard: the relay could not reach the target in time (tells us we are not slow)."""

    seq: SeqField


class Alive(_Msg, tag=14, frozen=True):
    """Member ``name`` is alive at ``incarnation``, reachable at ``addr``, with ``meta``."""

    name: NameField
    incarnation: IncarnationField
    addr: AddrField
    meta: MetaField


class Suspect(_Msg, tag=15, frozen=True):
    """``origin`` suspects ``name`` at ``incarnation``."""

    name: NameField
    incarnation: IncarnationField
    origin: NameField


class Dead(_Msg, tag=16, frozen=True):
    """``name`` is dead at ``incarnation``; when ``origin == name`` it left gracefully."""

    name: NameField
    incarnation: IncarnationField
    origin: NameField


class MemberState(msgspec.Struct, array_like=True, frozen=True):
    """One row of a push-pull full-state exchange."""

    name: NameField
    addr: AddrField
    incarnation: IncarnationField
    state: Annotated[int, msgspec.Meta(ge=0, le=3)]
    meta: MetaField


class PushPull(_Msg, tag=17, frozen=True):
    """Full member-table exchange (anti-entropy and join). ``reply`` marks the answer."""

    join: bool
    reply: bool
    members: Annotated[list[MemberState], msgspec.Meta(max_length=limits.MAX_PUSHPULL_MEMBERS)]


# --- keyring queries (runtime/keyquery.py) --------------------------------------------


KeyOp = Literal["install", "use", "remove", "list"]
FingerprintField = Annotated[str, msgspec.Meta(max_length=limits.MAX_FINGERPRINT_LEN)]
QueryIdField = Annotated[
    bytes, msgspec.Meta(min_length=limits.KEY_QUERY_ID_LEN, max_length=limits.KEY_QUERY_ID_LEN)
]


class KeyRequest(_Msg, tag=20, frozen=True):
    """Apply ``op`` to the receiver's keyring and answer with a KeyResponse of this ``id``.

    Point-to-point over TCP only, and only ever accepted sealed with a cluster key (a node
    without a keyring answers an error). ``key`` is the raw key for install/use/remove,
    empty for list; its size is checked by the keyring, not here.
    """

    id: QueryIdField
    op: KeyOp
    key: Annotated[bytes, msgspec.Meta(max_length=limits.MAX_KEY_BYTES)]


class KeyResponse(_Msg, tag=21, frozen=True):
    """The answer to a KeyRequest: the keyring after it, as fingerprints (never keys)."""

    id: QueryIdField
    ok: bool
    error: Annotated[str, msgspec.Meta(max_length=limits.MAX_ERROR_LEN)]
    primary: FingerprintField
    keys: Annotated[list[FingerprintField], msgspec.Meta(max_length=limits.MAX_KEYRING_KEYS)]
    changed: bool = False
    persisted: bool = False


# --- queries (runtime/query.py): serf's query, answered by ``query`` handlers ----------


class QueryRequest(_Msg, tag=22, frozen=True):
    """Run this node's ``query`` handlers on ``payload``: a QueryAck at once, then a
    QueryResponse with the first handler's output. Point-to-point over TCP, from a live
    member, like a KeyRequest."""

    id: QueryIdField
    name: Annotated[str, msgspec.Meta(max_length=limits.MAX_QUERY_NAME_LEN)]
    payload: Annotated[bytes, msgspec.Meta(max_length=limits.MAX_QUERY_PAYLOAD)]
    timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 0.0


class QueryAck(_Msg, tag=23, frozen=True):
    """The query of this ``id`` arrived (serf's ack)."""

    id: QueryIdField


class QueryResponse(_Msg, tag=24, frozen=True):
    """A handler's answer to the query of this ``id`` (its stdout, bounded); ``ok``
    false: the handler failed (``error`` says how)."""

    id: QueryIdField
    ok: bool
    payload: Annotated[bytes, msgspec.Meta(max_length=limits.MAX_QUERY_RESPONSE)]
    error: Annotated[str, msgspec.Meta(max_length=limits.MAX_ERROR_LEN)] = ""


PlumtreeMessage = Gossip | Repair | IHave | Graft | Prune | Sync
SwimMessage = Ping | Ack | PingReq | Nack | Alive | Suspect | Dead | PushPull
Message = (
    Gossip
    | Repair
    | IHave
    | Graft
    | Prune
    | Sync
    | Ping
    | Ack
    | PingReq
    | Nack
    | Alive
    | Suspect
    | Dead
    | PushPull
    | KeyRequest
    | KeyResponse
    | QueryRequest
    | QueryAck
    | QueryResponse
)

PLUMTREE_TYPES: tuple[type[_Msg], ...] = (Gossip, Repair, IHave, Graft, Prune, Sync)
SWIM_TYPES: tuple[type[_Msg], ...] = (Ping, Ack, PingReq, Nack, Alive, Suspect, Dead, PushPull)
KEY_TYPES: tuple[type[_Msg], ...] = (KeyRequest, KeyResponse)
QUERY_TYPES: tuple[type[_Msg], ...] = (QueryRequest, QueryAck, QueryResponse)
#: point-to-point requests and their answers: TCP only, from live members (``Stack``)
REQUEST_TYPES: tuple[type[_Msg], ...] = KEY_TYPES + QUERY_TYPES
MEMBERSHIP_UPDATE_TYPES: tuple[type[_Msg], ...] = (Alive, Suspect, Dead)
