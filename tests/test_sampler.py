"""LRRangeSampler and attach: narrowing, hand-off, fallbacks, records, threads and processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import gc
import logging
import math
from pathlib import Path
import subprocess
import sys
import textwrap
from typing import Any
from unittest.mock import patch
import warnings
import weakref

import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    NSGAIISampler,
    PartialFixedSampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.trial import TrialState
import pytest
from test_sampler_offset import record_agrees_with_the_rate

import optuna_lrrange as ol
from optuna_lrrange import RangeTestConfig, Sweep, _sampler, run_range_test
from optuna_lrrange.core import suggest as core_suggest

optuna.logging.set_verbosity(optuna.logging.WARNING)

LOW, HIGH = 1e-6, 1.0


class Toy:
    """A stand-in model: gradient descent on ``a * w**2 / 2``; the band sits near ``1 / a``."""

    def __init__(self, a: float) -> None:
        self.a = a
        self.w = 1.0
        self.sweeps = 0

    def step_fn(self) -> Callable[[float], float]:
        w = [self.w]  # the sweep works on a copy: the model is left as it was

        def step(lr: float) -> float:
            w[0] *= 1 - lr * self.a
            return 0.5 * self.a * w[0] ** 2 + 0.01

        return step

    def sweep(self, config: RangeTestConfig) -> Sweep:
        self.sweeps += 1
        return run_range_test(self.step_fn(), config)


def band_of(a: float, config: RangeTestConfig | None = None) -> tuple[float, float]:
    sweep = Toy(a).sweep(config or RangeTestConfig())
    band = core_suggest(sweep.lrs, sweep.losses).band  # the default rule's band
    assert band is not None
    return band


def curvature(number: int) -> float:
    """A different model per trial number, so each trial's band is its own."""
    return 10.0 ** (number % 4)


