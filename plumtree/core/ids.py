"""Message identifiers: 16 opaque bytes, shown as 32 hex characters.

Ids come from the caller's random generator so that a seeded simulation is reproducible;
128 random bits make collisions negligible at any realistic broadcast rate.
"""

from __future__ import annotations

import random

MESSAGE_ID_LEN = 16

MessageId = bytes


def new_message_id(rng: random.Random) -> MessageId:
    """Draw a fresh id from ``rng``."""
    return rng.getrandbits(8 * MESSAGE_ID_LEN).to_bytes(MESSAGE_ID_LEN, "big")


def format_id(message_id: MessageId) -> str:
    """Hex form used in logs, the admin API and the CLI."""
    return message_id.hex()


def parse_id(text: str) -> MessageId:
    """Parse the hex form; raises ValueError on anything that is not a 32-char hex id."""
    if len(text) != 2 * MESSAGE_ID_LEN:
        raise ValueError(f"message id must be {2 * MESSAGE_ID_LEN} hex characters")
    return bytes.fromhex(text)
