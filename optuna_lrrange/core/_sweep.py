"""The range-test loop over a step callable, and the Sweep record it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
import math
from typing import Any, SupportsFloat

import numpy as np

from optuna_lrrange.core._config import RangeTestConfig, resolve_config
from optuna_lrrange.core._rules import Suggestion, suggest
from optuna_lrrange.core._smoothing import ema, loss_change

#: Why a sweep ended.
COMPLETED = "completed"  # all num_iter steps were taken
DIVERGED = "diverged"  # smoothed loss exceeded diverge_factor x the best smoothed loss
NON_FINITE = "non_finite_loss"  # a loss was NaN or infinite
STOP_REASONS = (COMPLETED, DIVERGED, NON_FINITE)


@dataclass(frozen=True, eq=True)
class Sweep:
    """The raw record of one range test.

    Attributes:
        lrs: The learning rate of every step taken (of the first param group).
        losses: The raw loss of every step taken, in the same order; the last may be
            non-finite when ``stop_reason == "non_finite_loss"``.
        stop_reason: ``"completed"``, ``"diverged"`` or ``"non_finite_loss"``.
        config: The settings the sweep ran with.
        info: Where the sweep was taken (for example the training step of a
            re-estimation); free-form, JSON-safe.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    stop_reason: str
    config: RangeTestConfig = field(default_factory=RangeTestConfig)
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lrs", tuple(map(float, self.lrs)))
        object.__setattr__(self, "losses", tuple(map(float, self.losses)))
        if len(self.lrs) != len(self.losses):
            raise ValueError(
                "`len(lrs) == len(losses)` must hold, but got "
                f"({len(self.lrs)}, {len(self.losses)})."
            )
        if self.stop_reason not in STOP_REASONS:
            raise ValueError(
                f"`stop_reason` must be one of {STOP_REASONS}, but got {self.stop_reason!r}."
            )

    def __len__(self) -> int:
        return len(self.lrs)

    def smoothed_losses(self, beta: float | None = None) -> np.ndarray:
        """Bias-corrected EMA of the raw losses (``config.smooth_beta`` by default)."""
        return ema(self.losses, self.config.smooth_beta if beta is None else beta)

    def loss_change(self, sma: int = 20) -> np.ndarray:
        """Loss change per decade of lr, SMA-smoothed: one entry per step, NaN at the start."""
        return loss_change(self.lrs, self.losses, sma)

    def suggest(self, method: str | None = None) -> Suggestion:
        """The same as ``optuna_lrrange.suggest(self.lrs, self.losses, method)``."""
        return suggest(self.lrs, self.losses, method)


def run_range_test(
    step: Callable[[float], SupportsFloat],
    config: RangeTestConfig | None = None,
    **options: Any,
) -> Sweep:
    """Runs a learning-rate range test over any training step.

    Args:
        step: Called once per step with the learning rate to use; takes one optimizer
            step at that rate and returns the loss of the batch (anything ``float()``
            accepts).
        config: The settings; alternatively pass them as keyword ``options``
            (``start_lr=..., num_iter=...``), not both.

    Returns:
        The :class:`Sweep` with the raw rates and losses and why it stopped: after
        ``num_iter`` steps, on a non-finite loss, or once the smoothed loss exceeds
        ``diverge_factor`` times the best smoothed loss. With losses that may be negative
        or near zero the rule reads ``smoothed > best + (diverge_factor - 1) * scale``,
        where ``scale = max(|best|, |first smoothed loss| / 100)``; for positive losses
        above a hundredth of the first one this is the article's ``smoothed > 4 * best``.

    An exception raised by ``step`` propagates; the caller restores its state.
    """
    config = resolve_config(config, options)
    # Everything that does not depend on the losses is computed before the first step, so
    # a step adds little work to the training step it wraps: the rates, and the
    # bias-correction denominators ``1 - beta ** (i + 1)``. The arithmetic is the same,
    # operation for operation, as computing them in the loop.
    schedule = config.schedule()
    beta = config.smooth_beta
    weight = 1 - beta
    corrections = [1 - beta ** (i + 1) for i in range(config.num_iter)]
    rise = config.diverge_factor - 1
    losses: list[float] = []
    append = losses.append
    isfinite = math.isfinite
    acc = 0.0
    best = math.inf
    # The divergence threshold depends on the best smoothed loss only, so it is computed
    # when that changes; a new best never exceeds it.
    limit = math.inf
    floor = 0.0  # a hundredth of the first smoothed loss, once there is one
    first = True
    reason = COMPLETED
    for lr, correction in zip(schedule, corrections, strict=True):
        raw = step(lr)
        try:
            loss = float(raw)
        except (TypeError, ValueError):
            raise TypeError(
                "`step` must return the loss as a float (anything `float()` accepts), but got "
                f"{type(raw).__name__} {raw!r:.80}."
            ) from None
        append(loss)
        if not isfinite(loss):
            reason = NON_FINITE
            break
        acc = beta * acc + weight * loss
        smoothed = acc / correction
        if first:
            floor = abs(smoothed) / 100
            first = False
        if smoothed < best:
            best = smoothed
            limit = best + rise * max(abs(best), floor)
        elif smoothed > limit:
            reason = DIVERGED
            break
    return Sweep(tuple(schedule[: len(losses)]), tuple(losses), reason, config)
