"""Per-origin streams: watermark dedup, exact holes, give-up and adoption, range algebra."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from plumtree.core.ids import id_key, id_seq, message_id, stream_key
from plumtree.core.messages import StreamDigest
from plumtree.core.streams import (
    Stream,
    StreamTable,
    digest_has,
    digest_held,
    subtract,
)


def test_in_order_deliveries_move_the_watermark_and_leave_no_ranges() -> None:
    s = Stream("o", 0)
    assert [s.add(i) for i in (1, 2, 3)] == [True, True, True]
    assert (s.wm, s.above, s.head, s.missing()) == (3, [], 3, 0)
    assert not s.add(2), "settled: never twice"


def test_out_of_order_deliveries_keep_exact_holes_until_they_close() -> None:
    s = Stream("o", 0)
    for seq in (1, 4, 5, 8):
        s.add(seq)
    assert s.above == [[4, 5], [8, 8]]
    assert list(s.holes()) == [(2, 3), (6, 7)]
    assert s.missing() == 4
    s.learn_head(10)
    assert list(s.holes()) == [(2, 3), (6, 7), (9, 10)] and s.missing() == 6
    for seq in (3, 2, 7, 6):
        s.add(seq)
    assert (s.wm, s.above, s.missing()) == (8, [], 2)


def test_giving_up_settles_the_holes_counts_them_and_moves_the_floor() -> None:
    s = Stream("o", 0)
    for seq in (1, 5, 6, 9):
        s.add(seq)
    gone = s.give_up(7)
    assert gone == [(2, 4), (7, 7)]
    assert (s.wm, s.above, s.lost_total, s.floor) == (7, [[9, 9]], 4, 8)
    assert list(s.held_ranges()) == [(9, 9)]
    assert s.has(3) and not s.delivered(3) and s.is_lost(3)
    assert s.delivered(5), "delivered, not lost (its payload is no longer offered)"
    assert s.add(8) and s.wm == 9, "the next delivery closes up to the range above"


def test_giving_up_a_hole_below_delivered_ranges_still_offers_those_ranges() -> None:
    """The floor moves past what was given up, not past the delivered range merged in
    above it: peers that were away still get 20..30 from us (a review found the floor
    at 31, and a node away declared them lost too)."""
    s = Stream("o", 0)
    s.add(1)
    for seq in range(20, 31):
        s.add(seq)
    s.give_up(19)
    assert (s.wm, s.floor) == (30, 20)
    assert list(s.held_ranges()) == [(20, 30)]
    t = Stream("o", 0)
    t.add(12)
    t.adopt(11, 15)
    assert (t.wm, t.floor) == (12, 12) and list(t.held_ranges()) == [(12, 12)]


def test_adopting_a_peers_start_skips_history_without_counting_it_lost() -> None:
    s = Stream("o", 0)
    s.add(12)
    s.adopt(10, 15)
    assert (s.wm, s.lost_total, s.floor, s.head) == (10, 0, 11, 15)
    assert list(s.holes()) == [(11, 11), (13, 15)]


def test_the_wire_digest_is_remade_only_when_the_stream_changes() -> None:
    s = Stream("o", 0)
    s.add(1)
    first = s.digest()
    assert s.digest() is first
    s.add(3)
    second = s.digest()
    assert second is not first and second.above == [(3, 3)]


def test_our_own_stream_is_shown_contiguous() -> None:
    s = Stream("me", 5)
    s.own = True
    for seq in (1, 2, 3):
        s.add(seq)
    d = s.digest()
    assert (d.wm, d.head, d.above) == (3, 3, [])


def test_ids_name_their_stream_and_seq() -> None:
    key = stream_key("node-1", 7)
    msg = message_id(key, 42)
    assert len(msg) == 16 and id_key(msg) == key and id_seq(msg) == 42
    assert stream_key("node-1", 8) != key and stream_key("node-2", 7) != key


def test_the_table_refuses_a_retired_epoch_and_a_key_that_is_not_the_streams() -> None:
    t = StreamTable()
    old = t.ensure("o", 1)
    assert old is not None
    new = t.ensure("o", 2)
    assert new is not None
    t.retire(old)
    assert t.ensure("o", 1) is None, "a replay of a retired epoch is not news"
    assert t.ensure("o", 0) is None
    assert t.ensure("o", 3, key=stream_key("x", 3)) is None
    assert t.ensure("o", 3, key=stream_key("o", 3)) is not None


def test_the_table_refuses_more_streams_than_its_bound() -> None:
    from plumtree.core import streams as mod

    t = StreamTable()
    for epoch in range(mod.MAX_EPOCHS_PER_ORIGIN):
        assert t.ensure("o", epoch) is not None
    assert t.ensure("o", 10_000) is None, "an origin cannot make the table grow"
    assert t.ensure("other", 0) is not None


def test_empty_streams_stay_out_of_the_digest() -> None:
    t = StreamTable()
    t.ensure("quiet", 0)
    busy = t.ensure("busy", 0)
    assert busy is not None
    busy.add(1)
    assert [d.origin for d in t.digest()] == ["busy"]


def test_a_digest_window_moves_so_every_stream_is_compared_in_turn() -> None:
    t = StreamTable()
    for i in range(5):
        s = t.ensure(f"o{i}", 0)
        assert s is not None
        s.add(1)
    seen = [d.origin for _ in range(3) for d in t.digest(limit=2)]
    assert set(seen) == {f"o{i}" for i in range(5)}


def test_digest_views() -> None:
    d = StreamDigest("o", 0, 5, 12, 3, [(8, 9), (11, 11)])
    assert [digest_has(d, x) for x in (1, 5, 6, 8, 10, 11, 12)] == [
        True,
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    assert list(digest_held(d)) == [(3, 5), (8, 9), (11, 11)]


@given(st.lists(st.integers(1, 60), max_size=200), st.integers(0, 60))
def test_each_seq_is_accepted_exactly_once_and_holes_are_exact(seqs: list[int], head: int) -> None:
    s = Stream("o", 0)
    model: set[int] = set()
    for seq in seqs:
        assert s.add(seq) == (seq not in model)
        model.add(seq)
    s.learn_head(head)
    top = max([head, *model], default=0)
    for seq in range(1, top + 2):
        assert s.has(seq) == (seq in model)
    holes = {x for lo, hi in s.holes() for x in range(lo, hi + 1)}
    assert holes == set(range(1, top + 1)) - model
    assert s.missing() == len(holes)
    assert s.wm == next(i for i in range(0, top + 2) if i + 1 not in model)


ranges = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 8)), max_size=6).map(
    lambda pairs: _normalise([(lo, lo + n) for lo, n in pairs])
)


def _normalise(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    points = sorted({x for lo, hi in pairs for x in range(lo, hi + 1)})
    out: list[tuple[int, int]] = []
    for x in points:
        if out and out[-1][1] == x - 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


@given(ranges, ranges)
def test_subtract_is_set_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    got = {x for lo, hi in subtract(a, b) for x in range(lo, hi + 1)}
    want = {x for lo, hi in a for x in range(lo, hi + 1)} - {
        x for lo, hi in b for x in range(lo, hi + 1)
    }
    assert got == want
