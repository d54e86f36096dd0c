"""optuna-lrrange: the learning-rate range test inside Optuna studies.

``import optuna_lrrange`` stays light: the numpy core is imported at once, everything that
needs Optuna, torch, pandas or matplotlib only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from optuna_lrrange.core import (
    RULES,
    RangeTestConfig,
    Suggestion,
    Sweep,
    run_range_test,
    suggest,
)

__version__ = "0.1.0"

# name -> module that defines it, imported on first access.
_LAZY = {
    "LRRangeSampler": "optuna_lrrange._sampler",
    "attach": "optuna_lrrange._sampler",
    "get_sweeps": "optuna_lrrange._records",
    "LRReestimator": "optuna_lrrange.reestimate",
    "sweeps_dataframe": "optuna_lrrange.analysis",
    "sweeps_summary": "optuna_lrrange.analysis",
    "plot_sweep": "optuna_lrrange.visualization",
    "plot_loss_change": "optuna_lrrange.visualization",
    "plot_sweeps": "optuna_lrrange.visualization",
    "plot_bands": "optuna_lrrange.visualization",
}

if TYPE_CHECKING:
    from optuna_lrrange._records import get_sweeps
    from optuna_lrrange._sampler import LRRangeSampler, attach
    from optuna_lrrange.analysis import sweeps_dataframe, sweeps_summary
    from optuna_lrrange.reestimate import LRReestimator
    from optuna_lrrange.visualization import (
        plot_bands,
        plot_loss_change,
        plot_sweep,
        plot_sweeps,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'optuna_lrrange' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "RULES",
    "LRRangeSampler",
    "LRReestimator",
    "RangeTestConfig",
    "Suggestion",
    "Sweep",
    "attach",
    "get_sweeps",
    "plot_bands",
    "plot_loss_change",
    "plot_sweep",
    "plot_sweeps",
    "run_range_test",
    "suggest",
    "sweeps_dataframe",
    "sweeps_summary",
]
