"""Where the rate goes relative to a sweep: pure functions for the ``"offset"`` placement.

The sampler's ``"offset"`` placement makes the rate's position relative to the trial's
sweep a parameter of the trial: an offset in decades from the sweep's anchor, drawn from
the same distribution (``OFFSET_RANGE``) in every trial, so that the base sampler models
it jointly with every other parameter. The rate is ``anchor * 10 ** offset``, kept inside
the objective's ``[low, high]``. This module holds the arithmetic; the sampler is glue.

Why the drop point is the anchor: on the oracle-grid study's 70 sweeps with a descent
(``studies/oracle``, 13 tasks), the best constant rate minus the landmark, in decades,
scatters from sweep to sweep of the same task with a standard deviation of 0.14 around the
drop point, 0.18 around the divergence edge and 0.56 around the filtered loss minimum;
across tasks the drop point's mean offset varies least (sd 0.40, the edge's 0.67). Every
near-optimal grid rate of the 13 tasks lies between -1.6 and +0.8 decades of its sweep's
drop point; ``OFFSET_RANGE`` covers that with room below for what a short sweep cannot
see (a longer horizon or a smaller batch lowers the best rate, by 1.2 decades in one case).
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np

from optuna_lrrange.core._config import MIN_NUM_ITER
from optuna_lrrange.core._rules import descent_band

#: The offset's distribution, in decades from the anchor: the same in every trial.
OFFSET_RANGE = (-2.0, 1.0)

#: Where independent draws of the offset go (the base sampler's random start-up, and
#: samplers without a joint model): 1.5 decades, as wide as ``descent_band``'s band, at
#: the lowest placement that still held a near-optimal rate in every design sweep of the
#: oracle-grid study (its band sits 0.25 decades higher). Read off that study's seed-mean
#: grid curves, a log-uniform draw from it scores 1.50 x the best loss on the design tasks
#: against 1.75 for the band, whose upper part trains badly there, and 1.27 on the
#: held-out tasks, as the band does.
PRIOR_OFFSETS = (-1.15, 0.35)

#: The narrowest prior interval, in decades (TPE's Parzen estimator needs some width).
MIN_PRIOR_DECADES = 0.2

#: A narrowed sweep spans from this many decades below the lowest anchor seen...
SPAN_BELOW = 2.5
#: ...to this many above the highest one.
SPAN_ABOVE = 2.0
#: Sweeps are narrowed only once this many earlier sweeps gave an anchor.
MIN_ANCHORS_TO_NARROW = 3

#: Trials with the same other parameters stop sweeping each time once the newest this
#: many of their sweeps gave anchors...
SETTLE_SWEEPS = 3
#: ...that span at most this many decades. The oracle-grid study's sweeps of one task
#: scatter about their drop point with a standard deviation of 0.14 decades; three such
#: sweeps span about 0.24 decades on average, and more than 0.35 in about one case in four.
SETTLE_SPREAD = 0.35
#: A settled configuration still sweeps one trial in this many, so that its anchor keeps
#: being checked against new sweeps (and unsettles if they disagree).
SETTLE_EVERY = 4


def anchor(lrs: Sequence[float], losses: Sequence[float]) -> tuple[float | None, str | None]:
    """The sweep's drop point, or ``None`` and the reason there is none.

    The drop point is ``descent_band``'s: the first rate at which a running median of the
    raw loss has made 70% of its drop from the starting level to its lowest value.
    """
    suggestion = descent_band(lrs, losses, shift_decades=0.0)
    return suggestion.lr, suggestion.reason


def place(anchor: float, offset: float, low: float, high: float) -> float:
    """``anchor * 10 ** offset``, clipped into ``[low, high]``."""
    if not (0 < low <= high and anchor > 0 and math.isfinite(offset)):
        raise ValueError(
            "`0 < low <= high`, `anchor > 0` and a finite `offset` must hold, but got "
            f"(anchor={anchor!r}, offset={offset!r}, low={low!r}, high={high!r})."
        )
    return float(min(max(anchor * 10.0**offset, low), high))


def in_reach(
    anchor: float, low: float, high: float, prior: tuple[float, float] = PRIOR_OFFSETS
) -> float:
    """The anchor to place from: ``anchor``, unless every offset of ``prior`` from it
    lands outside ``[low, high]``.

    Such an anchor (a drop point far above or below the objective's range) would clip
    every draw to the same edge, and the trial's rate could not be tuned. As the band
    placement moves a band that misses the range against the nearer edge, the anchor is
    then moved until ``prior`` just fits inside the range at that edge; where the range
    is narrower than ``prior``, until their middles meet (in decades).
    """
    if not (0 < low <= high and anchor > 0):
        raise ValueError(
            "`0 < low <= high` and `anchor > 0` must hold, but got "
            f"(anchor={anchor!r}, low={low!r}, high={high!r})."
        )
    a, lo, hi = math.log10(anchor), math.log10(low), math.log10(high)
    if lo <= a + prior[1] and a + prior[0] <= hi:
        return float(anchor)
    if hi - lo < prior[1] - prior[0]:
        return float(10.0 ** ((lo + hi) / 2 - (prior[0] + prior[1]) / 2))
    if a + prior[0] > hi:
        return float(10.0 ** (hi - prior[1]))
    return float(10.0 ** (lo - prior[0]))


def reachable(
    anchor: float, low: float, high: float, offsets: tuple[float, float] = OFFSET_RANGE
) -> tuple[float, float]:
    """The rates an offset in ``offsets`` can give: ``place`` at both ends."""
    return place(anchor, offsets[0], low, high), place(anchor, offsets[1], low, high)


def median_anchor(anchors: Sequence[float]) -> float | None:
    """The geometric median of ``anchors`` (the median in log space), ``None`` if empty."""
    logs = np.log10(np.asarray(anchors, dtype=float))
    if logs.size == 0:
        return None
    return float(10.0 ** np.median(logs))


def divergence_cap(offsets: Sequence[float], losses: Sequence[float]) -> float | None:
    """The lowest offset that went very bad above every offset that went well.

    Args:
        offsets: Each finished trial's offset from its anchor, in decades (the rate it
            trained at, ``log10(rate / anchor)``).
        losses: Each trial's result, lower is better; NaN (or inf) for a trial that failed
            or was pruned.

    A trial went very bad if its loss is not finite or, once at least five losses are
    finite, lies in the worse half between the best and the worst of them; every other
    trial went well. A diverged run ends near an untrained model's loss, the worst there
    is, however many runs diverged (a rule built on the median fails once half of them
    have). The cap is the lowest very bad offset above the highest good one, ``None``
    while there is none: bad results below a good offset are rates too small, or another
    hyperparameter's doing, not divergence, and the cap never closes an offset that
    trained well.
    """
    edge = _divergence_edge(offsets, losses, "offsets")
    return None if edge is None else edge[1]


def _divergence_edge(
    coordinates: Sequence[float], losses: Sequence[float], name: str
) -> tuple[float, float] | None:
    """``(highest good coordinate, lowest very bad coordinate above it)``, or ``None``;
    ``name`` is the coordinates' argument, for the error on mismatched lengths."""
    values = np.asarray(coordinates, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if values.shape != loss.shape or values.ndim != 1:
        raise ValueError(
            f"`{name}` and `losses` must be 1-D and of equal length, but got shapes "
            f"{values.shape} and {loss.shape}."
        )
    finite = np.isfinite(loss)
    if not finite.any():
        return None
    bad = ~finite
    if finite.sum() >= 5:
        best, worst = float(loss[finite].min()), float(loss[finite].max())
        bad |= finite & (loss > best + 0.5 * (worst - best))
    good = float(values[~bad].max())  # the best finite loss is never very bad
    above = bad & (values > good)
    if not above.any():
        return None
    return good, float(values[above].min())


def below_divergence(
    log_rate: float, log_rates: Sequence[float], losses: Sequence[float]
) -> tuple[float, float, float] | None:
    """Where a rate at or above the rates seen to diverge goes: ``(new, good, edge)``.

    Args:
        log_rate: The rate about to be used, as ``log10(rate)``.
        log_rates: ``log10`` of the rate each finished trial of the same configuration
            trained at.
        losses: Each of those trials' results, as for :func:`divergence_cap`.

    The edge is :func:`divergence_cap` over the rates themselves: the lowest rate that
    went very bad above the highest rate that went well (``good``). A rate below the edge
    is kept (``None``). One at or above it moves to the middle of ``(good, edge)`` in
    log space: each such trial either trains well there (raising ``good``) or not
    (lowering the edge), so the rates between are bisected instead of tried again where
    training is known to fail. The offset's cap cannot do this across configurations
    whose sweeps' drop points differ while their rates diverge alike (the CLI demo's
    narrow networks drop at 3x the rate of its wide ones and diverge at the same rates).
    """
    edge = _divergence_edge(log_rates, losses, "log_rates")
    if edge is None or log_rate < edge[1]:
        return None
    good, top = edge
    return 0.5 * (good + top), good, top


def prior_interval(
    cap: float | None,
    prior: tuple[float, float] = PRIOR_OFFSETS,
    offsets: tuple[float, float] = OFFSET_RANGE,
) -> tuple[float, float]:
    """The interval independent draws of the offset come from: ``prior`` below ``cap``.

    The top is lowered to the cap; the interval keeps ``MIN_PRIOR_DECADES`` of width, by
    lowering its bottom, inside ``offsets``.
    """
    lo, hi = prior
    if cap is not None and cap < hi:
        hi = max(cap, offsets[0] + MIN_PRIOR_DECADES)
        lo = min(lo, hi - MIN_PRIOR_DECADES)
    return lo, hi


def capped_range(
    cap: float | None, offsets: tuple[float, float] = OFFSET_RANGE
) -> tuple[float, float]:
    """The offsets a joint draw may take: ``offsets`` below ``cap``, at least
    ``MIN_PRIOR_DECADES`` wide."""
    lo, hi = offsets
    if cap is None or cap >= hi:
        return lo, hi
    return lo, max(cap, lo + MIN_PRIOR_DECADES)


def settled_anchor(anchors: Sequence[float], placed_since: int) -> float | None:
    """The anchor a trial takes instead of sweeping, or ``None`` when it must sweep.

    Args:
        anchors: The drop points of the earlier sweeps of trials with the same other
            parameters, oldest first.
        placed_since: How many such trials took a settled anchor, without sweeping, since
            the newest of those sweeps.

    Once the newest ``SETTLE_SWEEPS`` anchors span at most ``SETTLE_SPREAD`` decades the
    configuration is settled: its trials take their median (in log space), and one trial
    in ``SETTLE_EVERY`` still sweeps. The median of three agreeing sweeps scatters less
    than one sweep's drop point does, so a settled trial is placed no worse than one that
    sweeps, for none of the sweep's steps.
    """
    if len(anchors) < SETTLE_SWEEPS or placed_since >= SETTLE_EVERY - 1:
        return None
    newest = np.log10(np.asarray(anchors[-SETTLE_SWEEPS:], dtype=float))
    if float(newest.max() - newest.min()) > SETTLE_SPREAD:
        return None
    return float(10.0 ** np.median(newest))


def sweep_span(
    anchors: Sequence[float], start_lr: float, end_lr: float, num_iter: int
) -> tuple[float, float, int] | None:
    """A narrower exponential sweep around the anchors seen, at the same points per decade.

    From ``SPAN_BELOW`` decades below the lowest anchor to ``SPAN_ABOVE`` above the
    highest, inside ``[start_lr, end_lr]``; ``num_iter`` shrinks with the span, so the
    points per decade stay those of the full sweep. ``None`` (sweep the full range) while
    fewer than ``MIN_ANCHORS_TO_NARROW`` anchors are known, or when the span would not be
    narrower.

    Why these margins: cutting each of the oracle-grid study's 70 descending sweeps to 2.5
    decades below and 2 above its own drop point kept a drop point in every one, moved it
    by one sweep step (0.08 decades) in the median and by at most 0.49, and dropped 45% of
    the steps. The rates cut from the bottom barely train, so a sweep that starts there
    sees nearly the same model as the full sweep does.
    """
    if len(anchors) < MIN_ANCHORS_TO_NARROW:
        return None
    logs = np.log10(np.asarray(anchors, dtype=float))
    full = math.log10(end_lr / start_lr)
    lo = max(float(logs.min()) - SPAN_BELOW, math.log10(start_lr))
    hi = min(float(logs.max()) + SPAN_ABOVE, math.log10(end_lr))
    n = round((num_iter - 1) * (hi - lo) / full) + 1
    if not hi > lo or n >= num_iter or n < MIN_NUM_ITER:
        return None
    return 10.0**lo, 10.0**hi, int(n)