def make_objective(
    *, attach: bool = True, models: list[Toy] | None = None, extra: bool = True
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0) if extra else 0.0
        model = Toy(curvature(trial.number))
        if models is not None:
            models.append(model)
        if attach:
            ol.attach(trial, sweep_fn=model.sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        return (math.log10(lr) + 3) ** 2 + x

    return objective


def band_sampler(base: BaseSampler | None = None, **options: Any) -> ol.LRRangeSampler:
    """The band placement that the narrowing tests here describe (the default, the offset
    placement, is tested in ``test_sampler_offset.py``)."""
    return ol.LRRangeSampler(base, placement="band", **options)


def sampled_in_band(trial: optuna.trial.FrozenTrial) -> bool:
    lo, hi = trial.user_attrs["lrrange:band_used"]
    return bool(LOW <= lo <= trial.params["lr"] <= hi <= HIGH)


@pytest.fixture
def messages() -> Iterator[list[logging.LogRecord]]:
    """Every warning logged under the ``optuna`` logger during the test."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.WARNING)
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield records
    optuna.logging.set_verbosity(verbosity)
    logger.removeHandler(handler)


def lrrange_messages(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.name == "optuna.lrrange"]


# --------------------------------------------------------------------------- narrowing

BASES: dict[str, Callable[[], BaseSampler]] = {
    "tpe": lambda: TPESampler(seed=0, n_startup_trials=3),
    "tpe_univariate": lambda: TPESampler(seed=0, n_startup_trials=3, multivariate=False),
    "gp": lambda: GPSampler(seed=0, n_startup_trials=3),
    "cmaes": lambda: CmaEsSampler(seed=0, n_startup_trials=3),
    "random": lambda: RandomSampler(seed=0),
    "qmc": lambda: QMCSampler(seed=0),
}


@pytest.mark.parametrize("base", BASES)
def test_each_rate_is_sampled_inside_its_own_trials_band(base: str) -> None:
    if base == "cmaes":
        pytest.importorskip("cmaes")
    study = optuna.create_study(sampler=band_sampler(BASES[base]()))
    study.optimize(make_objective(), n_trials=8)
    assert len(study.trials) == 8
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        band = band_of(curvature(t.number))
        assert t.user_attrs["lrrange:band"] == list(band)
        assert t.user_attrs["lrrange:band_used"] == [max(band[0], LOW), min(band[1], HIGH)]
        assert t.user_attrs["lrrange:source"] == t.number
        assert t.user_attrs["lrrange:reason"] is None
        assert sampled_in_band(t)
        # The stored distribution stays the objective's.
        assert t.distributions["lr"] == FloatDistribution(LOW, HIGH, log=True)


@pytest.mark.parametrize("base", ["nsgaii", "tpe"])
def test_multi_objective_studies_narrow_too(base: str) -> None:
    inner = NSGAIISampler(seed=0, population_size=4) if base == "nsgaii" else TPESampler(seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=band_sampler(inner))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", 0.0, 1.0)
        model = Toy(curvature(trial.number))
        ol.attach(trial, sweep_fn=model.sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        return x, -math.log10(lr)

    study.optimize(objective, n_trials=12)
    assert all(
        t.user_attrs["lrrange:source"] == t.number and sampled_in_band(t) for t in study.trials
    )


def test_multivariate_tpe_never_gets_the_rate_in_its_relative_search_space() -> None:
    base = TPESampler(seed=0, n_startup_trials=2)
    sampler = band_sampler(base)
    study = optuna.create_study(sampler=sampler)
    with (
        patch.object(base, "sample_relative", wraps=base.sample_relative) as relative,
        patch.object(base, "sample_independent", wraps=base.sample_independent) as independent,
    ):
        study.optimize(make_objective(), n_trials=6)
    assert relative.call_count == 6
    assert all("lr" not in call.args[2] for call in relative.call_args_list)
    assert any("x" in call.args[2] for call in relative.call_args_list)  # x goes relative
    lr_calls = [c for c in independent.call_args_list if c.args[2] == "lr"]
    assert len(lr_calls) == 6  # every rate, not only the startup trials'
    for call, t in zip(lr_calls, study.trials, strict=True):
        lo, hi = t.user_attrs["lrrange:band_used"]
        assert call.args[3] == FloatDistribution(lo, hi, log=True)
    # The relative search space the study sees has no rate; the base's own one does.
    frozen = study.trials[-1]
    assert set(base.infer_relative_search_space(study, frozen)) == {"x", "lr"}
    assert set(sampler.infer_relative_search_space(study, frozen)) == {"x"}


# --------------------------------------------------------------------------- hooks

HOOKS = (
    "infer_relative_search_space",
    "sample_relative",
    "sample_independent",
    "before_trial",
    "after_trial",
    "reseed_rng",
)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_forwarded_to_the_base_sampler(hook: str) -> None:
    base = TPESampler(seed=0, n_startup_trials=1)
    study = optuna.create_study(sampler=ol.LRRangeSampler(base))
    with patch.object(base, hook, wraps=getattr(base, hook)) as spy:
        # n_jobs=2 makes the study call reseed_rng.
        study.optimize(make_objective(), n_trials=4, n_jobs=2)
    assert spy.call_count >= 1
    if hook == "reseed_rng":
        return
    assert all(call.args[0] is study for call in spy.call_args_list)
    if hook in ("before_trial", "after_trial"):
        assert sorted(call.args[1].number for call in spy.call_args_list) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- GP / CMA-ES notice


@pytest.mark.parametrize("base", ["gp", "cmaes"])
def test_gp_and_cmaes_do_not_warn_about_the_narrowed_rate_but_still_about_others(
    base: str, messages: list[logging.LogRecord]
) -> None:
    if base == "cmaes":
        pytest.importorskip("cmaes")
    inner = GPSampler(seed=0, n_startup_trials=2) if base == "gp" else CmaEsSampler(seed=0)
    study = optuna.create_study(sampler=ol.LRRangeSampler(inner))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_float("y", 0.0, 1.0) if trial.number % 2 else 0.0  # dynamic
        ol.attach(trial, sweep_fn=Toy(10.0).sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        return x + y + lr

    study.optimize(objective, n_trials=7)
    notices = [r.getMessage() for r in messages if "is sampled independently" in r.getMessage()]
    assert not any("`lr`" in m for m in notices)
    assert any("`y`" in m for m in notices)  # the filter is narrow: other params still warn


# --------------------------------------------------------------------------- the hand-off


def test_threads_each_trial_sweeps_its_own_model() -> None:
    models: list[Toy] = []
    # Full sweeps (not narrowed by earlier ones), so each band is its own model's alone.
    sampler = ol.LRRangeSampler(TPESampler(seed=0), narrow_sweeps=False)
    study = optuna.create_study(sampler=sampler)
    study.optimize(make_objective(models=models), n_trials=12, n_jobs=3)
    assert len(study.trials) == 12 and all(m.sweeps == 1 for m in models)
    for t in study.trials:
        assert t.user_attrs["lrrange:band"] == list(band_of(curvature(t.number)))
        assert sampled_in_band(t)
    assert not _sampler._registry


def test_several_processes_on_one_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    optuna.create_study(study_name="p", storage=url)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import optuna, optuna_lrrange as ol
        from test_sampler import make_objective
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = ol.LRRangeSampler(
            optuna.samplers.TPESampler(seed=int(sys.argv[1])), narrow_sweeps=False
        )
        study = optuna.load_study(study_name="p", storage={url!r}, sampler=sampler)
        study.optimize(make_objective(), n_trials=4)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)]) for i in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    trials = optuna.load_study(study_name="p", storage=url).trials
    assert len(trials) == 8
    for t in trials:
        assert [s.info["trial_number"] for s in ol.get_sweeps(t)] == [t.number]
        assert t.user_attrs["lrrange:band"] == list(band_of(curvature(t.number)))
        assert sampled_in_band(t)


def test_ask_and_tell_and_the_probe_leaves_with_its_trial() -> None:
    study = optuna.create_study(sampler=ol.LRRangeSampler(RandomSampler(seed=0)))
    trial = study.ask()
    model = Toy(100.0)
    ol.attach(trial, sweep_fn=model.sweep)
    assert len(_sampler._registry) == 1
    lr = trial.suggest_float("lr", LOW, HIGH, log=True)
    study.tell(trial, lr)
    assert model.sweeps == 1 and not _sampler._registry
    frozen = study.trials[0]
    assert frozen.user_attrs["lrrange:band"] == list(band_of(100.0))
    assert sampled_in_band(frozen)


def test_no_model_outlives_its_trial() -> None:
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0)))
    models: list[Toy] = []
    study.optimize(make_objective(models=models), n_trials=3)
    refs = [weakref.ref(m) for m in models]
    models.clear()
    gc.collect()
    assert all(r() is None for r in refs) and not _sampler._registry

    # Asked but never told (no after_trial): the Trial object's end drops the probe.
    trial = study.ask()
    model = Toy(1.0)
    ref = weakref.ref(model)
    ol.attach(trial, sweep_fn=model.sweep)
    del model
    gc.collect()
    assert ref() is not None and len(_sampler._registry) == 1  # held while the trial lives
    del trial
    gc.collect()
    assert ref() is None and not _sampler._registry


def test_pruned_trials_keep_their_records_and_drop_their_probe() -> None:
    study = optuna.create_study(
        sampler=ol.LRRangeSampler(TPESampler(seed=0)),
        pruner=optuna.pruners.ThresholdPruner(upper=0.5),
    )

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(curvature(trial.number)).sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        trial.report(float(trial.number % 2), 0)  # odd trials are pruned
        if trial.should_prune():
            raise optuna.TrialPruned
        return lr

    study.optimize(objective, n_trials=4)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED] * 2
    assert all(len(ol.get_sweeps(t)) == 1 and sampled_in_band(t) for t in study.trials)
    assert not _sampler._registry


# --------------------------------------------------------------------------- fixed rates


def test_enqueued_rates_are_not_swept_unless_asked(messages: list[logging.LogRecord]) -> None:
    models: list[Toy] = []
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0)))
    study.enqueue_trial({"lr": 0.05})
    study.optimize(make_objective(models=models), n_trials=2)
    fixed, free = study.trials
    assert fixed.params["lr"] == 0.05 and models[0].sweeps == 0
    assert ol.get_sweeps(fixed) == [] and fixed.user_attrs["lrrange:reason"] == "fixed"
    assert models[1].sweeps == 1 and sampled_in_band(free)
    assert not lrrange_messages(messages) and not _sampler._registry

    models.clear()
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0), sweep_fixed=True))
    study.enqueue_trial({"lr": 0.05})
    study.optimize(make_objective(models=models), n_trials=1)
    (fixed,) = study.trials
    assert fixed.params["lr"] == 0.05 and models[0].sweeps == 1
    (sweep,) = ol.get_sweeps(fixed)
    assert sweep.info["chosen_lr"] == 0.05 and sweep.info["reason"] == "fixed"
    assert fixed.user_attrs["lrrange:band"] == list(band_of(curvature(0)))
    assert fixed.user_attrs["lrrange:band_used"] is None


@pytest.mark.parametrize("outside", [True, False])
def test_partial_fixed_sampler_fixes_the_rate_without_a_sweep(outside: bool) -> None:
    models: list[Toy] = []
    if outside:
        sampler: BaseSampler = PartialFixedSampler({"lr": 0.01}, ol.LRRangeSampler())
    else:
        sampler = ol.LRRangeSampler(PartialFixedSampler({"lr": 0.01}, TPESampler(seed=0)))
    study = optuna.create_study(sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # attach finds the sampler: no warning
        study.optimize(make_objective(models=models), n_trials=2)
    assert [t.params["lr"] for t in study.trials] == [0.01, 0.01]
    assert all(m.sweeps == 0 for m in models)
    assert all(ol.get_sweeps(t) == [] for t in study.trials)
    assert not _sampler._registry


# --------------------------------------------------------------------------- fallbacks


def _flat_sweep(config: RangeTestConfig) -> Sweep:
    return run_range_test(lambda lr: 1.0, config)


def _exploding_sweep(config: RangeTestConfig) -> Sweep:
    return run_range_test(lambda lr: math.inf, config)


def _raising_sweep(config: RangeTestConfig) -> Sweep:
    raise RuntimeError("out of memory")


def _not_a_sweep(config: RangeTestConfig) -> Any:
    return [1.0, 2.0]


def _unrecordable_sweep(config: RangeTestConfig) -> Sweep:
    # A good sweep whose info holds a value JSON cannot carry (as a torch.device would).
    sweep = Toy(10.0).sweep(config)
    return Sweep(sweep.lrs, sweep.losses, sweep.stop_reason, sweep.config, {"devices": {"cpu"}})


@pytest.mark.parametrize(
    ("sweep_fn", "reason"),
    [
        (_flat_sweep, "no_band: never_descends"),
        (_exploding_sweep, "no_band: diverged_at_once"),
        (_raising_sweep, "sweep_failed: RuntimeError: out of memory"),
        (_not_a_sweep, "sweep_failed: TypeError: the sweep function must return a Sweep"),
        (_unrecordable_sweep, "sweep_failed: TypeError: a sweep record holds only JSON-native"),
        (None, "no_probe: call optuna_lrrange.attach(trial, ...)"),
    ],
)
def test_a_failed_sweep_falls_back_to_the_full_range(
    sweep_fn: Any, reason: str, messages: list[logging.LogRecord]
) -> None:
    study = optuna.create_study(sampler=band_sampler(TPESampler(seed=0)))

    def objective(trial: optuna.Trial) -> float:
        if sweep_fn is not None:
            ol.attach(trial, sweep_fn=sweep_fn)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study.optimize(objective, n_trials=3)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["lrrange:reason"].startswith(reason)
        assert t.user_attrs["lrrange:band_used"] == [LOW, HIGH]
        swept = sweep_fn in (_flat_sweep, _exploding_sweep)
        assert len(ol.get_sweeps(t)) == int(swept)  # a sweep that ran is kept, band or not
        if swept:
            assert t.user_attrs["lrrange:band"] is None
    logged = lrrange_messages(messages)
    assert len(logged) == 3  # one warning per trial
    assert all(reason in m for m in logged)


@pytest.mark.parametrize("where", ["above", "below"])
def test_a_band_outside_the_range_moves_against_the_nearer_edge(where: str) -> None:
    a, (low, high) = (1.0, (1e-6, 1e-4)) if where == "above" else (1e4, (1e-3, 1.0))
    band = band_of(a)
    study = optuna.create_study(sampler=band_sampler(TPESampler(seed=0)))

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(a).sweep)
        return trial.suggest_float("lr", low, high, log=True)

    study.optimize(objective, n_trials=3)
    width = math.log10(band[1] / band[0])
    for t in study.trials:
        lo, hi = t.user_attrs["lrrange:band_used"]
        assert math.isclose(math.log10(hi / lo), width)
        assert (hi == high) if where == "above" else (lo == low)
        assert lo <= t.params["lr"] <= hi
        assert t.user_attrs["lrrange:reason"].startswith("band_outside_range: band [")
        assert f"lies {where}" in t.user_attrs["lrrange:reason"]


def test_a_base_sampler_that_ignores_the_band_is_recorded_as_such() -> None:
    # GridSampler returns its grid values whatever distribution it is given: the record
    # must not claim that a rate outside the band was sampled in it.
    band = band_of(10.0)
    inside = math.sqrt(band[0] * band[1])
    sampler = band_sampler(optuna.samplers.GridSampler({"lr": [1e-5, inside]}))
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(10.0).sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # GridSampler's own out-of-range notice
        study.optimize(objective, n_trials=2)
    for t in study.trials:
        (sweep,) = ol.get_sweeps(t)
        assert sweep.info["chosen_lr"] == t.params["lr"]
        assert sweep.info["band_used"] == t.user_attrs["lrrange:band_used"]
        assert sweep.info["reason"] == t.user_attrs["lrrange:reason"]
        if t.params["lr"] == inside:
            assert sampled_in_band(t) and t.user_attrs["lrrange:reason"] is None
        else:
            assert t.params["lr"] == 1e-5
            assert t.user_attrs["lrrange:band_used"] is None
            assert t.user_attrs["lrrange:reason"].startswith(
                "base_outside_band: GridSampler returned 1e-05 outside ["
            )


@pytest.mark.parametrize(
    "suggest",
    [
        lambda t: t.suggest_float("lr", 1e-5, 1.0),
        lambda t: t.suggest_int("lr", 1, 100, log=True),
        lambda t: t.suggest_categorical("lr", [1e-3, 1e-2]),
    ],
    ids=["linear_float", "int", "categorical"],
)
def test_a_rate_that_is_not_a_log_float_is_a_clear_error(suggest: Callable[..., Any]) -> None:
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0)))

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(1.0).sweep)
        return float(suggest(trial))

    with pytest.raises(
        ValueError, match=r"`lr`: it must be suggested as `trial.suggest_float\('lr'"
    ):
        study.optimize(objective, n_trials=1)
    assert study.trials[0].state == TrialState.FAIL


# --------------------------------------------------------------------------- periodic sweeps


def test_sweep_every_reuses_the_newest_band_within_the_window() -> None:
    model = Toy(100.0)
    study = optuna.create_study(sampler=band_sampler(TPESampler(seed=0), sweep_every=3))

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=model.sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study.optimize(objective, n_trials=7)
    sources = [t.user_attrs["lrrange:source"] for t in study.trials]
    assert sources == [0, 0, 0, 3, 3, 3, 6] and model.sweeps == 3
    band = [max(band_of(100.0)[0], LOW), min(band_of(100.0)[1], HIGH)]
    for t in study.trials:
        assert len(ol.get_sweeps(t)) == int(t.number % 3 == 0)
        assert t.user_attrs["lrrange:band_used"] == band and sampled_in_band(t)


@pytest.mark.parametrize("bad", [[0.01], ["a", "b"], 0.5, [0.1, 0.01], [0.0, 1.0], "[1, 2]"])
def test_a_malformed_stored_band_is_skipped_and_never_fails_a_trial(
    bad: Any, messages: list[logging.LogRecord]
) -> None:
    # Trial 0's band is overwritten with garbage (a corrupt or hand-edited storage): the
    # trials that would reuse it sweep for themselves instead, and say why.
    model = Toy(100.0)
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0), sweep_every=3))

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=model.sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        if trial.number == 0:
            trial.set_user_attr("lrrange:band", bad)
        return lr

    study.optimize(objective, n_trials=5)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    assert [t.user_attrs["lrrange:source"] for t in study.trials] == [0, 1, 1, 1, 4]
    assert all(sampled_in_band(t) for t in study.trials)
    skipped = [m for m in lrrange_messages(messages) if "skipped trial 0's band" in m]
    assert len(skipped) == 1 and "must be None or [low, high]" in skipped[0]


def test_resweep_when_the_named_params_differ() -> None:
    study = optuna.create_study(
        sampler=band_sampler(TPESampler(seed=0), sweep_every=10, resweep_on_params=("width",))
    )
    for width in (1, 1, 2, 1, 2):
        study.enqueue_trial({"width": width})

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_int("width", 1, 2)
        trial.suggest_float("x", 0.0, 1.0)  # differs every trial: not compared
        ol.attach(trial, sweep_fn=Toy(10.0**width).sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study.optimize(objective, n_trials=5)
    assert [t.user_attrs["lrrange:source"] for t in study.trials] == [0, 0, 2, 0, 2]
    for t in study.trials:
        assert t.user_attrs["lrrange:band_used"][1] == band_of(10.0 ** t.params["width"])[1]


# --------------------------------------------------------------------------- attach errors


def test_attach_rejects_misuse() -> None:
    study = optuna.create_study(sampler=ol.LRRangeSampler())
    trial = study.ask()
    with pytest.raises(TypeError, match="`trial` must be the running optuna.trial.Trial"):
        ol.attach(study.trials[0], sweep_fn=Toy(1.0).sweep)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="or `sweep_fn` must be given"):
        ol.attach(trial)
    with pytest.raises(TypeError, match="pass either `sweep_fn` or the PyTorch objects"):
        ol.attach(trial, object(), sweep_fn=Toy(1.0).sweep)
    with pytest.raises(TypeError, match="`sweep_fn` must be callable"):
        ol.attach(trial, sweep_fn=3)  # type: ignore[arg-type]
    trial.suggest_float("lr", LOW, HIGH, log=True)
    with pytest.raises(RuntimeError, match=r"must be called before `trial.suggest_float\('lr'"):
        ol.attach(trial, sweep_fn=Toy(1.0).sweep)
    study.tell(trial, 0.0)
    # Re-running an objective with a FixedTrial (outside any study) is fine.
    ol.attach(optuna.trial.FixedTrial({"lr": 0.1}), sweep_fn=Toy(1.0).sweep)
    assert not _sampler._registry


def test_attach_warns_when_the_study_has_no_lrrange_sampler() -> None:
    study = optuna.create_study(sampler=TPESampler(seed=0))
    trial = study.ask()
    with pytest.warns(UserWarning, match="not an LRRangeSampler, so no range test will run"):
        ol.attach(trial, sweep_fn=Toy(1.0).sweep)
    assert not _sampler._registry


def test_the_constructor_checks_its_options() -> None:
    with pytest.raises(ValueError, match="`sweep_every >= 1` must hold"):
        ol.LRRangeSampler(sweep_every=0)
    with pytest.raises(ValueError, match="`method` must be one of"):
        ol.LRRangeSampler(method="nope")
    with pytest.raises(ValueError, match="pass either `config` or keyword options"):
        ol.LRRangeSampler(config=RangeTestConfig(), num_iter=20)
    with pytest.raises(TypeError, match="range-test options must be among"):
        ol.LRRangeSampler(num_iters=20)
    with pytest.raises(TypeError, match="`base_sampler` must be an optuna BaseSampler"):
        ol.LRRangeSampler("tpe")  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        wrapped = PartialFixedSampler({"x": 0.0}, ol.LRRangeSampler())
    for nested in (ol.LRRangeSampler(), wrapped):  # each trial would sweep twice
        with pytest.raises(ValueError, match="must not be or wrap an LRRangeSampler"):
            ol.LRRangeSampler(nested)
    sampler = ol.LRRangeSampler(num_iter=20, end_lr=1.0)
    assert sampler.config == RangeTestConfig(num_iter=20, end_lr=1.0)
    assert isinstance(sampler._base_sampler, TPESampler)


# --------------------------------------------------------------------------- PyTorch


def _torch_parts(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("optuna_lrrange.pytorch")
    torch.manual_seed(seed)
    x = torch.randn(256, 8)
    y = (x[:, 0] > 0).long()
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return model, optimizer, torch.nn.CrossEntropyLoss(), loader


def _state(model: Any, optimizer: Any) -> tuple[dict[str, Any], str]:
    params = {k: v.clone() for k, v in model.state_dict().items()}
    return params, repr(optimizer.state_dict())


@pytest.mark.parametrize("fail", [False, True])
def test_pytorch_attach_leaves_model_and_optimizer_exactly_as_they_were(fail: bool) -> None:
    torch = pytest.importorskip("torch")
    model, optimizer, loss_fn, loader = _torch_parts()
    calls = [0]

    def flaky_loss(out: Any, y: Any) -> Any:
        calls[0] += 1
        if fail and calls[0] == 5:
            raise RuntimeError("bad batch")
        return loss_fn(out, y)

    before = _state(model, optimizer)
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0), num_iter=30))

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, model, optimizer, flaky_loss, loader)
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        after = _state(model, optimizer)
        assert after[1] == before[1]
        assert all(torch.equal(after[0][k], v) for k, v in before[0].items())
        return lr

    study.optimize(objective, n_trials=1)
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE, "the objective's equality checks failed"
    if fail:
        reason = "sweep_failed: RuntimeError: bad batch; sampled in the full range"
        assert t.user_attrs["lrrange:reason"] == reason
        assert ol.get_sweeps(t) == []
    else:
        assert len(ol.get_sweeps(t)[0]) > 10 and t.user_attrs["lrrange:reason"] is None
        lo, hi = t.user_attrs["lrrange:band_used"]
        assert 1e-5 <= lo <= t.params["lr"] <= hi <= 1.0


def test_pytorch_attach_checks_its_arguments() -> None:
    model, optimizer, loss_fn, loader = _torch_parts()
    study = optuna.create_study(sampler=ol.LRRangeSampler())
    trial = study.ask()
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        ol.attach(trial, object(), optimizer, loss_fn, loader)
    with pytest.raises(TypeError, match="`optimizer` must be a torch.optim.Optimizer"):
        ol.attach(trial, model, "sgd", loss_fn, loader)
    with pytest.raises(TypeError, match="`loader` must be an iterable"):
        ol.attach(trial, model, optimizer, loss_fn)
    with pytest.raises(TypeError, match="range-test settings belong to LRRangeSampler"):
        ol.attach(trial, model, optimizer, loss_fn, loader, num_iter=20)
    with pytest.raises(TypeError, match="`adapter_options` must be among"):
        ol.attach(trial, model, optimizer, loss_fn, loader, devices="cpu")
    assert not _sampler._registry


def test_threads_never_get_the_same_initial_weights() -> None:
    # Each trial builds its model from the process-wide torch RNG while other threads sweep:
    # as many distinct initialisations as without the library (every one of them).
    torch = pytest.importorskip("torch")
    _, _, loss_fn, loader = _torch_parts()

    def run(with_library: bool) -> list[tuple[float, ...]]:
        inits: list[tuple[float, ...]] = []

        def objective(trial: optuna.Trial) -> float:
            model = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
            )
            inits.append(tuple(model[0].weight.flatten().tolist()))
            if with_library:
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
                ol.attach(trial, model, optimizer, loss_fn, loader)
            return trial.suggest_float("lr", 1e-5, 1.0, log=True)

        inner = RandomSampler(seed=0)
        sampler = ol.LRRangeSampler(inner, num_iter=30) if with_library else inner
        optuna.create_study(sampler=sampler).optimize(objective, n_trials=24, n_jobs=3)
        assert len(inits) == 24
        return inits

    assert len(set(run(with_library=True))) == len(set(run(with_library=False))) == 24


def test_quickstart_on_mnist1d_records_every_sweep_and_band(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("optuna_lrrange.pytorch")
    data = pytest.importorskip("mnist1d.data")
    d = data.make_dataset(data.get_dataset_args())
    x, y = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"])
    x_test, y_test = torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"])
    train = torch.utils.data.TensorDataset(x, y)

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_categorical("width", [32, 64])
        torch.manual_seed(trial.number)
        loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True)
        model = torch.nn.Sequential(
            torch.nn.Linear(40, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        ol.attach(trial, model, optimizer, loss_fn, loader)
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for xb, yb in loader:  # one short epoch
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        with torch.no_grad():
            return float((model(x_test).argmax(1) == y_test).float().mean())

    url = f"sqlite:///{tmp_path / 'quickstart.db'}"
    sampler = ol.LRRangeSampler(TPESampler(seed=0), num_iter=60)
    study = optuna.create_study(storage=url, direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=6)

    trials = optuna.load_study(study_name=study.study_name, storage=url).trials
    assert len(trials) == 6
    for t in trials:
        assert t.state == TrialState.COMPLETE
        record_agrees_with_the_rate(t, low=1e-5, high=1.0)  # the default, offset placement
        if t.user_attrs["lrrange:source"] == t.number:
            (sweep,) = ol.get_sweeps(t)
            assert sweep.info["trial_number"] == t.number
        else:  # a width whose earlier sweeps agreed is not swept again
            assert t.user_attrs["lrrange:reason"].startswith("settled: "), t.user_attrs
    assert all(t.user_attrs["lrrange:source"] == t.number for t in trials[:3])
    assert max(t.value or 0.0 for t in trials) > 0.3  # it learned something in one epoch


def test_a_sliver_of_band_inside_the_range_is_widened_and_tpe_samples_in_it() -> None:
    # The objective's range overlaps the band by 1%: sampling must still have room (TPE's
    # Parzen estimator divides by the interval's width) and stay inside the range.
    band_low = band_of(1.0)[0]
    high = band_low * 1.01
    sampler = band_sampler(TPESampler(seed=0, n_startup_trials=2))
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(1.0).sweep)
        return trial.suggest_float("lr", 1e-6, high, log=True)

    study.optimize(objective, n_trials=8)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        lo, hi = trial.user_attrs["lrrange:band_used"]
        assert math.log10(hi / lo) == pytest.approx(0.2)
        assert 1e-6 <= lo <= trial.params["lr"] <= hi <= high
