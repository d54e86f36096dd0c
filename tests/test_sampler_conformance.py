"""Optuna's own sampler conformance suites, run against LRRangeSampler.

The suites sample parameters named ``x``, ``y``, ``z``...: for them the wrapper must behave
exactly like its base sampler (every hook forwarded, relative and independent sampling,
multi-objective studies), over multivariate TPE, GP (basic suite only: its relative suite
takes over a minute) and, for several objectives, TPE and NSGA-II. The learning-rate path
is covered in ``test_sampler.py`` and ``test_sampler_offset.py``; the suites also
run over the offset placement.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.samplers import BaseSampler, GPSampler, NSGAIISampler, TPESampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)
import pytest

import optuna_lrrange as ol

optuna.logging.set_verbosity(optuna.logging.WARNING)


class TestOverMultivariateTPE(BasicSamplerTestCase, RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: ol.LRRangeSampler(TPESampler(n_startup_trials=0))


class TestMultiObjectiveOverTPE(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: ol.LRRangeSampler(TPESampler(n_startup_trials=0))


class TestMultiObjectiveOverNSGAII(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: ol.LRRangeSampler(NSGAIISampler(population_size=4))


class TestOverGP(BasicSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: ol.LRRangeSampler(GPSampler(n_startup_trials=0))


class TestOffsetPlacementOverMultivariateTPE(BasicSamplerTestCase, RelativeSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: ol.LRRangeSampler(TPESampler(n_startup_trials=0), placement="offset")


class TestOffsetPlacementMultiObjectiveOverTPE(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: ol.LRRangeSampler(TPESampler(n_startup_trials=0), placement="offset")
