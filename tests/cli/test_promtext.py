"""plumctl.promtext: exposition text -> Scrape, with the prometheus_client pitfalls covered."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from plumctl.promtext import ExpositionError, Scrape, parse
from plumtree.core.stats import GRAFT_LATENCY_BUCKETS


def _node_exposition() -> str:
    """What a node's registry really produces (prometheus_client defaults: _created on)."""
    reg = CollectorRegistry()
    Counter("plumtree_graft_sent_total", "Grafts sent", registry=reg).inc(7)
    Counter("plumtree_graft_failed", "Grafts failed", registry=reg).inc(2)  # _total added
    sent = Counter("plumtree_transport_bytes_sent_total", "bytes", ["proto"], registry=reg)
    sent.labels("udp").inc(100)
    sent.labels("tcp").inc(250)
    Gauge("plumtree_eager_peers", "eager", registry=reg).set(3)
    members = Gauge("swim_members", "members", ["state"], registry=reg)
    members.labels("alive").set(5)
    members.labels("suspect").set(1)
    h = Histogram(
        "plumtree_graft_latency_seconds", "latency", buckets=GRAFT_LATENCY_BUCKETS, registry=reg
    )
    for v in (0.005, 0.03, 0.03, 0.2, 7.0):
        h.observe(v)
    return generate_latest(reg).decode()


def test_real_exposition_keys_by_sample_name_and_skips_created() -> None:
    text = _node_exposition()
    assert "_created" in text  # the pitfall is really present in the input
    s = parse(text, at=12.5)
    assert s.at == 12.5
    assert s.value("plumtree_graft_sent_total") == 7.0
    assert s.value("plumtree_graft_failed_total") == 2.0
    assert s.value("plumtree_graft_sent") is None  # family name is not a sample name
    assert not any(n.endswith("_created") for n in s.names())
    assert not any(n.endswith("_created") for n in s.families)
    assert s.type_of("plumtree_graft_sent_total") == "counter"
    assert s.families["plumtree_graft_sent"] == "counter"  # parser strips _total
    assert s.type_of("plumtree_eager_peers") == "gauge"
    assert s.type_of("plumtree_graft_latency_seconds_bucket") == "histogram"


def test_label_sets_value_sum_series() -> None:
    s = parse(_node_exposition(), at=0.0)
    assert s.value("plumtree_transport_bytes_sent_total", proto="udp") == 100.0
    assert s.value("plumtree_transport_bytes_sent_total", proto="tcp") == 250.0
    assert s.value("plumtree_transport_bytes_sent_total") is None  # exact label set only
    assert s.sum("plumtree_transport_bytes_sent_total") == 350.0
    assert s.sum("plumtree_transport_bytes_sent_total", proto="udp") == 100.0
    assert s.sum("swim_members") == 6.0
    assert s.value("swim_members", state="suspect") == 1.0
    assert s.series("swim_members", state="alive") == {frozenset({("state", "alive")}): 5.0}


def test_histogram_sorted_le_float_inf_last() -> None:
    s = parse(_node_exposition(), at=0.0)
    assert s.histogram("plumtree_graft_latency_seconds") == [
        (0.01, 1.0),
        (0.05, 3.0),
        (0.1, 3.0),
        (0.5, 4.0),
        (1.0, 4.0),
        (5.0, 4.0),
        (math.inf, 5.0),
    ]
    assert s.value("plumtree_graft_latency_seconds_count") == 5.0
    assert s.value("plumtree_graft_latency_seconds_sum") == pytest.approx(7.265)


def test_missing_metrics_are_unknown_not_errors() -> None:
    s = parse(_node_exposition(), at=0.0)
    assert s.value("plumtree_cache_capacity") is None
    assert s.sum("plumtree_cache_capacity") is None
    assert s.histogram("plumtree_message_hops") == []
    assert s.series("nope") == {}
    assert not s.has("plumtree_cache_capacity")
    assert s.type_of("nope") is None


