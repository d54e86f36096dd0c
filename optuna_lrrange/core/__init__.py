"""The range test itself: numpy and the standard library only."""

from optuna_lrrange.core._config import MIN_NUM_ITER, RangeTestConfig
from optuna_lrrange.core._rules import (
    DEFAULT_METHOD,
    DIVERGED_AT_ONCE,
    MIN_POINTS,
    NEVER_DESCENDS,
    RULES,
    TOO_FEW_POINTS,
    Suggestion,
    minimum_div10,
    sma_derivative,
    steepest,
    steepest_band,
    suggest,
    valley,
)
from optuna_lrrange.core._smoothing import ema, loss_change, sma
from optuna_lrrange.core._sweep import (
    COMPLETED,
    DIVERGED,
    NON_FINITE,
    STOP_REASONS,
    Sweep,
    run_range_test,
)

__all__ = [
    "COMPLETED",
    "DEFAULT_METHOD",
    "DIVERGED",
    "DIVERGED_AT_ONCE",
    "MIN_NUM_ITER",
    "MIN_POINTS",
    "NEVER_DESCENDS",
    "NON_FINITE",
    "RULES",
    "STOP_REASONS",
    "TOO_FEW_POINTS",
    "RangeTestConfig",
    "Suggestion",
    "Sweep",
    "ema",
    "loss_change",
    "minimum_div10",
    "run_range_test",
    "sma",
    "sma_derivative",
    "steepest",
    "steepest_band",
    "suggest",
    "valley",
]
