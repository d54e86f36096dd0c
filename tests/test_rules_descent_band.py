"""``descent_band`` against a plain reference written with loops and ``statistics``."""

from __future__ import annotations

import math
import statistics

from _curves import curves as make_curves
from _curves import make_curve
import _reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from optuna_lrrange import core


def plain_descent_band(lrs, losses, median_window=9, drop=0.7, shift=-0.4, band=(-0.9, 0.6)):
    """Returns (lr, (low, high), None) or (None, None, reason)."""
    lrs, losses, hit = ref.finite_prefix(lrs, losses)
    reason = ref.precheck(lrs, losses, hit)
    if reason:
        return None, None, reason
    n = len(lrs)
    med = ref.running_median(losses, median_window)
    start = statistics.median(losses[: max(3, n // 10)])
    lowest = min(med)
    i_min = med.index(lowest)
    if not start - lowest > 0:
        return None, None, "never_descends"
    i = 0
    while start - med[i] < drop * (start - lowest):
        i += 1
    assert i <= i_min
    point = math.log10(lrs[i])
    return 10 ** (point + shift), (10 ** (point + band[0]), 10 ** (point + band[1])), None


curves = make_curves()


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, tuple):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return math.isclose(a, b, rel_tol=1e-9)


@settings(max_examples=300, deadline=None)
@given(
    curve=curves,
    median_window=st.sampled_from([1, 5, 9]),
    drop=st.sampled_from([0.3, 0.7, 1.0]),
    shift=st.sampled_from([-0.4, 0.0, 0.3]),
    band=st.sampled_from([(-0.9, 0.6), (-0.5, 0.5), (0.1, 0.2)]),
)
def test_matches_the_plain_reference(curve, median_window, drop, shift, band):
    lrs, losses = curve
    got = core.descent_band(
        lrs,
        losses,
        median_window=median_window,
        drop=drop,
        shift_decades=shift,
        band_decades=band,
    )
    want_lr, want_band, want_reason = plain_descent_band(
        lrs, losses, median_window, drop, shift, band
    )
    assert got.method == "descent_band"
    assert close(got.lr, want_lr)
    assert close(got.band, want_band)
    assert got.reason == want_reason


@settings(max_examples=100, deadline=None)
@given(curve=curves)
def test_defaults_match_the_reference(curve):
    lrs, losses = curve
    got = core.RULES["descent_band"](lrs, losses)
    want_lr, want_band, want_reason = plain_descent_band(lrs, losses)
    assert close(got.lr, want_lr)
    assert close(got.band, want_band)
    assert got.reason == want_reason


@settings(max_examples=100, deadline=None)
@given(curve=curves)
def test_the_default_suggestion_matches_the_reference(curve):
    # suggest() without a method: descent_band, or edge_div10 where descent_band declines.
    lrs, losses = curve
    got = core.suggest(lrs, losses)
    want_lr, want_band, want_reason = plain_descent_band(lrs, losses)
    method = "descent_band"
    if want_lr is None:
        edge_lr, _ = ref.edge_div10(lrs, losses)
        if edge_lr is not None:
            want_lr, method = edge_lr, "edge_div10"
    assert (got.method, got.reason) == (method, want_reason)
    assert close(got.lr, want_lr)
    assert close(got.band, want_band)


def test_the_band_is_one_and_a_half_decades_around_the_drop_point():
    lrs, losses = make_curve(3, 100, 0.0, centre=-3, blowup=True, spikes=0)
    s = core.descent_band(lrs, losses)
    low, high = s.band
    assert math.isclose(math.log10(high / low), 1.5)
    assert low < s.lr < high
    # A clean sigmoid centred at 1e-3 (the middle of its drop) makes 70% of the drop a
    # little above the centre.
    point = math.log10(s.lr) + 0.4
    assert -3 < point < -2.4


def test_one_noisy_batch_does_not_move_it():
    lrs, losses = make_curve(3, 100, 0.0, centre=-3, blowup=True, spikes=0)
    clean = core.descent_band(lrs, losses)
    spiked = list(losses)
    spiked[10] += 3.0
    spiked[40] -= 3.0
    assert core.descent_band(lrs, spiked) == clean


def test_never_descending_and_short_sweeps_say_why():
    rising = np.linspace(1, 2, 50).tolist()
    s = core.descent_band(np.geomspace(1e-3, 1, 50).tolist(), rising)
    assert (s.lr, s.band, s.reason) == (None, None, "never_descends")
    s = core.descent_band([1e-3, 1e-2, 1e-1], [1.0, 5.0, math.nan])
    assert (s.lr, s.reason) == (None, "diverged_at_once")


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"drop": 0.0}, "drop=0.0"),
        ({"drop": 1.5}, "drop=1.5"),
        ({"band_decades": (0.5, -0.5)}, "band_decades=(0.5, -0.5)"),
    ],
)
def test_bad_settings_say_what_must_hold(options, text):
    lrs, losses = make_curve(0, 100, 0.0, centre=-3)
    with pytest.raises(ValueError, match="must hold") as info:
        core.descent_band(lrs, losses, **options)
    assert text in str(info.value)
