"""The offset placement's maths (``core._placement``) against plain reference twins."""

from __future__ import annotations

import math

from _curves import curves as make_curves
import _reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from optuna_lrrange import core
from optuna_lrrange.core import _placement as pl

offsets = st.floats(-2.0, 1.0, allow_nan=False)
losses = st.one_of(st.floats(0.0, 10.0, allow_nan=False), st.just(math.nan), st.just(math.inf))


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(curve=make_curves())
def test_the_anchor_is_descent_bands_drop_point(curve):
    lrs, losses_ = curve
    got, reason = pl.anchor(lrs, losses_)
    band = core.descent_band(lrs, losses_)
    if band.band is None:
        assert got is None and reason == band.reason
    else:
        # descent_band's band spans 0.9 below to 0.6 above its drop point.
        assert reason is None
        assert math.isclose(math.log10(got), math.log10(band.band[0]) + 0.9, abs_tol=1e-9)
        assert math.isclose(math.log10(got), math.log10(band.band[1]) - 0.6, abs_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    anchor=st.floats(1e-8, 1e2),
    offset=offsets,
    bounds=st.tuples(st.floats(1e-7, 1.0), st.floats(1e-7, 10.0)).map(sorted),
)
def test_place_matches_the_reference(anchor, offset, bounds):
    low, high = bounds
    got = pl.place(anchor, offset, low, high)
    assert close(got, ref.place(anchor, offset, low, high))
    assert low <= got <= high


def test_place_rejects_bad_input():
    with pytest.raises(ValueError, match="must hold"):
        pl.place(0.0, 0.0, 1e-3, 1.0)
    with pytest.raises(ValueError, match="must hold"):
        pl.place(1e-2, math.nan, 1e-3, 1.0)
    with pytest.raises(ValueError, match="must hold"):
        pl.place(1e-2, 0.0, 1.0, 1e-3)


@settings(max_examples=500, deadline=None)
@given(
    anchor=st.floats(1e-9, 1e3),
    bounds=st.tuples(st.floats(1e-7, 1.0), st.floats(1e-7, 10.0)).map(sorted),
)
def test_in_reach_matches_the_reference(anchor, bounds):
    low, high = bounds
    got = pl.in_reach(anchor, low, high)
    assert close(got, ref.in_reach(anchor, low, high))
    lo, hi = pl.PRIOR_OFFSETS
    prior = (got * 10**lo, got * 10**hi)
    if prior[1] >= low * (1 - 1e-9) and prior[0] <= high * (1 + 1e-9):
        return
    pytest.fail(f"the prior from {got} misses [{low}, {high}]")


def test_in_reach_moves_only_an_anchor_whose_prior_misses_the_range():
    # A drop point at 0.3, rates asked in [1e-5, 1e-2]: every prior draw would clip to 0.01.
    moved = pl.in_reach(0.3, 1e-5, 1e-2)
    assert math.isclose(moved, 1e-2 / 10**0.35)
    assert math.isclose(pl.in_reach(1e-9, 1e-5, 1e-2), 1e-5 * 10**1.15)
    # One prior draw still lands inside: the anchor stays, and its offsets keep their meaning.
    assert pl.in_reach(0.1, 1e-5, 1e-2) == 0.1
    assert pl.in_reach(1e-2, 1e-5, 1e-2) == 1e-2
    # A range narrower than the prior: the prior's middle at the range's middle.
    centred = pl.in_reach(10.0, 1e-3, 1e-2)
    assert math.isclose(math.log10(centred) - 0.4, -2.5)
    with pytest.raises(ValueError, match="must hold"):
        pl.in_reach(0.0, 1e-3, 1.0)


@settings(max_examples=500, deadline=None)
@given(
    anchors=st.lists(st.floats(1e-4, 1e-2), max_size=6),
    placed_since=st.integers(0, 5),
)
def test_settled_anchor_matches_the_reference(anchors, placed_since):
    got = pl.settled_anchor(anchors, placed_since)
    assert close(got, ref.settled_anchor(anchors, placed_since))


