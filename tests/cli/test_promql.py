"""plumctl.promql: increase/rate over two scrapes, histogram deltas, bucketQuantile port."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumctl.promql import (
    histogram_deltas,
    histogram_quantile,
    increase,
    rate,
    series_increase,
    window,
)
from plumctl.promtext import Scrape, parse

INF = math.inf
NO: frozenset[tuple[str, str]] = frozenset()


def scrape(at: float, **values: float) -> Scrape:
    return Scrape.from_samples({(k, NO): v for k, v in values.items()}, at=at)


def hist_text(name: str, buckets: list[tuple[str, float]], labels: str = "") -> str:
    sep = "," if labels else ""
    lines = [f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{{labels}{sep}le="{le}"}} {c}' for le, c in buckets]
    return "\n".join(lines) + "\n"


# -- increase / rate ----------------------------------------------------------------------


def test_increase_normal_and_reset() -> None:
    assert increase(10, 15) == 5
    assert increase(10, 10) == 0
    assert increase(10, 3) == 3  # restarted: everything since the restart


def test_rate_exact() -> None:
    prev = scrape(100.0, plumtree_graft_sent_total=10)
    cur = scrape(104.0, plumtree_graft_sent_total=20)
    assert window(prev, cur) == 4.0
    assert rate(prev, cur, "plumtree_graft_sent_total") == 2.5


def test_rate_counter_reset_between_scrapes() -> None:
    prev = scrape(0.0, c_total=1000)
    cur = scrape(2.0, c_total=6)  # the node restarted and counted 6 since
    assert rate(prev, cur, "c_total") == 3.0


def test_rate_unknown_cases() -> None:
    cur = scrape(5.0, c_total=3)
    assert rate(None, cur, "c_total") is None  # first poll
    assert rate(scrape(0.0), cur, "c_total") is None  # absent in prev (older node)
    assert rate(scrape(0.0, c_total=1), scrape(5.0), "c_total") is None  # absent in cur
    assert rate(scrape(5.0, c_total=1), cur, "c_total") is None  # zero window
    assert rate(scrape(6.0, c_total=1), cur, "c_total") is None  # negative window
    assert window(scrape(6.0), cur) is None


def test_rate_sums_label_sets_with_reset_per_series() -> None:
    def s(at: float, udp: float, tcp: float | None) -> Scrape:
        samples = {("b_total", frozenset({("proto", "udp")})): udp}
        if tcp is not None:
            samples[("b_total", frozenset({("proto", "tcp")}))] = tcp
        return Scrape.from_samples(samples, at=at)

    prev, cur = s(0.0, 100, 50), s(10.0, 150, 20)  # tcp reset: +20, udp +50
    assert rate(prev, cur, "b_total") == 7.0
    assert rate(prev, cur, "b_total", proto="udp") == 5.0
    assert series_increase(prev, cur, "b_total", proto="tcp") == 20.0
    # a series that only appears in cur has no rate yet (Prometheus needs two samples)
    assert rate(s(0.0, 100, None), s(10.0, 150, 999), "b_total") == 5.0


# -- histogram_deltas ---------------------------------------------------------------------


def test_histogram_deltas_bucketwise() -> None:
    prev = parse(hist_text("h", [("1", 2), ("2", 5), ("+Inf", 6)]), at=0.0)
    cur = parse(hist_text("h", [("1", 4), ("2", 9), ("+Inf", 12)]), at=1.0)
    assert histogram_deltas(prev, cur, "h") == [(1.0, 2.0), (2.0, 4.0), (INF, 6.0)]


def test_histogram_deltas_reset_uses_current_buckets() -> None:
    prev = parse(hist_text("h", [("1", 20), ("2", 50), ("+Inf", 60)]), at=0.0)
    cur = parse(hist_text("h", [("1", 1), ("2", 3), ("+Inf", 4)]), at=1.0)
    assert histogram_deltas(prev, cur, "h") == [(1.0, 1.0), (2.0, 3.0), (INF, 4.0)]


def test_histogram_deltas_reset_even_if_a_low_bucket_grew() -> None:
    # +Inf went down, so the histogram restarted, although le=1 is higher than before:
    # a per-bucket increase would say le=1 grew by 1 and +Inf by 6 (6 < 7 looks like reset)
    prev = parse(hist_text("h", [("1", 5), ("+Inf", 10)]), at=0.0)
    cur = parse(hist_text("h", [("1", 6), ("+Inf", 7)]), at=1.0)
    assert histogram_deltas(prev, cur, "h") == [(1.0, 6.0), (INF, 7.0)]


def test_histogram_deltas_layout_change_is_a_restart() -> None:
    prev = parse(hist_text("h", [("1", 5), ("+Inf", 10)]), at=0.0)
    cur = parse(hist_text("h", [("1", 6), ("5", 9), ("+Inf", 11)]), at=1.0)
    assert histogram_deltas(prev, cur, "h") == [(1.0, 6.0), (5.0, 9.0), (INF, 11.0)]


def test_histogram_deltas_absent() -> None:
    cur = parse(hist_text("h", [("1", 1), ("+Inf", 1)]), at=1.0)
    assert histogram_deltas(None, cur, "h") == []
    assert histogram_deltas(parse("", at=0.0), cur, "h") == []
    assert histogram_deltas(cur, cur, "other") == []


def test_histogram_deltas_per_series_then_summed() -> None:
    def two(a: tuple[float, float], b: tuple[float, float], at: float) -> Scrape:
        return parse(
            hist_text("h", [("1", a[0]), ("+Inf", a[1])], 'p="a"')
            + hist_text("h", [("1", b[0]), ("+Inf", b[1])], 'p="b"').split("\n", 1)[1],
            at=at,
        )

    prev, cur = two((1, 2), (10, 20), 0.0), two((3, 5), (1, 1), 1.0)  # series b restarted
    assert histogram_deltas(prev, cur, "h") == [(1.0, 2.0 + 1.0), (INF, 3.0 + 1.0)]
    assert histogram_deltas(prev, cur, "h", p="a") == [(1.0, 2.0), (INF, 3.0)]


# -- histogram_quantile: worked examples ---------------------------------------------------

B = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (INF, 40.0)]


def test_quantile_interpolates_linearly() -> None:
    # rank 20 lies in (0.1, 0.5] holding counts 10..30: 0.1 + 0.4 * 10/20
    assert histogram_quantile(0.5, B) == pytest.approx(0.3)


def test_quantile_exactly_on_bucket_boundary() -> None:
    assert histogram_quantile(0.75, B) == pytest.approx(0.5)  # rank 30 == count(le=0.5)
    assert histogram_quantile(0.25, B) == pytest.approx(0.1)  # rank 10 == count(le=0.1)
    assert histogram_quantile(1.0, B) == pytest.approx(1.0)


def test_quantile_first_bucket_interpolates_from_zero() -> None:
    assert histogram_quantile(0.5, [(1.0, 4.0), (INF, 4.0)]) == 0.5
    assert histogram_quantile(0.1, B) == pytest.approx(0.04)


def test_quantile_first_bucket_non_positive_bound_returns_bound() -> None:
    assert histogram_quantile(0.3, [(-1.0, 5.0), (0.0, 5.0), (INF, 10.0)]) == -1.0
    assert histogram_quantile(0.3, [(0.0, 5.0), (1.0, 5.0), (INF, 10.0)]) == 0.0


def test_quantile_in_inf_bucket_returns_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, [(1.0, 1.0), (2.0, 2.0), (INF, 10.0)]) == 2.0


def test_quantile_nan_cases() -> None:
    assert math.isnan(histogram_quantile(0.5, []))
    assert math.isnan(histogram_quantile(0.5, [(1.0, 3.0), (2.0, 4.0)]))  # no +Inf
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (INF, 0.0)]))  # no observations
    assert math.isnan(histogram_quantile(0.5, [(INF, 5.0)]))  # fewer than 2 buckets
    assert math.isnan(histogram_quantile(math.nan, B))
    # Go divides 0/0 to NaN: q=0 with an empty first bucket
    assert math.isnan(histogram_quantile(0.0, [(1.0, 0.0), (2.0, 5.0), (INF, 5.0)]))


def test_quantile_out_of_range_q_checked_first() -> None:
    assert histogram_quantile(-0.1, B) == -INF
    assert histogram_quantile(1.01, B) == INF
    assert histogram_quantile(-0.1, []) == -INF  # as Prometheus: q is checked first


def test_quantile_sorts_and_coalesces_duplicate_le() -> None:
    shuffled = [(INF, 5.0), (1.0, 2.0), (0.5, 1.0), (1.0, 2.0)]
    # coalesced: (0.5, 1), (1, 4), (+Inf, 5); rank 2.5 -> 0.5 + 0.5 * 1.5/3
    assert histogram_quantile(0.5, shuffled) == pytest.approx(0.75)


def test_quantile_forces_monotonic_counts() -> None:
    # le=2 below le=1 (inconsistent input): the envelope makes it 5
    assert histogram_quantile(0.5, [(1.0, 5.0), (2.0, 3.0), (INF, 6.0)]) == pytest.approx(0.6)


def test_quantile_fixes_float_precision_noise() -> None:
    # le=2 exceeds le=1 by 1e-13 relative: noise, snapped to 10. Without the fix rank
    # 10+2e-13 would land in (1, 2] and answer ~1.2; with it, it lands in (2, 4].
    bs = [(1.0, 10.0), (2.0, 10.0 * (1 + 1e-13)), (4.0, 20.0), (INF, 20.0)]
    assert histogram_quantile(0.5 + 1e-14, bs) == pytest.approx(2.0)


# -- histogram_quantile: Prometheus's own test vectors ------------------------------------
# promql/promqltest/testdata/histograms.test (prometheus/prometheus), values at 50m.

TESTHISTOGRAM = {
    "positive": [("0.1", 50), (".2", 70), ("1e0", 110), ("+Inf", 120)],
    "negative": [("-.2", 10), ("-0.1", 20), ("0.3", 20), ("+Inf", 30)],
}
TESTHISTOGRAM3 = {
    "positive": [("0", 0), ("0.1", 50), (".2", 70), ("1e0", 110), ("+Inf", 110)],
    "negative": [("-.25", 0), ("-.2", 10), ("-0.1", 20), ("0.3", 20), ("+Inf", 20)],
}


def _buckets(spec: Sequence[tuple[str, float]]) -> list[tuple[float, float]]:
    return [(float(le), float(c)) for le, c in spec]


@pytest.mark.parametrize(
    ("q", "positive", "negative"),
    [(0, 0, -0.2), (1, 1, 0.3), (0.2, 0.048, -0.2), (0.5, 0.15, -0.15), (0.8, 0.72, 0.3)],
)
def test_prometheus_testhistogram(q: float, positive: float, negative: float) -> None:
    assert histogram_quantile(q, _buckets(TESTHISTOGRAM["positive"])) == pytest.approx(positive)
    assert histogram_quantile(q, _buckets(TESTHISTOGRAM["negative"])) == pytest.approx(negative)


@pytest.mark.parametrize(
    ("q", "positive", "negative"),
    [(0, 0, -0.25), (0.25, 0.055, -0.225), (0.5, 0.125, -0.2), (0.75, 0.45, -0.15), (1, 1, -0.1)],
)
def test_prometheus_testhistogram3(q: float, positive: float, negative: float) -> None:
    assert histogram_quantile(q, _buckets(TESTHISTOGRAM3["positive"])) == pytest.approx(positive)
    assert histogram_quantile(q, _buckets(TESTHISTOGRAM3["negative"])) == pytest.approx(negative)


@pytest.mark.parametrize(("q", "want"), [(1 / 6, 1.0), (0.5, 3.0), (5 / 6, 5.0)])
def test_prometheus_testhistogram2_middle_of_buckets(q: float, want: float) -> None:
    # at 7m: 0+1x10 etc. evaluated at step 1 -> counts 0, 1, 2, 3, 3
    bs = [(0.0, 0.0), (2.0, 1.0), (4.0, 2.0), (6.0, 3.0), (INF, 3.0)]
    assert histogram_quantile(q, bs) == pytest.approx(want)


@pytest.mark.parametrize(("q", "want"), [(0.01, 0.0045), (0.5, 8.5), (0.99, 979.75)])
def test_prometheus_nonmonotonic(q: float, want: float) -> None:
    bs = [(0.1, 20.0), (1.0, 10.0), (10.0, 50.0), (100.0, 40.0), (1000.0, 90.0), (INF, 80.0)]
    assert histogram_quantile(q, bs) == pytest.approx(want)


@pytest.mark.parametrize(("q", "want"), [(0.5, 0.15), (0.75, 0.2), (1.0, 0.2)])
def test_prometheus_mixed_le_representations(q: float, want: float) -> None:
    text = hist_text(
        "mixed",
        [("0.1", 10), ("0.2", 10), ("2e-1", 10), ("2.0e-1", 10), ("+Inf", 40)],
        'instance="ins1"',
    )
    assert histogram_quantile(q, parse(text, at=0.0).histogram("mixed")) == pytest.approx(want)
    ins2 = hist_text("mixed", [("+inf", 0), ("+Inf", 0)], 'instance="ins2"')
    assert math.isnan(histogram_quantile(q, parse(ins2, at=0.0).histogram("mixed")))


@pytest.mark.parametrize(("q", "want"), [(0.3, 0.075), (0.5, 0.1277777777777778)])
def test_prometheus_aggregated_rate_via_deltas(q: float, want: float) -> None:
    # request_duration_seconds_bucket, 4 series, rate over [10m] at 50m == deltas 40m->50m;
    # then sum by (le): exactly what histogram_deltas does over label sets.
    series = {
        'job="job1",instance="ins1"': (1, 3, 4),
        'job="job1",instance="ins2"': (2, 5, 6),
        'job="job2",instance="ins1"': (3, 4, 6),
        'job="job2",instance="ins2"': (4, 7, 9),
    }

    def at(step: int) -> Scrape:
        lines = ["# TYPE request_duration_seconds histogram"]
        for labels, (a, b, c) in series.items():
            for le, per_step in (("0.1", a), ("0.2", b), ("+Inf", c)):
                lines.append(
                    f'request_duration_seconds_bucket{{{labels},le="{le}"}} {per_step * step}'
                )
        return parse("\n".join(lines) + "\n", at=step * 300.0)

    deltas = histogram_deltas(at(8), at(10), "request_duration_seconds")
    assert histogram_quantile(q, deltas) == pytest.approx(want)
    by_job = histogram_deltas(at(8), at(10), "request_duration_seconds", job="job2")
    assert histogram_quantile(0.3, by_job) == pytest.approx(0.0642857142857143)


# -- property: never raises, stays within the bounds -----------------------------------------


@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(
        st.tuples(
            st.one_of(st.floats(-1e6, 1e6), st.just(INF)),
            st.floats(0, 1e9),
        ),
        max_size=12,
    ),
)
def test_quantile_total_and_bounded(q: float, bs: list[tuple[float, float]]) -> None:
    v = histogram_quantile(q, bs)
    assert isinstance(v, float)
    if 0 <= q <= 1 and not math.isnan(v):
        finite = [le for le, _ in bs if not math.isinf(le)]
        assert min([*finite, 0.0]) <= v <= max([*finite, 0.0])
