"""Hard bounds on everything that crosses the wire.

The decoder enforces these, so a peer (or an attacker) can never make a node allocate
more than a constant factor of the bytes it actually sent.
"""

from __future__ import annotations

#: Largest UDP datagram we build or accept (memberlist's UDPBufferSize).
MAX_DATAGRAM_BYTES = 1400
#: Largest TCP frame we accept (push-pull of a 10k-member table fits comfortably).
MAX_FRAME_BYTES = 8 * 1024 * 1024
#: Largest broadcast payload the wire can carry; the configured limit is at most this.
MAX_PAYLOAD_BYTES = 1024 * 1024
#: Message ids announced in one IHave / requested in one Graft.
MAX_IHAVE_IDS = 256
#: Streams in one anti-entropy digest (a node with more sends them in turns), and the
#: delivered ranges above the watermark listed per stream.
MAX_DIGEST_STREAMS = 4096
MAX_DIGEST_RANGES = 64
#: Messages in one envelope (a ping plus piggybacked membership updates, say).
MAX_MESSAGES_PER_ENVELOPE = 512
#: Members in one push-pull state exchange.
MAX_PUSHPULL_MEMBERS = 20_000
#: Node names and cluster labels.
MAX_NAME_LEN = 128
MAX_LABEL_LEN = 64
#: Addresses ("host:port", IPv6 in brackets).
MAX_ADDR_LEN = 64
#: Member metadata (memberlist's MetaMaxSize is 512 bytes; we bound entries and lengths).
MAX_META_ENTRIES = 32
MAX_META_KEY_LEN = 64
MAX_META_VALUE_LEN = 256
#: Rounds (hop counts) and sequence numbers.
MAX_ROUND = 65_535
MAX_SEQ = 2**32 - 1
MAX_INCARNATION = 2**63 - 1
#: Keyring queries (``plumctl keys`` over gossip): request ids, the largest AES key,
#: keys listed in one answer (a fingerprint each) and the length of an error text.
KEY_QUERY_ID_LEN = 16
MAX_KEY_BYTES = 32
MAX_KEYRING_KEYS = 64
MAX_FINGERPRINT_LEN = 16
MAX_ERROR_LEN = 256

#: The most an update heard second-hand may raise the incarnation we hold for a member
#: (and a claim about ourselves may exceed our own): beyond it the update is refused and
#: counted. A member bumps its incarnation once per refutation or metadata change, so a
#: real jump this large is never seen; a forged ``Dead(x, 2**63 - 1)`` is refused, and
#: whatever a node does accept about a member, that member can still refute.
INCARNATION_WINDOW = 1024
#: The highest incarnation a member we never heard of may have (and a node that has not
#: joined yet accepts about itself: after a restart it must catch up with its old life).
#: 2**32 bumps are never reached; 2**63 stays far away however many windows are walked.
MAX_NEW_INCARNATION = 2**32

#: Queries (``plumctl query``): a query's name, its payload, and one member's response
#: (serf's default query response size limit is 1 KiB).
MAX_QUERY_NAME_LEN = 64
MAX_QUERY_PAYLOAD = 8192
MAX_QUERY_RESPONSE = 1024