def test_a_configuration_settles_when_its_newest_sweeps_agree():
    agree = [1e-2, 1.2e-2, 0.9e-2]
    assert close(pl.settled_anchor(agree, 0), 1e-2)
    # Fewer than three sweeps, or one trial in four: sweep.
    assert pl.settled_anchor(agree[:2], 0) is None
    assert pl.settled_anchor(agree, 2) is not None
    assert pl.settled_anchor(agree, 3) is None
    # An old outlier no longer counts; a new one unsettles.
    assert close(pl.settled_anchor([1.0, *agree], 0), 1e-2)
    assert pl.settled_anchor([*agree, 1e-1], 0) is None


@settings(max_examples=200, deadline=None)
@given(anchors=st.lists(st.floats(1e-7, 10.0), max_size=12))
def test_median_anchor_matches_the_reference(anchors):
    assert close(pl.median_anchor(anchors), ref.median_anchor(anchors))


@settings(max_examples=500, deadline=None)
@given(pairs=st.lists(st.tuples(offsets, losses), max_size=15))
def test_divergence_cap_matches_the_reference(pairs):
    offs = [p[0] for p in pairs]
    vals = [p[1] for p in pairs]
    assert close(pl.divergence_cap(offs, vals), ref.divergence_cap(offs, vals))


def test_divergence_cap_on_a_study_that_diverged_above_its_good_rates():
    # Good runs from -1 to 0, runs at chance level from +0.3 up, a slow run at -1.8.
    offs = [-1.8, -1.0, -0.5, -0.2, 0.0, 0.3, 0.6, 0.9]
    vals = [0.9, 0.31, 0.30, 0.29, 0.32, 2.3, 2.3, math.nan]
    assert pl.divergence_cap(offs, vals) == 0.3
    # Still so when most runs diverged (a median of the results would be a diverged one).
    many = [*offs, 0.35, 0.4, 0.5, 0.45]
    assert pl.divergence_cap(many, [*vals, 2.3, 2.3, 2.2, 2.3]) == 0.3
    # A good run above a bad one lifts the cap to the next bad one above it.
    assert pl.divergence_cap([*offs, 0.4], [*vals, 0.30]) == 0.6
    # A bad run below a good one is a rate too small (or another parameter's doing).
    offs = [-1.0, -0.5, 0.0, 0.2, 0.4]
    assert pl.divergence_cap(offs, [0.45, 0.30, 0.29, 0.35, 0.32]) is None
    # The worse half of the results above every good one caps, whatever their scale.
    assert pl.divergence_cap(offs, [0.38, 0.30, 0.29, 0.35, 0.45]) == 0.4
    assert pl.divergence_cap(offs, [0.38, 0.30, 0.29, 0.35, 2.3]) == 0.4
    # Too few results to tell: only failures count.
    assert pl.divergence_cap([-0.5, 0.0, 0.4], [0.30, 0.29, 2.3]) is None
    assert pl.divergence_cap([-0.5, 0.0, 0.4], [0.30, 0.29, math.nan]) == 0.4
    assert pl.divergence_cap([], []) is None
    assert pl.divergence_cap([0.0, 0.5], [math.nan, math.nan]) is None
    with pytest.raises(ValueError, match="equal length"):
        pl.divergence_cap([0.0], [])


@settings(max_examples=500, deadline=None)
@given(rate=st.floats(-6.0, 0.0), pairs=st.lists(st.tuples(st.floats(-6.0, 0.0), losses)))
def test_below_divergence_matches_the_reference(rate, pairs):
    rates = [p[0] for p in pairs]
    vals = [p[1] for p in pairs]
    assert close(pl.below_divergence(rate, rates, vals), ref.below_divergence(rate, rates, vals))