def test_histogram_with_labels_sums_by_le_and_filters() -> None:
    # Prometheus's own test histogram (promql testdata/histograms.test), odd le spellings.
    text = """\
# TYPE testhistogram histogram
testhistogram_bucket{le="0.1",start="positive"} 50
testhistogram_bucket{le=".2",start="positive"} 70
testhistogram_bucket{le="1e0",start="positive"} 110
testhistogram_bucket{le="+Inf",start="positive"} 120
testhistogram_bucket{le="-.2",start="negative"} 10
testhistogram_bucket{le="-0.1",start="negative"} 20
testhistogram_bucket{le="0.3",start="negative"} 20
testhistogram_bucket{le="+Inf",start="negative"} 30
"""
    s = parse(text, at=0.0)
    assert s.histogram("testhistogram", start="positive") == [
        (0.1, 50.0),
        (0.2, 70.0),
        (1.0, 110.0),
        (math.inf, 120.0),
    ]
    assert s.histogram("testhistogram", start="negative")[0] == (-0.2, 10.0)
    both = s.histogram("testhistogram")
    assert both[-1] == (math.inf, 150.0)
    assert len(both) == 7  # -0.2, -0.1, 0.1, 0.2, 0.3, 1, +Inf
    assert set(s.histogram_series("testhistogram")) == {
        frozenset({("start", "positive")}),
        frozenset({("start", "negative")}),
    }
    # computed once and remembered: what a caller does to its copy changes nothing
    first = s.histogram_series("testhistogram")
    first[frozenset({("start", "positive")})].clear()
    first.clear()
    assert s.histogram_series("testhistogram") == s._group_buckets("testhistogram")
    assert len(s.histogram_series("testhistogram")[frozenset({("start", "positive")})]) == 4
    assert list(s.histogram_series("testhistogram", start="negative")) == [
        frozenset({("start", "negative")})
    ]
    plain = s.series("testhistogram_bucket")
    plain.clear()
    assert len(s.series("testhistogram_bucket")) == 8


def test_created_samples_inside_families_are_skipped() -> None:
    text = """\
# TYPE a_total counter
a_total 3
a_created 1700000000
# TYPE h histogram
h_bucket{le="1"} 1
h_bucket{le="+Inf"} 2
h_count 2
h_sum 1.5
h_created 1700000000
"""
    s = parse(text, at=0.0)
    assert s.names() == ["a_total", "h_bucket", "h_count", "h_sum"]


def test_untyped_and_special_values() -> None:
    s = parse("x 1\ny NaN\nz +Inf\nw -Inf\n", at=0.0)
    assert s.value("x") == 1.0
    y = s.value("y")
    assert y is not None and math.isnan(y)
    assert s.value("z") == math.inf
    assert s.value("w") == -math.inf


def test_from_samples_for_tests() -> None:
    s = Scrape.from_samples({("a_total", frozenset()): 2.0}, at=3.0)
    assert s.value("a_total") == 2.0 and s.at == 3.0


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "a{",
        'a{b="1",b="2"} 1',
        "# TYPE a counter\na_total x",
        "a 1\na 2\n",  # duplicate series
        '# TYPE h histogram\nh_bucket{le="zz"} 1\n',  # bucket without numeric le
        '# TYPE h histogram\nh_bucket{le="NaN"} 1\n',
        "\x00",
    ],
)
def test_bad_input_raises_exposition_error(text: str) -> None:
    with pytest.raises(ExpositionError):
        parse(text, at=0.0)


def test_non_text_raises_exposition_error() -> None:
    with pytest.raises(ExpositionError):
        parse(b"a 1", at=0.0)  # type: ignore[arg-type]


_LINE_ALPHABET = st.sampled_from(
    [*list('abcxyz_{}=",# \t\n.+-eE0123456789'), "le", "Inf", "NaN", "TYPE", "HELP", "\\", "é"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.lists(_LINE_ALPHABET, max_size=60).map("".join)))
def test_random_text_only_ever_raises_exposition_error(text: str) -> None:
    try:
        s = parse(text, at=0.0)
    except ExpositionError:
        return
    for name in s.names():  # accessors on whatever parsed never raise either
        s.sum(name)
        s.histogram(name.removesuffix("_bucket"))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_real_exposition_only_raises_exposition_error(data: st.DataObject) -> None:
    text = _EXPOSITION
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    junk = data.draw(st.text(max_size=5))
    with contextlib.suppress(ExpositionError):
        parse(text[:start] + junk + text[end:], at=0.0)


_EXPOSITION = _node_exposition()


def test_pure_modules_import_no_heavy_dependency() -> None:
    """plumctl.cli may import these at top level one day: they must stay cheap."""
    import subprocess
    import sys

    code = (
        "import sys, plumctl.promtext, plumctl.promql, plumctl.scoring\n"
        "print(sorted(m for m in ('prometheus_client', 'httpx', 'aiohttp', 'textual')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_labels_may_be_called_name() -> None:
    s = parse('peer_rtt{name="n2"} 0.5\n', at=0.0)
    assert s.value("peer_rtt", name="n2") == 0.5
    assert s.sum("peer_rtt", name="n2") == 0.5
