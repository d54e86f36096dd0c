"""Suggestion rules: pure functions of the raw ``(lrs, losses)`` of one sweep.

Every rule has the signature ``rule(lrs, losses) -> Suggestion`` (extra settings are
keyword-only with defaults) and never modifies its inputs. Only the finite prefix of the
losses is read: a sweep that hit NaN or inf is judged on what came before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
import math

import numpy as np

from optuna_lrrange.core._smoothing import ema, loss_change, sma

#: Fewest finite points a rule needs before it will suggest anything.
MIN_POINTS = 10

#: Reasons a rule gives when it cannot suggest a rate.
TOO_FEW_POINTS = "too_few_points"
NEVER_DESCENDS = "never_descends"
DIVERGED_AT_ONCE = "diverged_at_once"
NO_EDGE = "no_edge"


@dataclass(frozen=True)
class Suggestion:
    """What a rule makes of a sweep.

    Attributes:
        lr: The suggested learning rate, or ``None`` when no suggestion can be made.
        band: ``(low, high)``: the steepest-descent band, the interval around the steepest
            descent where the loss still falls fast; ``None`` when there is none.
        method: The rule's name.
        reason: Why ``lr`` is ``None`` (``"too_few_points"``, ``"never_descends"``,
            ``"diverged_at_once"``); ``None`` when there is a suggestion, except for the
            default suggestion read from the divergence edge (``method`` is
            ``"edge_div10"``): there it says why the default rule gave none.
    """

    lr: float | None
    band: tuple[float, float] | None
    method: str
    reason: str | None = None


Rule = Callable[[Sequence[float], Sequence[float]], Suggestion]


def _scaled(k: int, n: int) -> int:
    """A window or skip length meant for a 100-step sweep, scaled down for shorter ones."""
    return k if n >= 100 else max(1, (k * n) // 100)


def _validated(
    lrs: Sequence[float], losses: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Checks the inputs; returns the finite prefix and whether a non-finite loss followed."""
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if lr.ndim != 1 or loss.ndim != 1 or lr.size != loss.size:
        raise ValueError(
            "`lrs` and `losses` must be 1-D and of equal length, but got shapes "
            f"{lr.shape} and {loss.shape}."
        )
    if lr.size and (not np.all(np.isfinite(lr)) or np.any(lr <= 0)):
        raise ValueError(f"every learning rate must be positive and finite, but got {lr!r}.")
    if lr.size > 1 and np.any(np.diff(lr) <= 0):
        raise ValueError("`lrs` must be strictly increasing, but it is not.")
    bad = np.flatnonzero(~np.isfinite(loss))
    n = int(bad[0]) if bad.size else loss.size
    return lr[:n], loss[:n], bool(bad.size)


def _step_noise(loss: np.ndarray) -> float:
    """Per-step noise of the loss, estimated robustly from its first differences."""
    step = np.diff(loss)
    return 1.4826 * float(np.median(np.abs(step - np.median(step)))) / math.sqrt(2)


