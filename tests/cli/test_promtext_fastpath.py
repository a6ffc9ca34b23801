"""promtext's fast path agrees with prometheus_client's parser, result for result.

:func:`plumctl.promtext.parse` reads plain expositions with regular expressions and hands
anything unusual to prometheus_client's parser. Every test parses the same text both
ways (the fast path switched off for the second) and wants the same samples, families,
sample types, or the same refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)

from plumctl import promtext
from plumctl.promtext import ExpositionError, parse


@contextmanager
def slow_only() -> Iterator[None]:
    with mock.patch.object(promtext, "_fast_families", lambda text: None):
        yield


def outcome(text: str) -> tuple[Any, ...]:
    try:
        s = parse(text, 1.0)
    except ExpositionError:
        return ("error",)
    return (
        "ok",
        {k: repr(v) for k, v in s.samples.items()},
        dict(s.families),
        {n: s.type_of(n) for n in s.names()},
    )


def same_both_ways(text: str) -> tuple[Any, ...]:
    fast = outcome(text)
    with slow_only():
        slow = outcome(text)
    assert fast == slow, text
    return fast


# -- expositions written by prometheus_client ---------------------------------------------

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.startswith("__")
)
PLAIN_VALUES = st.text(alphabet="abcXYZ019 .-_:/{}=,", max_size=8)
ANY_VALUES = st.text(alphabet='abc019 .-_"\\\n{},=é\t', max_size=8)
NUMBERS = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 2.5]),
)


class Families:
    """A collector yielding whatever families the test drew."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


@st.composite
def families(draw: st.DrawFn, values: st.SearchStrategy[str]) -> list[Any]:
    out: list[Any] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 5))):
        base = draw(NAMES)
        if any(base in u or u in base for u in used):
            continue
        used.add(base)
        kind = draw(st.sampled_from(["counter", "gauge", "histogram", "summary", "info"]))
        label_names = draw(st.lists(NAMES, max_size=2, unique=True))
        rows = draw(st.lists(st.tuples(*(values for _ in label_names)), max_size=3, unique=True))
        if kind == "counter":
            f: Any = CounterMetricFamily(base, "doc", labels=label_names)
            for row in rows:
                f.add_metric(list(row), draw(NUMBERS))
        elif kind == "gauge":
            f = GaugeMetricFamily(base, "doc \\ with\nnewline", labels=label_names)
            for row in rows:
                f.add_metric(list(row), draw(NUMBERS))
        elif kind == "histogram":
            f = HistogramMetricFamily(base, "doc", labels=[n for n in label_names if n != "le"])
            for row in rows:
                counts = sorted(draw(st.lists(st.integers(0, 100), min_size=2, max_size=4)))
                bounds = [*["0.1", "1.0", "5.0"][: len(counts) - 1], "+Inf"]
                f.add_metric(
                    list(row)[: len(f._labelnames)],
                    list(zip(bounds, counts, strict=True)),
                    sum_value=draw(NUMBERS),
                )
        elif kind == "summary":
            f = SummaryMetricFamily(base, "doc", labels=label_names)
            for row in rows:
                f.add_metric(list(row), count_value=draw(st.integers(0, 9)), sum_value=1.5)
        else:
            f = InfoMetricFamily(base, "doc", labels=label_names)
            for row in rows:
                f.add_metric(list(row), {"version": draw(values)})
        out.append(f)
    return out


def exposition(fams: list[Any]) -> str:
    registry = CollectorRegistry()
    registry.register(Families(fams))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


@given(families(ANY_VALUES))
def test_prometheus_client_expositions_parse_the_same(fams: list[Any]) -> None:
    same_both_ways(exposition(fams))


@given(families(PLAIN_VALUES))
def test_plain_expositions_take_the_fast_path(fams: list[Any]) -> None:
    text = exposition(fams)
    assert promtext._fast_families(text) is not None, text
    same_both_ways(text)


# -- line soup: the state machine's corners -------------------------------------------------

