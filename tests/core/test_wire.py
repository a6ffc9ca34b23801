"""The codec: every message round-trips, and no input makes decode raise anything else."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumtree.core import limits, wire
from plumtree.core.messages import (
    Ack,
    Alive,
    Dead,
    Gossip,
    Graft,
    IHave,
    KeyRequest,
    KeyResponse,
    MemberState,
    Nack,
    Ping,
    PingReq,
    Prune,
    PushPull,
    QueryAck,
    QueryRequest,
    QueryResponse,
    Repair,
    StreamDigest,
    Suspect,
    Sync,
)
from plumtree.core.wire import DecodeError, Envelope, decode, encode

ids = st.binary(min_size=16, max_size=16)
rounds = st.integers(0, limits.MAX_ROUND)
seqs = st.integers(0, limits.MAX_SEQ)
incs = st.integers(0, limits.MAX_INCARNATION)
names = st.text(min_size=1, max_size=20)
addrs = st.text(max_size=30)
epochs = st.integers(0, 2**63 - 1)
stream_seqs = st.integers(0, 2**63 - 1)
metas = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)

messages = st.one_of(
    st.builds(Gossip, ids, rounds, names, epochs, st.binary(max_size=256)),
    st.builds(Repair, ids, rounds, names, epochs, st.binary(max_size=256)),
    st.builds(
        Sync,
        st.lists(
            st.builds(
                StreamDigest,
                names,
                epochs,
                stream_seqs,
                stream_seqs,
                stream_seqs,
                st.lists(st.tuples(stream_seqs, stream_seqs), max_size=4),
            ),
            max_size=4,
        ),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(IHave, st.lists(st.tuples(ids, rounds), max_size=8)),
    st.builds(Graft, st.lists(ids, max_size=8)),
    st.just(Prune()),
    st.builds(Ping, seqs, st.text(max_size=20)),
    st.builds(Ack, seqs),
    st.builds(PingReq, seqs, names, addrs),
    st.builds(Nack, seqs),
    st.builds(Alive, names, incs, addrs, metas),
    st.builds(Suspect, names, incs, names),
    st.builds(Dead, names, incs, names),
    st.builds(
        PushPull,
        st.booleans(),
        st.booleans(),
        st.lists(st.builds(MemberState, names, addrs, incs, st.integers(0, 3), metas), max_size=4),
    ),
    st.builds(
        KeyRequest,
        ids,
        st.sampled_from(["install", "use", "remove", "list"]),
        st.binary(max_size=32),
    ),
    st.builds(
        KeyResponse,
        ids,
        st.booleans(),
        st.text(max_size=40),
        st.text(max_size=16),
        st.lists(st.text(max_size=16), max_size=4),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(QueryRequest, ids, st.text(max_size=20), st.binary(max_size=64), st.floats(0, 60)),
    st.builds(QueryAck, ids),
    st.builds(QueryResponse, ids, st.booleans(), st.binary(max_size=64), st.text(max_size=40)),
)
envelopes = st.builds(Envelope, st.text(max_size=10), names, st.lists(messages, max_size=6))


@given(envelopes)
def test_every_message_round_trips(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@given(st.binary(max_size=512))
def test_random_body_behind_a_valid_header_only_raises_decode_error(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(wire.MAGIC + bytes([wire.VERSION]) + body)


@given(envelopes, st.data())
def test_mutated_envelopes_decode_or_raise_decode_error(
    envelope: Envelope, data: st.DataObject
) -> None:
    raw = bytearray(encode(envelope))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        result = decode(bytes(raw))
    except DecodeError:
        return
    assert isinstance(result, Envelope)


def test_oversize_input_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(b"PT\x01" + b"\x00" * 2000, max_size=1400)


def test_header_checks_name_the_problem() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode(b"PT")
    with pytest.raises(DecodeError, match="magic"):
        decode(b"XX\x01\x90")
    with pytest.raises(DecodeError, match="version 9"):
        decode(b"PT\x09\x90")


def test_field_bounds_are_enforced_by_the_decoder() -> None:
    enc = msgspec.msgpack.Encoder()
    header = wire.MAGIC + bytes([wire.VERSION])
    too_many = [[2, [[b"x" * 16, 0]] * (limits.MAX_IHAVE_IDS + 1)]]
    with pytest.raises(DecodeError):
        decode(header + enc.encode(["", "a", too_many]))
    short_id = [[1, b"x" * 15, 0, "o", b""]]
    with pytest.raises(DecodeError):
        decode(header + enc.encode(["", "a", short_id]))
    negative_round = [[1, b"x" * 16, -1, "o", b""]]
    with pytest.raises(DecodeError):
        decode(header + enc.encode(["", "a", negative_round]))
    unknown_tag = [[99]]
    with pytest.raises(DecodeError):
        decode(header + enc.encode(["", "a", unknown_tag]))
    # keyring queries: a known op, a key of at most 32 bytes, a bounded answer
    for bad in (
        [20, b"q" * 16, "format", b""],
        [20, b"q" * 16, "install", b"k" * 33],
        [20, b"q" * 15, "list", b""],
        [21, b"q" * 16, True, "e" * (limits.MAX_ERROR_LEN + 1), "", []],
        [21, b"q" * 16, True, "", "", ["f"] * (limits.MAX_KEYRING_KEYS + 1)],
        [21, b"q" * 16, True, "", "f" * (limits.MAX_FINGERPRINT_LEN + 1), []],
        [22, b"q" * 16, "n" * (limits.MAX_QUERY_NAME_LEN + 1), b"", 1.0],
        [22, b"q" * 16, "n", b"p" * (limits.MAX_QUERY_PAYLOAD + 1), 1.0],
        [22, b"q" * 16, "n", b"", -1.0],
        [23, b"q" * 17],
        [24, b"q" * 16, True, b"r" * (limits.MAX_QUERY_RESPONSE + 1), ""],
        [24, b"q" * 16, True, b"", "e" * (limits.MAX_ERROR_LEN + 1)],
    ):
        with pytest.raises(DecodeError):
            decode(header + enc.encode(["", "a", [bad]]))
    ok = decode(header + enc.encode(["", "a", [[20, b"q" * 16, "list", b""]]]))
    assert ok.messages == [KeyRequest(b"q" * 16, "list", b"")]


def test_a_huge_declared_length_does_not_allocate() -> None:
    # bin32 header claiming 4 GiB followed by nothing: must fail fast as truncated
    header = wire.MAGIC + bytes([wire.VERSION])
    body = b"\x93\xa0\xa1a\x91\x95\x01\xc6\xff\xff\xff\xff"
    with pytest.raises(DecodeError):
        decode(header + body)


def test_encoded_size_matches_what_the_envelope_grows_by() -> None:
    msg = Alive("node-1", 3, "127.0.0.1:7946", {"admin": "http://127.0.0.1:7947"})
    empty = len(encode(Envelope("c", "s", [])))
    one = len(encode(Envelope("c", "s", [msg])))
    assert one - empty == wire.encoded_size(msg)
