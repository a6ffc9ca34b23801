"""Every message of both protocols, as msgspec structs.

Structs are tagged and array-like so that the msgpack form is compact ([tag, f1, f2, ...])
and the decoder can type-check and bound every field while it parses. The constraints
here are the validation: a decoded message is always well-formed.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from plumtree.core import limits
from plumtree.core.ids import MESSAGE_ID_LEN

MsgIdField = Annotated[bytes, msgspec.Meta(min_length=MESSAGE_ID_LEN, max_length=MESSAGE_ID_LEN)]
RoundField = Annotated[int, msgspec.Meta(ge=0, le=limits.MAX_ROUND)]
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
    """Eager push of a payload. ``round`` is the sender's hop level (the origin sends 0)."""

    id: MsgIdField
    round: RoundField
    origin: NameField
    payload: PayloadField


class IHave(_Msg, tag=2, frozen=True):
    """Lazy announcement: (id, announcer's hop level) pairs."""

    entries: Annotated[
        list[tuple[MsgIdField, RoundField]], msgspec.Meta(max_length=limits.MAX_IHAVE_IDS)
    ]


class Sync(_Msg, tag=5, frozen=True):
    """Anti-entropy digest: recently delivered (id, hop level) pairs, sent periodically to
    one random peer so that a node whose Gossip *and* IHaves were all lost still learns
    of the message and grafts it."""

    entries: Annotated[
        list[tuple[MsgIdField, RoundField]], msgspec.Meta(max_length=limits.MAX_IHAVE_IDS)
    ]


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


PlumtreeMessage = Gossip | IHave | Graft | Prune | Sync
SwimMessage = Ping | Ack | PingReq | Nack | Alive | Suspect | Dead | PushPull
Message = (
    Gossip
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
)

PLUMTREE_TYPES: tuple[type[_Msg], ...] = (Gossip, IHave, Graft, Prune, Sync)
SWIM_TYPES: tuple[type[_Msg], ...] = (Ping, Ack, PingReq, Nack, Alive, Suspect, Dead, PushPull)
MEMBERSHIP_UPDATE_TYPES: tuple[type[_Msg], ...] = (Alive, Suspect, Dead)