POOL = ["a", "a_total", "a_count", "a_sum", "a_bucket", "a_created", "b", "b_total", "b_bucket"]
LINES = st.one_of(
    st.builds(lambda n, d: f"# HELP {n} {d}", st.sampled_from(POOL), st.sampled_from(["", "x y"])),
    st.builds(
        lambda n, t: f"# TYPE {n} {t}",
        st.sampled_from(POOL),
        st.sampled_from(["counter", "gauge", "histogram", "summary", "untyped", "info", "x"]),
    ),
    st.builds(
        lambda n, labels, v: f"{n}{labels} {v}",
        st.sampled_from(POOL),
        st.sampled_from(
            ["", "{}", '{le="1"}', '{le="+Inf"}', '{x="1",}', '{x="1",y="2"}', '{x="}"}']
        ),
        st.sampled_from(["1", "-0", "1.5e3", "NaN", "+Inf", "1_0", "x", "2 3"]),
    ),
    st.sampled_from(
        [
            "",
            "#",
            "# HELP",
            "# TYPE a",
            "#TYPE a counter",
            "# comment words here",
            '# HELP "a" quoted',
            'a {x="1"} 2',
            'a{x = "1"} 2',
            'a{x="1"}2',
            'a{__name__="b"} 1',
            'a{x="1",x="2"} 1',
            'a{x="\\\\"} 1',
            "  a\t1  ",
            'a 1 # {t="1"} 2',
            "é 1",
            "a\x0b1",
            "a\r",
        ]
    ),
)


@given(st.lists(LINES, max_size=12))
def test_line_soup_parses_the_same(lines: list[str]) -> None:
    same_both_ways("\n".join(lines))


@given(st.data())
def test_mutated_expositions_parse_the_same(data: st.DataObject) -> None:
    text = exposition(data.draw(families(PLAIN_VALUES)))
    if not text:
        return
    at = data.draw(st.integers(0, len(text) - 1))
    insert = data.draw(st.sampled_from(['"', "{", "}", " ", "\n", "_", ",", "=", "#", "x", ""]))
    cut = data.draw(st.integers(0, 3))
    same_both_ways(text[:at] + insert + text[at + cut :])


def test_a_node_exposition_takes_the_fast_path() -> None:
    fams: list[Any] = [
        CounterMetricFamily("plumtree_graft_sent", "Graft messages sent", value=12),
        GaugeMetricFamily("plumtree_eager_peers", "Current eager peer count", value=2),
        HistogramMetricFamily(
            "plumtree_message_hops",
            "Number of hops messages travel",
            buckets=[("1.0", 3), ("2.0", 5), ("+Inf", 6)],
            sum_value=9,
        ),
    ]
    transport = CounterMetricFamily("plumtree_transport_bytes_sent", "Bytes", labels=["proto"])
    transport.add_metric(["udp"], 100)
    transport.add_metric(["tcp"], 200)
    fams.append(transport)
    text = exposition(fams)
    assert promtext._fast_families(text) is not None
    kind, samples, families_, _types = same_both_ways(text)
    assert kind == "ok"
    assert samples[("plumtree_graft_sent_total", frozenset())] == "12.0"
    assert families_["plumtree_graft_sent"] == "counter"


def test_remembered_label_sets_and_comments_stay_bounded() -> None:
    """Nodes repeat their label sets and comments, so the fast path remembers them; a
    node with ever-new label values must not grow that memory without bound."""
    from plumctl import promtext

    lines = [f'# HELP m{i} x\n# TYPE m{i} gauge\nm{i}{{id="{i}"}} 1' for i in range(9000)]
    scrape = promtext.parse("\n".join(lines) + "\n", 0.0)
    assert scrape.value("m8999", id="8999") == 1.0
    assert len(promtext._LABEL_SETS) <= promtext._MEMO_MAX
    assert len(promtext._COMMENTS) <= promtext._MEMO_MAX
    again = promtext.parse('# TYPE m1 gauge\nm1{id="1"} 2\n', 1.0)
    assert again.value("m1", id="1") == 2.0
