"""The numpy core against the plain reference implementations in ``_reference``."""

from __future__ import annotations

import math

from _curves import curves as make_curves
from _curves import make_curve
import _reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

import optuna_lrrange as ol
from optuna_lrrange import core

curves = make_curves(spikes=False)


def assert_close(a, b):
    assert (
        a is None
        and b is None
        or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))
    ), (a, b)


# -- smoothing -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=80),
    beta=st.sampled_from([0.0, 0.5, 0.9, 0.98]),
)
def test_ema_matches_reference(xs, beta):
    np.testing.assert_allclose(core.ema(xs, beta), ref.ema(xs, beta), rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(xs=st.lists(st.floats(-1e3, 1e3), min_size=0, max_size=80), window=st.integers(1, 30))
def test_sma_matches_reference(xs, window):
    np.testing.assert_allclose(core.sma(xs, window), ref.sma(xs, window), rtol=1e-9, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(curve=curves, window=st.integers(1, 25))
def test_loss_change_matches_reference(curve, window):
    lrs, losses = curve
    np.testing.assert_allclose(
        core.loss_change(lrs, losses, window),
        ref.loss_change(lrs, losses, window),
        rtol=1e-9,
        atol=1e-9,
    )


def test_loss_change_of_a_straight_line_is_its_slope():
    lrs = np.geomspace(1e-4, 1, 50)
    losses = 3.0 - 0.5 * np.log10(lrs)
    change = core.loss_change(lrs, losses, 5)
    assert np.all(np.isnan(change[:5]))
    np.testing.assert_allclose(change[5:], -0.5)


def test_smoothing_never_overwrites_the_raw_losses():
    lrs, losses = make_curve(0, 100, 0.05, -3)
    sweep = ol.Sweep(lrs, losses, "completed")
    sweep.smoothed_losses()
    sweep.loss_change()
    sweep.suggest()
    assert sweep.losses == tuple(losses)


@pytest.mark.parametrize("beta", [-0.1, 1.0])
def test_ema_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="0 <= beta < 1"):
        core.ema([1.0], beta)


def test_sma_rejects_bad_window():
    with pytest.raises(ValueError, match="window >= 1"):
        core.sma([1.0], 0)


# -- rules ---------------------------------------------------------------------------------

PLAIN_RULES = {
    "sma_derivative": ref.sma_derivative,
    "steepest": ref.steepest,
    "valley": ref.valley,
    "minimum_div10": ref.minimum_div10,
    "edge_div10": ref.edge_div10,
}


@pytest.mark.parametrize("name", sorted(PLAIN_RULES))
@settings(max_examples=80, deadline=None)
@given(curve=curves)
def test_rule_matches_reference(name, curve):
    lrs, losses = curve
    got = core.RULES[name](lrs, losses)
    want_lr, want_reason = PLAIN_RULES[name](lrs, losses)
    assert got.method == name
    assert_close(got.lr, want_lr)
    assert got.reason == want_reason


@settings(max_examples=80, deadline=None)
@given(
    curve=curves,
    frac=st.sampled_from([0.3, 0.5, 0.8]),
    max_decades=st.sampled_from([0.5, 1.5, 10.0]),
    min_decades=st.sampled_from([0.0, 0.2, 0.4]),
    window=st.sampled_from([5, 20]),
)
def test_steepest_band_matches_reference(curve, frac, max_decades, min_decades, window):
    lrs, losses = curve
    got = core.steepest_band(
        lrs,
        losses,
        sma_window=window,
        frac=frac,
        max_decades=max_decades,
        min_decades=min_decades,
    )
    want_lr, want = ref.steepest_band(lrs, losses, window, frac, max_decades, min_decades)
    if want_lr is None:
        assert (got.lr, got.band, got.reason) == (None, None, want)
    else:
        assert_close(got.lr, want_lr)
        np.testing.assert_allclose(got.band, want, rtol=1e-9)
        low, high = got.band
        assert low <= got.lr <= high
        assert min_decades - 1e-9 <= math.log10(high / low) <= max_decades + 1e-9


@settings(max_examples=40, deadline=None)
@given(curve=curves)
def test_with_a_non_finite_tail_rules_read_only_the_finite_prefix(curve):
    lrs, losses = curve
    cut = len(losses) // 2
    poisoned = losses[:cut] + [math.nan] + [0.0] * (len(losses) - cut - 1)
    for name in core.RULES:
        assert core.RULES[name](lrs, poisoned) == core.RULES[name](
            lrs[:cut] + lrs[cut : cut + 1], losses[:cut] + [math.inf]
        )


def test_the_band_finds_the_descent_of_a_clean_curve():
    lrs, losses = make_curve(1, 100, 0.01, centre=-3)
    s = ol.suggest(lrs, losses, method="steepest_band")
    assert 10**-3.4 < s.lr < 10**-2.6
    low, high = s.band
    assert low < 1e-3 < high
    assert math.log10(high / low) <= 1.5 + 1e-9


def test_suggest_attaches_the_band_to_every_rule_and_names_the_method():
    lrs, losses = make_curve(2, 100, 0.02, centre=-2)
    band = ol.suggest(lrs, losses).band
    assert band == core.RULES[core.DEFAULT_METHOD](lrs, losses).band
    for name in core.RULES:
        s = ol.suggest(lrs, losses, method=name)
        assert s.method == name
        own = core.RULES[name](lrs, losses).band
        assert s.band == (own if name in core.BAND_RULES else band)
        assert s.lr is not None and s.reason is None
    assert ol.suggest(lrs, losses).method == core.DEFAULT_METHOD
    sweep = ol.Sweep(lrs, losses, "completed")
    assert sweep.suggest("valley") == ol.suggest(lrs, losses, "valley")


def test_rules_say_why_when_they_cannot_suggest():
    flat_lrs = np.geomspace(1e-7, 1e-5, 100).tolist()
    flat = (1.0 + np.random.default_rng(0).normal(0, 0.01, 100)).tolist()
    assert ol.suggest(flat_lrs, flat).reason == "never_descends"
    assert ol.suggest(flat_lrs[:5], flat[:5]).reason in ("too_few_points", "diverged_at_once")
    assert ol.suggest([1e-3, 1e-2, 1e-1], [1.0, 5.0, math.nan]).reason == "diverged_at_once"
    assert ol.suggest([1e-3, 1e-2], [1.0, 0.9]).reason == "too_few_points"
    assert ol.suggest([], []).reason == "too_few_points"
    rising = np.linspace(1, 2, 50).tolist()
    s = ol.suggest(np.geomspace(1e-3, 1, 50).tolist(), rising, "descent_band")
    assert (s.lr, s.band, s.reason) == (None, None, "never_descends")


def test_the_default_suggestion_reads_a_sweep_without_descent_by_its_edge():
    # Flat (noisy) until the loss rises from 0.05 on: the default rule declines it, and
    # the default suggestion is then the edge rule's, with the default rule's reason.
    lrs = np.geomspace(1e-4, 1, 60)
    rng = np.random.default_rng(1)
    losses = 0.3 + rng.normal(0, 0.01, 60) + np.where(lrs > 0.05, np.log10(lrs / 0.05) * 3, 0)
    assert ol.suggest(lrs, losses, "descent_band").reason == "never_descends"
    edge = ol.suggest(lrs, losses, "edge_div10")
    s = ol.suggest(lrs, losses)
    assert (s.lr, s.band, s.method, s.reason) == (edge.lr, None, "edge_div10", "never_descends")
    assert 0.05 / 10 / 3 < s.lr <= 0.05 / 10
    # A sweep with no edge either (flat to the end) is still declined, with the reason.
    flat = 0.3 + rng.normal(0, 0.01, 60)
    s = ol.suggest(lrs, flat)
    assert (s.lr, s.band, s.method, s.reason) == (None, None, "descent_band", "never_descends")
    # A sweep that descends is the default rule's, untouched.
    falling = 1.0 - 0.5 * (lrs > 1e-2) + rng.normal(0, 0.01, 60)
    assert ol.suggest(lrs, falling) == ol.suggest(lrs, falling, "descent_band")


def test_suggest_rejects_bad_input_with_what_it_got():
    with pytest.raises(ValueError, match="must be one of .* but got 'nope'"):
        ol.suggest([1.0, 2.0], [1.0, 2.0], method="nope")
    with pytest.raises(ValueError, match="equal length"):
        ol.suggest([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        ol.suggest([2.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="positive and finite"):
        ol.suggest([0.0, 1.0], [1.0, 2.0])


# -- the loop ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(curve=curves, factor=st.sampled_from([1.5, 4.0]), beta=st.sampled_from([0.0, 0.9, 0.98]))
def test_range_test_loop_matches_reference(curve, factor, beta):
    _, values = curve
    config = ol.RangeTestConfig(
        num_iter=max(10, len(values)), diverge_factor=factor, smooth_beta=beta
    )
    padded = values + [values[-1]] * (config.num_iter - len(values))
    table = dict(zip(config.schedule(), padded, strict=True))
    sweep = ol.run_range_test(lambda lr: table[lr], config)
    lrs, losses, reason = ref.range_test(lambda lr: table[lr], config.schedule(), factor, beta)
    assert sweep.lrs == tuple(lrs)
    assert sweep.losses == tuple(losses)
    assert sweep.stop_reason == reason


def test_range_test_stops_at_four_times_the_best_smoothed_loss():
    # Loss falls to 1.0 and then jumps to 100: the first smoothed value above 4.0 stops it.
    calls = []

    def step(lr):
        calls.append(lr)
        return 1.0 if len(calls) <= 20 else 100.0

    sweep = ol.run_range_test(step, smooth_beta=0.0)
    assert sweep.stop_reason == "diverged"
    assert len(sweep) == 21
    assert list(sweep.lrs) == calls


def test_range_test_stops_on_a_non_finite_loss_and_records_it():
    sweep = ol.run_range_test(lambda lr: math.nan if lr > 1e-3 else 1.0)
    assert sweep.stop_reason == "non_finite_loss"
    assert math.isnan(sweep.losses[-1])
    assert all(math.isfinite(v) for v in sweep.losses[:-1])
    assert sweep.lrs[-2] <= 1e-3 < sweep.lrs[-1]


@pytest.mark.parametrize("offset", [-10.0, -1e-9, 0.0])
def test_divergence_works_for_negative_and_zero_losses(offset):
    # A descent to `offset`, then a rise: must stop on the rise, not at once, not never.
    def step(lr):
        x = math.log10(lr)
        return offset + (1.0 if x < -4 else 0.0) + (50.0 if x > -1 else 0.0)

    sweep = ol.run_range_test(step, smooth_beta=0.0)
    assert sweep.stop_reason == "diverged"
    assert sweep.lrs[-1] > 0.1
    assert all(lr <= 0.1 for lr in sweep.lrs[:-1])


def test_range_test_runs_all_steps_when_nothing_diverges():
    seen = []
    sweep = ol.run_range_test(lambda lr: seen.append(lr) or 1.0 / (1 + len(seen)), num_iter=30)
    assert sweep.stop_reason == "completed"
    assert len(sweep) == 30
    assert seen[0] == pytest.approx(1e-7) and seen[-1] == pytest.approx(10.0)
    assert np.allclose(np.diff(np.log(seen)), np.log(1e8) / 29)


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(1e-9, 1.0),
    decades=st.floats(0.01, 12.0),
    num_iter=st.integers(10, 400),
    mode=st.sampled_from(["exp", "linear"]),
)
def test_schedule_is_lr_at_bitwise(start, decades, num_iter, mode):
    config = ol.RangeTestConfig(
        start_lr=start, end_lr=start * 10**decades, num_iter=num_iter, mode=mode
    )
    expected = [config.lr_at(i) for i in range(num_iter)]
    assert [x.hex() for x in config.schedule()] == [x.hex() for x in expected]
    config = ol.RangeTestConfig(start_lr=1, end_lr=10, num_iter=num_iter, mode=mode)
    assert config.schedule() == [config.lr_at(i) for i in range(num_iter)]
    assert all(type(x) is float for x in config.schedule())


def test_linear_schedule_and_exceptions_propagate():
    config = ol.RangeTestConfig(start_lr=0.1, end_lr=1.0, num_iter=10, mode="linear")
    assert np.allclose(config.schedule(), np.linspace(0.1, 1.0, 10))

    def step(lr):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ol.run_range_test(step, config)
    with pytest.raises(ValueError, match="either `config` or keyword options"):
        ol.run_range_test(step, config, num_iter=20)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_lr": 0.0}, r"`start_lr > 0` must hold, but got start_lr=0.0"),
        ({"start_lr": -1e-3}, r"`start_lr > 0` must hold"),
        (
            {"start_lr": 1.0, "end_lr": 1.0},
            r"`start_lr < end_lr` must hold, but got \(start_lr=1.0, end_lr=1.0\)",
        ),
        ({"end_lr": math.inf}, r"`end_lr` must be a finite real number, but got inf"),
        ({"num_iter": 5}, r"`num_iter >= 10` must hold, but got num_iter=5"),
        ({"num_iter": 50.0}, r"`num_iter` must be an int, but got 50.0"),
        ({"num_iter": True}, r"`num_iter` must be an int"),
        ({"mode": "cosine"}, r"`mode` must be one of \('exp', 'linear'\), but got 'cosine'"),
        ({"diverge_factor": 1.0}, r"`diverge_factor > 1` must hold, but got diverge_factor=1.0"),
        ({"smooth_beta": 1.0}, r"`0 <= smooth_beta < 1` must hold"),
        ({"start_lr": "1e-3"}, r"`start_lr` must be a finite real number, but got '1e-3'"),
    ],
)
def test_config_rejects_bad_values_saying_what_must_hold(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ol.RangeTestConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = ol.RangeTestConfig(start_lr=1e-5, end_lr=1.0, num_iter=40, mode="linear")
    assert ol.RangeTestConfig.from_dict(config.to_dict()) == config


def test_sweep_checks_its_fields():
    with pytest.raises(ValueError, match="len\\(lrs\\) == len\\(losses\\)"):
        ol.Sweep((1.0, 2.0), (1.0,), "completed")
    with pytest.raises(ValueError, match="stop_reason"):
        ol.Sweep((1.0,), (1.0,), "tired")


def test_edge_rule_finds_where_a_flat_sweep_starts_to_rise():
    # A sweep from trained weights: flat, then a rise from 0.05 on; no descent to read.
    lrs = np.geomspace(1e-4, 1, 40)
    rng = np.random.default_rng(0)
    losses = 0.3 + rng.normal(0, 0.01, 40) + np.where(lrs > 0.05, np.log10(lrs / 0.05) * 3, 0)
    assert ol.suggest(lrs, losses, method="descent_band").reason == "never_descends"
    s = ol.suggest(lrs, losses, method="edge_div10")
    assert 0.05 / 10 / 3 < s.lr <= 0.05 / 10
    flat = 0.3 + rng.normal(0, 0.01, 40)
    assert ol.suggest(lrs, flat, method="edge_div10").reason == "no_edge"
    # Flat until the loss turns NaN: the edge is the last finite rate.
    poisoned = np.where(lrs > 0.1, np.nan, flat)
    last_finite = lrs[lrs <= 0.1][-1]
    assert ol.suggest(lrs, poisoned, method="edge_div10").lr == pytest.approx(last_finite / 10)
