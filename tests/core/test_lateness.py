"""The adaptive IHave timer: RFC 6298 arithmetic, clamped to [floor, ceiling]."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plumtree.core.config import ConfigError, PlumtreeConfig
from plumtree.core.lateness import LatenessEstimator


def test_starts_at_the_floor() -> None:
    assert LatenessEstimator(0.1, 1.0).timeout == 0.1


def test_first_sample_sets_mean_and_half_deviation() -> None:
    est = LatenessEstimator(0.01, 10.0)
    est.observe(0.2)
    assert est.mean == pytest.approx(0.2) and est.deviation == pytest.approx(0.1)
    assert est.timeout == pytest.approx(0.2 + 4 * 0.1)


def test_later_samples_are_smoothed() -> None:
    est = LatenessEstimator(0.01, 10.0)
    est.observe(0.2)
    est.observe(0.6)
    # deviation first (with the old mean), then the mean: RFC 6298 section 2.3
    assert est.deviation == pytest.approx(0.1 + 0.25 * (0.4 - 0.1))
    assert est.mean == pytest.approx(0.2 + 0.125 * 0.4)


def test_clamped_to_floor_and_ceiling() -> None:
    est = LatenessEstimator(0.1, 0.5)
    est.observe(0.001)
    assert est.timeout == 0.1
    est.observe(30.0)
    assert est.timeout == 0.5


def test_fast_steady_copies_bring_the_timer_back_down() -> None:
    est = LatenessEstimator(0.05, 1.0)
    est.observe(0.9)
    assert est.timeout == 1.0
    for _ in range(60):
        est.observe(0.01)
    assert est.timeout == pytest.approx(0.05)


@given(st.lists(st.floats(min_value=-1.0, max_value=1e6, allow_nan=False), max_size=50))
def test_timeout_always_within_bounds(samples: list[float]) -> None:
    est = LatenessEstimator(0.03, 0.3)
    for s in samples:
        est.observe(s)
        assert 0.03 <= est.timeout <= 0.3


def test_the_ceiling_defaults_to_ten_times_the_floor_and_is_validated() -> None:
    assert PlumtreeConfig(ihave_timeout=0.2).ihave_timeout_ceiling == pytest.approx(2.0)
    assert PlumtreeConfig(ihave_timeout=0.2, ihave_timeout_max=0.2).ihave_timeout_ceiling == 0.2
    with pytest.raises(ConfigError, match=r"plumtree\.ihave_timeout_max"):
        PlumtreeConfig(ihave_timeout=0.2, ihave_timeout_max=0.1)
