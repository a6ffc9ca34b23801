"""The wire codec: one versioned envelope around a list of messages.

Layout: ``b"PT"`` magic, one version byte, then msgpack ``[label, sender, [msg, ...]]``.
``decode`` is total: any byte string yields an :class:`Envelope` or raises
:class:`DecodeError`, never anything else, and it refuses oversize input before parsing.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from plumtree.core import limits
from plumtree.core.limits import (
    MAX_DATAGRAM_BYTES,
    MAX_FRAME_BYTES,
    MAX_IHAVE_IDS,
    MAX_PAYLOAD_BYTES,
    MAX_PUSHPULL_MEMBERS,
)
from plumtree.core.messages import LabelField, Message, NameField

__all__ = [
    "MAGIC",
    "MAX_DATAGRAM_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_IHAVE_IDS",
    "MAX_PAYLOAD_BYTES",
    "MAX_PUSHPULL_MEMBERS",
    "VERSION",
    "DecodeError",
    "Envelope",
    "decode",
    "encode",
]

MAGIC: Final = b"PT"
#: 2: messages are (origin, epoch, seq) streams, digests are version vectors
VERSION: Final = 2
_HEADER: Final = MAGIC + bytes([VERSION])
_HEADER_LEN: Final = len(_HEADER)


class DecodeError(ValueError):
    """The bytes are not a valid envelope of a version we speak."""


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """What every datagram and frame carries: who sent it, in which cluster, and what."""

    label: LabelField
    sender: NameField
    messages: Annotated[list[Message], msgspec.Meta(max_length=limits.MAX_MESSAGES_PER_ENVELOPE)]


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Envelope)


def encode(envelope: Envelope) -> bytes:
    """Serialize an envelope (header + msgpack body)."""
    return _HEADER + _encoder.encode(envelope)


def encoded_size(message: Message) -> int:
    """Bytes ``message`` adds to an envelope's message list (for packing datagrams)."""
    return len(_encoder.encode(message))


def decode(data: bytes | bytearray | memoryview, max_size: int = MAX_FRAME_BYTES) -> Envelope:
    """Parse ``data`` into an envelope, or raise DecodeError. Never raises anything else."""
    try:
        size = len(data)
        if size > max_size:
            raise DecodeError(f"envelope of {size} bytes exceeds the limit of {max_size}")
        if size < _HEADER_LEN:
            raise DecodeError("truncated envelope header")
        view = memoryview(data)
        if bytes(view[:2]) != MAGIC:
            raise DecodeError("bad magic (not a plumtree envelope)")
        if view[2] != VERSION:
            raise DecodeError(f"unsupported wire version {view[2]} (this node speaks {VERSION})")
        return _decoder.decode(view[_HEADER_LEN:])
    except DecodeError:
        raise
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodeError(str(exc)) from None
    except Exception as exc:  # pragma: no cover - defence in depth: the decoder is total
        raise DecodeError(f"undecodable envelope: {type(exc).__name__}") from None