def _precheck(lr: np.ndarray, loss: np.ndarray, hit_non_finite: bool) -> str | None:
    """The reason no rule can suggest anything from this sweep, or ``None``."""
    n = lr.size
    if n < MIN_POINTS:
        if hit_non_finite or (n >= 2 and loss[-1] > loss[0]):
            return DIVERGED_AT_ONCE
        return TOO_FEW_POINTS
    # Compare the mean of the first k losses with the lowest mean of any k in a row: a
    # descent must stand clear of what noise alone gives (the per-step noise estimated
    # robustly from first differences; the difference of two k-means has sd ~ 1.4 sd/sqrt(k),
    # and the minimum over many windows adds about two more of those).
    k = max(3, n // 10)
    means = sma(loss, k)
    start, low = float(means[k - 1]), float(np.nanmin(means))
    if start - low <= 4 * _step_noise(loss) / math.sqrt(k):
        return NEVER_DESCENDS
    return None


def _fail(method: str, reason: str) -> Suggestion:
    return Suggestion(lr=None, band=None, method=method, reason=reason)


def _trimmed_smoothed(lr: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fastai's view of a sweep: EMA-smoothed, first 10% and last 5 steps dropped."""
    n = lr.size
    start, end = n // 10, n - _scaled(5, n)
    return lr[start:end], ema(loss)[start:end]


def steepest_band(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    sma_window: int = 20,
    frac: float = 0.3,
    max_decades: float = 1.5,
    min_decades: float = 0.2,
) -> Suggestion:
    """The steepest-descent band, and the rate at its steepest point.

    The loss change per decade is the SMA over ``sma_window`` steps, that is the slope of
    the secant between ``lr[i - w]`` and ``lr[i]``, placed at their geometric middle. The
    band is the run of such slopes around the steepest one that stay at or below ``frac``
    times it, trimmed symmetrically (in log-lr) to at most ``max_decades`` decades, and
    widened around the steepest point to at least ``min_decades`` (a band of one point
    would leave a sampler nothing to choose from).
    """
    method = "steepest_band"
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    w = min(_scaled(sma_window, lr.size), lr.size - 1)
    slope = loss_change(lr, loss, w)
    valid = np.flatnonzero(np.isfinite(slope))
    i_best = int(valid[np.argmin(slope[valid])])
    if not slope[i_best] < 0:
        return _fail(method, NEVER_DESCENDS)
    limit = frac * slope[i_best]
    lo = hi = i_best
    while lo - 1 >= valid[0] and slope[lo - 1] <= limit:
        lo -= 1
    while hi + 1 < slope.size and slope[hi + 1] <= limit:
        hi += 1
    log_lr = np.log10(lr)

    def centre(i: int) -> float:
        return float((log_lr[i - w] + log_lr[i]) / 2)

    c_best, c_lo, c_hi = centre(i_best), centre(lo), centre(hi)
    if c_hi - c_lo > max_decades:
        # Centre the band on the steepest point, shifted to stay inside the run.
        c_lo = min(max(c_best - max_decades / 2, c_lo), c_hi - max_decades)
        c_hi = c_lo + max_decades
    if c_hi - c_lo < min_decades:
        c_lo, c_hi = c_best - min_decades / 2, c_best + min_decades / 2
    return Suggestion(lr=10.0**c_best, band=(10.0**c_lo, 10.0**c_hi), method=method, reason=None)


def sma_derivative(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    sma_window: int = 20,
    n_skip_start: int = 10,
    n_skip_end: int = 5,
) -> Suggestion:
    """The article's rule: the rate where the SMA-smoothed loss change is lowest.

    As read off ``plot_loss_change(sma=20, n_skip=...)``: each value is placed at the
    last rate of its window, and the first and last points are skipped.
    """
    method = "sma_derivative"
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    n = lr.size
    w = min(_scaled(sma_window, n), n - 1)
    slope = loss_change(lr, loss, w)
    start = max(w, _scaled(n_skip_start, n))
    end = n - _scaled(n_skip_end, n)
    if end - start < 1:
        start, end = w, n
    i = start + int(np.nanargmin(slope[start:end]))
    if not slope[i] < 0:
        return _fail(method, NEVER_DESCENDS)
    return Suggestion(lr=float(lr[i]), band=None, method=method)


def steepest(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    """fastai's ``steep``: the steepest step of the smoothed loss against log(lr)."""
    method = "steepest"
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    t_lr, t_loss = _trimmed_smoothed(lr, loss)
    grads = np.diff(t_loss) / np.diff(np.log(t_lr))
    i = int(np.argmin(grads))
    if not grads[i] < 0:
        return _fail(method, NEVER_DESCENDS)
    return Suggestion(lr=float(t_lr[i]), band=None, method=method)


def valley(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    """fastai's ``valley``: two thirds of the way down the longest descending run.

    The run is the longest strictly decreasing subsequence of the smoothed loss; the rate
    is taken at ``start + floor(len/3) + floor(len/6)`` of it, as fastai does.
    """
    method = "valley"
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    t_lr, t_loss = _trimmed_smoothed(lr, loss)
    n = t_loss.size
    run = np.ones(n, dtype=int)
    best_end = 0
    for i in range(1, n):
        earlier = np.flatnonzero(t_loss[:i] > t_loss[i])
        if earlier.size:
            run[i] = int(run[earlier].max()) + 1
        if run[i] > run[best_end]:
            best_end = i
    if run[best_end] < 2:
        return _fail(method, NEVER_DESCENDS)
    best_start = best_end - int(run[best_end])
    section = (best_end - best_start) / 3
    idx = best_start + int(section) + int(section / 2)
    idx = min(max(idx, 0), n - 1)
    return Suggestion(lr=float(t_lr[idx]), band=None, method=method)


def minimum_div10(lrs: Sequence[float], losses: Sequence[float]) -> Suggestion:
    """fastai's ``minimum``: the rate of the lowest smoothed loss, divided by 10."""
    method = "minimum_div10"
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    t_lr, t_loss = _trimmed_smoothed(lr, loss)
    return Suggestion(lr=float(t_lr[int(np.argmin(t_loss))] / 10), band=None, method=method)


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over ``window`` points, a window meant for a 100-step sweep
    (scaled down for shorter ones, made odd); the ends are padded with edge values."""
    k = _scaled(window, x.size)
    k = k if k % 2 else k + 1
    h = k // 2
    padded = np.pad(x, h, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, k)
    return np.asarray(np.median(windows, axis=1), dtype=float)


def robust_steepest(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    median_window: int = 9,
    secant_window: int = 30,
    shift_decades: float = -0.1,
) -> Suggestion:
    """Our own rule: the steepest secant of the median-filtered loss, shifted.

    The raw losses are filtered by a centred running median over ``median_window`` steps
    (a single noisy batch cannot move it); the slope of the secant over ``secant_window``
    steps is ``(m[i + w] - m[i]) / (log10 lr[i + w] - log10 lr[i])``; the rate is
    ``10 ** (centre - shift_decades)`` where ``centre`` is the geometric middle of the
    steepest secant (the first one on ties). Both windows are meant for a 100-step sweep
    and scale down for shorter ones. The settings were tuned on the design tasks of the
    oracle-grid study (``studies/oracle``).

    Why not the raw secant: a loss averaged over a window of per-step changes telescopes
    to a secant between two raw losses, so one noisy batch at a window's start makes that
    secant the steepest.
    """
    method = "robust_steepest"
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    n = lr.size
    w = min(_scaled(secant_window, n), n - 1)
    m = _running_median(loss, median_window)
    log_lr = np.log10(lr)
    secant = (m[w:] - m[:-w]) / (log_lr[w:] - log_lr[:-w])
    i = int(np.argmin(secant))
    if not secant[i] < 0:
        return _fail(method, NEVER_DESCENDS)
    centre = float((log_lr[i] + log_lr[i + w]) / 2)
    return Suggestion(lr=10.0 ** (centre - shift_decades), band=None, method=method)


def descent_band(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    median_window: int = 9,
    drop: float = 0.7,
    shift_decades: float = -0.4,
    band_decades: tuple[float, float] = (-0.9, 0.6),
) -> Suggestion:
    """Our own rule: where the loss has made most of its drop, and a band around it.

    The raw losses are filtered by a centred running median over ``median_window`` steps
    (meant for a 100-step sweep, scaled down for shorter ones), so that no single batch
    moves anything. With ``k = max(3, n // 10)``, the starting level is the median of the
    first ``k`` raw losses and the drop is from it to the lowest filtered loss. The drop
    point is the first rate whose filtered loss has made ``drop`` of that drop, at or
    before the lowest one; the rate is ``10 ** (log10(drop point) + shift_decades)`` and
    the band spans ``band_decades`` around the drop point (in decades, low and high).

    Why a level crossing rather than a slope: the steepest slope is a difference of noisy
    losses and moves by decades with one bad batch; the rate at which most of the drop is
    made depends on the whole curve. The settings were chosen on the design tasks of the
    oracle-grid study (``studies/oracle``), before it read the held-out tasks.
    """
    method = "descent_band"
    low_d, high_d = band_decades
    if not (0.0 < drop <= 1.0 and low_d < high_d):
        raise ValueError(
            "`0 < drop <= 1` and `band_decades[0] < band_decades[1]` must hold, but got "
            f"(drop={drop}, band_decades={band_decades})."
        )
    lr, loss, hit = _validated(lrs, losses)
    reason = _precheck(lr, loss, hit)
    if reason:
        return _fail(method, reason)
    n = lr.size
    m = _running_median(loss, median_window)
    start = float(np.median(loss[: max(3, n // 10)]))
    i_min = int(np.argmin(m))
    fall = start - float(m[i_min])
    if not fall > 0:
        return _fail(method, NEVER_DESCENDS)
    i = int(np.flatnonzero(start - m[: i_min + 1] >= drop * fall)[0])
    point = float(np.log10(lr[i]))
    return Suggestion(
        lr=10.0 ** (point + shift_decades),
        band=(10.0 ** (point + low_d), 10.0 ** (point + high_d)),
        method=method,
        reason=None,
    )


def edge_div10(
    lrs: Sequence[float],
    losses: Sequence[float],
    *,
    margin: float = 4.0,
    divisor: float = 10.0,
) -> Suggestion:
    """The rate where the loss starts to rise, divided by ``divisor``.

    Made for sweeps from trained weights, whose loss is flat and then diverges, so that no
    descent-based rule finds anything (``LRReestimator`` falls back to it). With
    ``k = max(3, n // 10)``, the starting level is the mean of the first ``k`` losses; the
    edge is the middle of the first window of ``k`` losses whose mean exceeds that level by
    ``margin * noise / sqrt(k)`` (the per-step noise estimated as in the descent check).
    When the losses turn non-finite before any window rises, the edge is the last finite
    rate. The divisor 10 is fastai's and torch-lr-finder's customary distance from the edge,
    fixed before any measurement.
    """
    method = "edge_div10"
    lr, loss, hit = _validated(lrs, losses)
    n = lr.size
    if n < MIN_POINTS:
        return _fail(method, _precheck(lr, loss, hit) or TOO_FEW_POINTS)
    k = max(3, n // 10)
    means = sma(loss, k)
    # The floor keeps a loss that never moves (noise 0) from "rising" by the rounding of
    # the running means.
    rise = max(margin * _step_noise(loss) / math.sqrt(k), 1e-9 * abs(float(means[k - 1])))
    limit = means[k - 1] + rise
    risen = np.flatnonzero(means[k - 1 :] > limit)
    if risen.size:
        edge = float(lr[int(risen[0]) + k - 1 - k // 2])
    elif hit:
        edge = float(lr[-1])
    else:
        return _fail(method, NO_EDGE)
    return Suggestion(lr=edge / divisor, band=None, method=method)


#: Every rule by name; ``suggest(method=name)`` looks them up here.
RULES: dict[str, Rule] = {
    "steepest_band": steepest_band,
    "sma_derivative": sma_derivative,
    "steepest": steepest,
    "valley": valley,
    "minimum_div10": minimum_div10,
    "robust_steepest": robust_steepest,
    "descent_band": descent_band,
    "edge_div10": edge_div10,
}

#: The rule ``suggest`` uses when no method is named.
DEFAULT_METHOD = "descent_band"

#: The rules that make a band of their own; ``suggest`` gives every other rule the default
#: rule's band.
BAND_RULES = ("steepest_band", "descent_band")


def suggest(
    lrs: Sequence[float], losses: Sequence[float], method: str | None = None
) -> Suggestion:
    """Suggests a learning rate from one sweep's raw rates and losses.

    Args:
        lrs: The rates tried, strictly increasing and positive.
        losses: The raw loss at each rate; a non-finite loss ends what is read.
        method: A name from ``RULES`` or ``None`` for the default rule.

    Returns:
        A :class:`Suggestion` whose ``lr`` comes from the named rule. Its ``band`` is the
        named rule's own for the rules in ``BAND_RULES`` and the default rule's band for
        the others (or ``None`` with the reason).

        With ``method=None``, a sweep in which the default rule finds no descent clear of
        the noise is read by its divergence edge instead: the suggestion is
        ``edge_div10``'s (``method="edge_div10"``, no band, ``reason`` the default rule's),
        as ``LRReestimator`` reads a sweep from trained weights. A noisy sweep (per-batch
        losses of a small batch) can fall by half without clearing the descent check, and
        declining it threw away a rate that the edge places well; a sweep that really never
        descends (the loss flat until it diverges) is exactly what ``edge_div10`` is made
        for. Only a sweep with no edge either is declined.
    """
    name = DEFAULT_METHOD if method is None else method
    if name not in RULES:
        raise ValueError(f"`method` must be one of {sorted(RULES)} or None, but got {method!r}.")
    result = RULES[name](lrs, losses)
    if method is None and result.lr is None:
        edge = edge_div10(lrs, losses)
        return result if edge.lr is None else replace(edge, reason=result.reason)
    if name in BAND_RULES:
        return result
    return replace(result, band=RULES[DEFAULT_METHOD](lrs, losses).band)
