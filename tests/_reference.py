"""Deliberately plain reference implementations of the core's numerics.

Loops and lists, no vectorisation, written from the definitions in the docstrings of
``optuna_lrrange.core``; the real implementations are checked against these.
"""

from __future__ import annotations

import math
import statistics


def ema(xs, beta=0.98):
    out, acc = [], 0.0
    for t, x in enumerate(xs):
        acc = beta * acc + (1 - beta) * x
        out.append(acc / (1 - beta ** (t + 1)))
    return out


def sma(xs, window):
    out = []
    for i in range(len(xs)):
        if i + 1 < window:
            out.append(math.nan)
        else:
            part = xs[i - window + 1 : i + 1]
            out.append(sum(part) / window)
    return out


def loss_change(lrs, losses, window):
    per_step = [
        (losses[i] - losses[i - 1]) / (math.log10(lrs[i]) - math.log10(lrs[i - 1]))
        for i in range(1, len(lrs))
    ]
    return [math.nan] + sma(per_step, window)


def scaled(k, n):
    return k if n >= 100 else max(1, (k * n) // 100)


def finite_prefix(lrs, losses):
    n = 0
    while n < len(losses) and math.isfinite(losses[n]):
        n += 1
    return list(lrs[:n]), list(losses[:n]), n < len(losses)


def precheck(lrs, losses, hit):
    """None, or why no rule suggests anything."""
    n = len(losses)
    if n < 10:
        if hit or (n >= 2 and losses[-1] > losses[0]):
            return "diverged_at_once"
        return "too_few_points"
    k = max(3, n // 10)
    means = [sum(losses[i - k + 1 : i + 1]) / k for i in range(k - 1, n)]
    start, low = means[0], min(means)
    steps = [losses[i] - losses[i - 1] for i in range(1, n)]
    med = statistics.median(steps)
    noise = 1.4826 * statistics.median([abs(s - med) for s in steps]) / math.sqrt(2)
    return "never_descends" if start - low <= 4 * noise / math.sqrt(k) else None


def trimmed_smoothed(lrs, losses):
    n = len(lrs)
    start, end = n // 10, n - scaled(5, n)
    return lrs[start:end], ema(losses)[start:end]


def steepest(lrs, losses):
    lrs, losses, hit = finite_prefix(lrs, losses)
    reason = precheck(lrs, losses, hit)
    if reason:
        return None, reason
    t_lr, t_loss = trimmed_smoothed(lrs, losses)
    grads = [
        (t_loss[i + 1] - t_loss[i]) / (math.log(t_lr[i + 1]) - math.log(t_lr[i]))
        for i in range(len(t_lr) - 1)
    ]
    best = min(range(len(grads)), key=lambda i: (grads[i], i))
    if not grads[best] < 0:
        return None, "never_descends"
    return t_lr[best], None


def valley(lrs, losses):
    lrs, losses, hit = finite_prefix(lrs, losses)
    reason = precheck(lrs, losses, hit)
    if reason:
        return None, reason
    t_lr, t_loss = trimmed_smoothed(lrs, losses)
    n = len(t_loss)
    lds = [1] * n
    max_end = 0
    for i in range(1, n):
        for j in range(i):
            if t_loss[i] < t_loss[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
    if lds[max_end] < 2:
        return None, "never_descends"
    max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return t_lr[min(max(idx, 0), n - 1)], None


def minimum_div10(lrs, losses):
    lrs, losses, hit = finite_prefix(lrs, losses)
    reason = precheck(lrs, losses, hit)
    if reason:
        return None, reason
    t_lr, t_loss = trimmed_smoothed(lrs, losses)
    best = min(range(len(t_loss)), key=lambda i: (t_loss[i], i))
    return t_lr[best] / 10, None


def sma_derivative(lrs, losses, sma_window=20, n_skip_start=10, n_skip_end=5):
    lrs, losses, hit = finite_prefix(lrs, losses)
    reason = precheck(lrs, losses, hit)
    if reason:
        return None, reason
    n = len(lrs)
    w = min(scaled(sma_window, n), n - 1)
    slope = loss_change(lrs, losses, w)
    start, end = max(w, scaled(n_skip_start, n)), n - scaled(n_skip_end, n)
    if end - start < 1:
        start, end = w, n
    best = min(range(start, end), key=lambda i: (slope[i], i))
    if not slope[best] < 0:
        return None, "never_descends"
    return lrs[best], None


def steepest_band(lrs, losses, sma_window=20, frac=0.3, max_decades=1.5, min_decades=0.2):
    """Returns (lr, (low, high)) or (None, reason)."""
    lrs, losses, hit = finite_prefix(lrs, losses)
    reason = precheck(lrs, losses, hit)
    if reason:
        return None, reason
    n = len(lrs)
    w = min(scaled(sma_window, n), n - 1)
    slope = loss_change(lrs, losses, w)
    valid = [i for i in range(n) if not math.isnan(slope[i])]
    best = min(valid, key=lambda i: (slope[i], i))
    if not slope[best] < 0:
        return None, "never_descends"
    lo = hi = best
    while lo - 1 >= valid[0] and slope[lo - 1] <= frac * slope[best]:
        lo -= 1
    while hi + 1 < n and slope[hi + 1] <= frac * slope[best]:
        hi += 1

    def centre(i):
        return (math.log10(lrs[i - w]) + math.log10(lrs[i])) / 2

    c_best, c_lo, c_hi = centre(best), centre(lo), centre(hi)
    if c_hi - c_lo > max_decades:
        # A window of max_decades centred on the steepest point, moved back inside the run.
        start = c_best - max_decades / 2
        if start < c_lo:
            start = c_lo
        if start + max_decades > c_hi:
            start = c_hi - max_decades
        c_lo = start
        c_hi = c_lo + max_decades
    if c_hi - c_lo < min_decades:
        c_lo = c_best - min_decades / 2
        c_hi = c_best + min_decades / 2
    return 10**c_best, (10**c_lo, 10**c_hi)


def range_test(step, lrs, factor=4.0, beta=0.98):
    """(lrs taken, losses, reason) of the loop's definition."""
    taken, losses = [], []
    smoothed_all = []
    for lr in lrs:
        loss = float(step(lr))
        taken.append(lr)
        losses.append(loss)
        if not math.isfinite(loss):
            return taken, losses, "non_finite_loss"
        smoothed_all = ema(losses, beta)
        best = min(smoothed_all)
        scale = max(abs(best), abs(smoothed_all[0]) / 100)
        if smoothed_all[-1] > best + (factor - 1) * scale:
            return taken, losses, "diverged"
    return taken, losses, "completed"


def edge_div10(lrs, losses, margin=4.0, divisor=10.0):
    """(lr, reason): the first window of k losses rising above the start, its middle / 10."""
    lrs, losses, hit = finite_prefix(lrs, losses)
    n = len(losses)
    if n < 10:
        return None, precheck(lrs, losses, hit) or "too_few_points"
    k = max(3, n // 10)
    steps = [losses[i] - losses[i - 1] for i in range(1, n)]
    med = statistics.median(steps)
    noise = 1.4826 * statistics.median([abs(s - med) for s in steps]) / math.sqrt(2)
    start = sum(losses[:k]) / k
    rise = max(margin * noise / math.sqrt(k), 1e-9 * abs(start))  # not a rounding error
    for end in range(k - 1, n):
        if sum(losses[end - k + 1 : end + 1]) / k > start + rise:
            return lrs[end - k // 2] / divisor, None
    if hit:
        return lrs[-1] / divisor, None
    return None, "no_edge"


def running_median(losses, window):
    """Centred running median over ``window`` (scaled for short sweeps, made odd), the ends
    padded with the edge values."""
    n = len(losses)
    k = window if n >= 100 else max(1, window * n // 100)
    if k % 2 == 0:
        k += 1
    h = k // 2
    return [
        statistics.median([losses[min(max(j, 0), n - 1)] for j in range(i - h, i + h + 1)])
        for i in range(n)
    ]


# ----------------------------------------------------------------- placement (offset mode)


def place(anchor, offset, low, high):
    """anchor x 10**offset, kept inside [low, high]."""
    rate = anchor * 10**offset
    if rate < low:
        return low
    if rate > high:
        return high
    return rate


def in_reach(anchor, low, high, prior=(-1.15, 0.35)):
    """The anchor, or where it moves when the prior's offsets from it all miss [low, high]:
    the prior against the nearer edge, or centred on a range narrower than the prior."""
    prior_low, prior_high = anchor * 10 ** prior[0], anchor * 10 ** prior[1]
    if prior_high >= low and prior_low <= high:
        return anchor
    if math.log10(high / low) < prior[1] - prior[0]:
        return math.sqrt(low * high) / 10 ** ((prior[0] + prior[1]) / 2)
    if prior_low > high:
        return high / 10 ** prior[1]
    return low / 10 ** prior[0]


def settled_anchor(anchors, placed_since, sweeps=3, spread=0.35, every=4):
    """The median of the newest `sweeps` anchors when they agree within `spread` decades
    and fewer than every - 1 trials took it since the newest sweep; else None."""
    if len(anchors) < sweeps or placed_since >= every - 1:
        return None
    logs = sorted(math.log10(a) for a in anchors[-sweeps:])
    if logs[-1] - logs[0] > spread:
        return None
    return 10 ** statistics.median(logs)


def median_anchor(anchors):
    """The median of the anchors in log space, None when there are none."""
    if not anchors:
        return None
    return 10 ** statistics.median([math.log10(a) for a in anchors])


def divergence_cap(offsets, losses):
    """The lowest very bad offset above the highest offset that went well."""
    finite = [x for x in losses if math.isfinite(x)]
    if not finite:
        return None
    best, worst = min(finite), max(finite)

    def very_bad(x):
        if not math.isfinite(x):
            return True
        return len(finite) >= 5 and x > best + 0.5 * (worst - best)

    pairs = list(zip(offsets, losses, strict=True))
    highest_good = max(o for o, x in pairs if not very_bad(x))
    cap = None
    for o, x in pairs:
        if very_bad(x) and o > highest_good and (cap is None or o < cap):
            cap = o
    return cap


def below_divergence(log_rate, log_rates, losses):
    """(middle, good, edge) for a rate at or above the rates that diverged, else None."""
    edge = divergence_cap(log_rates, losses)
    if edge is None or log_rate < edge:
        return None
    finite = [x for x in losses if math.isfinite(x)]
    best, worst = min(finite), max(finite)

    def went_well(x):
        return math.isfinite(x) and not (len(finite) >= 5 and x > best + 0.5 * (worst - best))

    good = max(r for r, x in zip(log_rates, losses, strict=True) if went_well(x))
    return (good + edge) / 2, good, edge


def prior_interval(cap, prior=(-1.15, 0.35), offsets=(-2.0, 1.0), min_width=0.2):
    """The prior below the cap, at least min_width wide, inside the offsets' range."""
    lo, hi = prior
    if cap is None or cap >= hi:
        return lo, hi
    hi = cap if cap > offsets[0] + min_width else offsets[0] + min_width
    if hi - min_width < lo:
        lo = hi - min_width
    return lo, hi


def sweep_span(anchors, start_lr, end_lr, num_iter, below=2.5, above=2.0, min_anchors=3):
    """From `below` decades under the lowest anchor to `above` over the highest, inside
    [start_lr, end_lr], at the full sweep's points per decade; None when not narrower."""
    if len(anchors) < min_anchors:
        return None
    per_decade = (num_iter - 1) / math.log10(end_lr / start_lr)
    lo = max(math.log10(min(anchors)) - below, math.log10(start_lr))
    hi = min(math.log10(max(anchors)) + above, math.log10(end_lr))
    if hi <= lo:
        return None
    n = round(per_decade * (hi - lo)) + 1
    if n >= num_iter or n < 10:
        return None
    return 10**lo, 10**hi, n


def capped_range(cap, offsets=(-2.0, 1.0), min_width=0.2):
    """The offsets' range with its top lowered to the cap, at least min_width wide."""
    lo, hi = offsets
    if cap is None or cap >= hi:
        return lo, hi
    if cap < lo + min_width:
        return lo, lo + min_width
    return lo, cap
