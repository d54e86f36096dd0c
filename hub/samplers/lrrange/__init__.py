"""LRRangeSampler: a learning-rate range test on each trial's own model narrows the rate.

The sampler of optuna-lrrange, packaged for OptunaHub. See README.md.
"""

from __future__ import annotations

from ._lrrange._records import get_sweeps
from ._lrrange._sampler import LRRangeSampler, attach
from ._lrrange.core import RangeTestConfig, Suggestion, Sweep

__all__ = ["LRRangeSampler", "RangeTestConfig", "Suggestion", "Sweep", "attach", "get_sweeps"]
