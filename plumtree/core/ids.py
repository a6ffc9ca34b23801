"""Message identity: every broadcast is ``(origin, epoch, seq)``, its id derived from that.

An id is 16 bytes, shown as 32 hex characters: the 8-byte *stream key* of
``(origin, epoch)`` (a hash), then ``seq`` as 8 big-endian bytes. So the ids of one
origin's epoch share their first half, the sequence number is readable in the second,
and an id names its stream exactly: dedup, gaps and repair work per stream by sequence
numbers (``core/streams.py``), never by lists of ids that must be forgotten some day.

``seq`` is dense per stream and starts at 1. The epoch changes only when an origin starts
without its store (then its counter restarts too, and a new epoch keeps the new
numbers apart from the old ones).
"""

from __future__ import annotations

import random
from hashlib import blake2b

MESSAGE_ID_LEN = 16
STREAM_KEY_LEN = 8
#: sequence numbers and epochs fit a signed 64-bit integer (msgpack, sqlite)
MAX_SEQ = 2**63 - 1
MAX_EPOCH = 2**63 - 1

MessageId = bytes
StreamKey = bytes


def stream_key(origin: str, epoch: int) -> StreamKey:
    """The 8-byte key of ``(origin, epoch)``: the first half of each of its message ids."""
    data = origin.encode("utf-8", "surrogatepass") + b"\0" + epoch.to_bytes(8, "big")
    return blake2b(data, digest_size=STREAM_KEY_LEN).digest()


def message_id(key: StreamKey, seq: int) -> MessageId:
    """The id of message ``seq`` of the stream with key ``key``."""
    return key + seq.to_bytes(8, "big")


def id_key(message_id: MessageId) -> StreamKey:
    return message_id[:STREAM_KEY_LEN]


def id_seq(message_id: MessageId) -> int:
    return int.from_bytes(message_id[STREAM_KEY_LEN:], "big")


def new_message_id(rng: random.Random) -> MessageId:
    """A random id (the flood baseline of the simulator, which keeps no streams)."""
    return rng.getrandbits(8 * MESSAGE_ID_LEN).to_bytes(MESSAGE_ID_LEN, "big")


def format_id(message_id: MessageId) -> str:
    """Hex form used in logs, the admin API and the CLI."""
    return message_id.hex()


def parse_id(text: str) -> MessageId:
    """Parse the hex form; raises ValueError on anything that is not a 32-char hex id."""
    if len(text) != 2 * MESSAGE_ID_LEN:
        raise ValueError(f"message id must be {2 * MESSAGE_ID_LEN} hex characters")
    return bytes.fromhex(text)