def test_a_rate_above_the_rates_that_diverged_is_bisected_towards_the_good_ones():
    # Rates of one configuration: good up to 10**-1, at chance from 10**-0.5 up.
    rates = [-3.0, -2.0, -1.5, -1.0, -0.5, 0.0]
    vals = [0.9, 0.4, 0.3, 0.35, 2.3, 2.3]
    assert pl.below_divergence(-1.2, rates, vals) is None  # below the edge: kept
    assert pl.below_divergence(-0.6, rates, vals) is None
    assert pl.below_divergence(-0.5, rates, vals) == (-0.75, -1.0, -0.5)
    assert pl.below_divergence(-0.2, rates, vals) == (-0.75, -1.0, -0.5)
    # The middle then went well: the interval halves again, from below.
    assert pl.below_divergence(-0.2, [*rates, -0.75], [*vals, 0.33]) == (-0.625, -0.75, -0.5)
    # ... or badly: the edge comes down to it.
    assert pl.below_divergence(-0.2, [*rates, -0.75], [*vals, 2.3]) == (-0.875, -1.0, -0.75)
    # Nothing went very bad above the good rates: no edge.
    assert pl.below_divergence(0.0, rates[:4], vals[:4]) is None
    assert pl.below_divergence(0.0, [], []) is None
    with pytest.raises(ValueError, match="equal length"):
        pl.below_divergence(0.0, [0.0], [])


@settings(max_examples=300, deadline=None)
@given(cap=st.one_of(st.none(), offsets))
def test_prior_interval_matches_the_reference(cap):
    got = pl.prior_interval(cap)
    assert close(got, ref.prior_interval(cap))
    lo, hi = got
    assert hi - lo >= pl.MIN_PRIOR_DECADES - 1e-12
    assert pl.OFFSET_RANGE[0] <= lo < hi <= pl.OFFSET_RANGE[1]
    if cap is not None and cap > pl.OFFSET_RANGE[0] + pl.MIN_PRIOR_DECADES:
        assert hi <= cap


@settings(max_examples=300, deadline=None)
@given(cap=st.one_of(st.none(), offsets, st.floats(-5.0, 5.0)))
def test_capped_range_matches_the_reference(cap):
    got = pl.capped_range(cap)
    assert close(got, ref.capped_range(cap))
    assert got[0] == pl.OFFSET_RANGE[0] and got[1] - got[0] >= pl.MIN_PRIOR_DECADES - 1e-12


@settings(max_examples=300, deadline=None)
@given(
    anchors=st.lists(st.floats(1e-6, 1.0), max_size=8),
    start=st.sampled_from([1e-7, 1e-6]),
    end=st.sampled_from([1.0, 10.0]),
    num_iter=st.sampled_from([50, 100, 200]),
)
def test_sweep_span_matches_the_reference(anchors, start, end, num_iter):
    got = pl.sweep_span(anchors, start, end, num_iter)
    want = ref.sweep_span(anchors, start, end, num_iter)
    assert close(got, want)
    if got is not None:
        lo, hi, n = got
        assert start <= lo < hi <= end * (1 + 1e-12) and core.MIN_NUM_ITER <= n < num_iter
        # The same points per decade as the full sweep, to within one point.
        full = (num_iter - 1) / math.log10(end / start)
        assert abs((n - 1) - full * math.log10(hi / lo)) <= 0.5 + 1e-9


def test_sweep_span_narrows_around_the_anchors_seen():
    lo, hi, n = pl.sweep_span([1e-2, 3e-2, 2e-2], 1e-7, 10.0, 100)
    assert math.isclose(lo, 1e-2 * 10**-2.5) and math.isclose(hi, 3e-2 * 100)
    assert n == round(99 * math.log10(hi / lo) / 8) + 1 == 63  # 12.4 points per decade
    assert pl.sweep_span([1e-2, 2e-2], 1e-7, 10.0, 100) is None  # too few anchors yet
    assert pl.sweep_span([1e-6, 1e-1, 1.0], 1e-7, 10.0, 100) is None  # no narrower
