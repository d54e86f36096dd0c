"""Smoothing and the loss change per decade of learning rate.

All functions take raw arrays and return new ones: the raw data is never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ema(values: Sequence[float] | np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average (fastai's ``smooth_loss``).

    ``s_t = beta * s_{t-1} + (1 - beta) * x_t`` with ``s_{-1} = 0``, divided by
    ``1 - beta ** (t + 1)`` so that early values are not pulled towards zero.
    """
    x = np.asarray(values, dtype=float)
    if not 0 <= beta < 1:
        raise ValueError(f"`0 <= beta < 1` must hold, but got beta={beta!r}.")
    out = np.empty_like(x)
    acc = 0.0
    for t, value in enumerate(x):
        acc = beta * acc + (1 - beta) * value
        out[t] = acc / (1 - beta ** (t + 1))
    return out


def sma(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing simple moving average; the first ``window - 1`` entries are NaN."""
    x = np.asarray(values, dtype=float)
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"`window >= 1` must hold, but got window={window!r}.")
    out = np.full_like(x, np.nan)
    if len(x) >= window:
        csum = np.cumsum(np.insert(x, 0, 0.0))
        out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


def loss_change(
    lrs: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    sma_window: int = 20,
) -> np.ndarray:
    """Loss change per decade of learning rate, smoothed by a trailing moving average.

    Entry ``i`` (``i >= 1``) is the mean over the last ``sma_window`` steps of
    ``(loss[j] - loss[j-1]) / (log10(lr[j]) - log10(lr[j-1]))``, as in the article's
    ``plot_loss_change(sma=20)``; entries without a full window are NaN. The result has
    one entry per learning rate.
    """
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(losses, dtype=float)
    if lr.shape != loss.shape:
        raise ValueError(f"`len(lrs) == len(losses)` must hold, but got ({lr.size}, {loss.size}).")
    out = np.full(lr.shape, np.nan)
    if lr.size < 2:
        return out
    per_step = np.diff(loss) / np.diff(np.log10(lr))
    out[1:] = sma(per_step, sma_window)
    return out
