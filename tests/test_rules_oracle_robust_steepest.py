"""``robust_steepest`` against a plain reference written with loops and ``statistics``."""

from __future__ import annotations

import math

from _curves import curves as make_curves
from _curves import make_curve
import _reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np

import optuna_lrrange as ol
from optuna_lrrange import core


def plain_robust_steepest(lrs, losses, median_window=9, secant_window=30, shift_decades=-0.1):
    """Returns (lr, None) or (None, reason)."""
    lrs, losses, hit = ref.finite_prefix(lrs, losses)
    reason = ref.precheck(lrs, losses, hit)
    if reason:
        return None, reason
    n = len(lrs)
    med = ref.running_median(losses, median_window)
    w = min(secant_window if n >= 100 else max(1, secant_window * n // 100), n - 1)
    best, best_slope = None, math.inf
    for i in range(n - w):
        slope = (med[i + w] - med[i]) / (math.log10(lrs[i + w]) - math.log10(lrs[i]))
        if slope < best_slope:
            best, best_slope = i, slope
    if not best_slope < 0:
        return None, "never_descends"
    centre = (math.log10(lrs[best]) + math.log10(lrs[best + w])) / 2
    return 10 ** (centre - shift_decades), None


curves = make_curves()


def close(a, b):
    return (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9)
    )


@settings(max_examples=300, deadline=None)
@given(
    curve=curves,
    median_window=st.sampled_from([1, 5, 9]),
    secant_window=st.sampled_from([10, 30]),
    shift=st.sampled_from([-0.1, 0.0, 0.5]),
)
def test_matches_the_plain_reference(curve, median_window, secant_window, shift):
    lrs, losses = curve
    got = core.RULES["robust_steepest"](
        lrs,
        losses,
        median_window=median_window,
        secant_window=secant_window,
        shift_decades=shift,
    )
    want_lr, want_reason = plain_robust_steepest(lrs, losses, median_window, secant_window, shift)
    assert got.method == "robust_steepest"
    assert close(got.lr, want_lr)
    assert got.reason == want_reason


@settings(max_examples=100, deadline=None)
@given(curve=curves)
def test_defaults_match_the_reference_and_suggest_attaches_the_band(curve):
    lrs, losses = curve
    got = ol.suggest(lrs, losses, method="robust_steepest")
    want_lr, want_reason = plain_robust_steepest(lrs, losses)
    assert close(got.lr, want_lr)
    assert got.reason == want_reason
    assert got.band == ol.suggest(lrs, losses).band


def test_one_noisy_batch_does_not_move_it_but_moves_the_raw_secant():
    lrs, losses = make_curve(3, 100, 0.0, centre=-3, blowup=True, spikes=0)
    clean = core.RULES["robust_steepest"](lrs, losses).lr
    spiked = list(losses)
    spiked[10] += 3.0  # one bad batch early in the sweep
    assert math.isclose(core.RULES["robust_steepest"](lrs, spiked).lr, clean)
    assert core.steepest_band(lrs, spiked).lr < 1e-5 < clean


def test_never_descending_and_short_sweeps_say_why():
    rising = np.linspace(1, 2, 50).tolist()
    s = core.RULES["robust_steepest"](np.geomspace(1e-3, 1, 50).tolist(), rising)
    assert (s.lr, s.reason) == (None, "never_descends")
    s = core.RULES["robust_steepest"]([1e-3, 1e-2, 1e-1], [1.0, 5.0, math.nan])
    assert (s.lr, s.reason) == (None, "diverged_at_once")
