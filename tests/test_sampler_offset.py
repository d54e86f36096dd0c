"""LRRangeSampler(placement="offset"): the rate's offset from the sweep's anchor is a
parameter of the trial that the base sampler models jointly. Studies on SQLite storage."""

from __future__ import annotations

from collections.abc import Callable
import math
from pathlib import Path
from typing import Any
from unittest.mock import patch

import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler, CmaEsSampler, GPSampler, RandomSampler, TPESampler
from optuna.trial import TrialState
import pytest

import optuna_lrrange as ol
from optuna_lrrange import RangeTestConfig, Sweep, run_range_test
from optuna_lrrange.core import _placement

optuna.logging.set_verbosity(optuna.logging.WARNING)

LOW, HIGH = 1e-6, 1.0
OFFSET = "lr:offset"


class Toy:
    """Gradient descent on ``a * w**2 / 2``: the sweep's drop point sits near ``1 / a``."""

    def __init__(self, a: float) -> None:
        self.a = a
        self.configs: list[RangeTestConfig] = []

    def sweep(self, config: RangeTestConfig) -> Sweep:
        self.configs.append(config)
        w = [1.0]

        def step(lr: float) -> float:
            w[0] *= 1 - lr * self.a
            return 0.5 * self.a * w[0] ** 2 + 0.01

        return run_range_test(step, config)


def anchor_of(a: float, config: RangeTestConfig | None = None) -> float:
    sweep = Toy(a).sweep(config or RangeTestConfig())
    got, _ = _placement.anchor(sweep.lrs, sweep.losses)
    assert got is not None
    return got


def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def objective_for(
    sweep_fn: Callable[[optuna.Trial], Callable[[RangeTestConfig], Sweep]] | None = None,
) -> Callable[[optuna.Trial], float]:
    """Two hyperparameters: the best rate is 10**-0.5 of the anchor at ``x = 0`` and moves
    down with ``x``, so the best offset depends on ``x``."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        fn = Toy(100.0).sweep if sweep_fn is None else sweep_fn(trial)
        ol.attach(trial, sweep_fn=fn)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        best = math.log10(anchor_of(100.0)) - 0.5 - x
        return (math.log10(lr) - best) ** 2

    return objective


def offset_sampler(base: BaseSampler, **options: Any) -> ol.LRRangeSampler:
    return ol.LRRangeSampler(base, placement="offset", **options)


def record_agrees_with_the_rate(
    t: optuna.trial.FrozenTrial, low: float = LOW, high: float = HIGH
) -> None:
    """What is recorded on a trial placed from an anchor gives back its rate."""
    attrs = t.user_attrs
    anchor, offset = attrs["lrrange:anchor"], attrs["lrrange:offset"]
    assert attrs["lrrange:placement"] == "offset"
    assert offset == t.params[OFFSET]
    assert t.params["lr"] == _placement.place(anchor, offset, low, high)
    lo, hi = attrs["lrrange:band_used"]
    assert lo <= t.params["lr"] <= hi
    assert (lo, hi) == _placement.reachable(anchor, low, high)
    sweeps = ol.get_sweeps(t)
    if attrs["lrrange:source"] == t.number:
        (sweep,) = sweeps
        assert sweep.info["chosen_lr"] == t.params["lr"]
        assert sweep.info["anchor"] == anchor and sweep.info["offset"] == offset
        assert anchor == _placement.anchor(sweep.lrs, sweep.losses)[0]


# ------------------------------------------------------------------ the joint model

JOINT = {
    "tpe": lambda: TPESampler(seed=0, n_startup_trials=4),
    "gp": lambda: GPSampler(seed=0, n_startup_trials=4),
    "cmaes": lambda: CmaEsSampler(seed=0, n_startup_trials=4),
}


@pytest.mark.parametrize("base", JOINT)
def test_the_base_sampler_samples_the_offset_jointly_after_its_startup(
    base: str, tmp_path: Path
) -> None:
    inner = JOINT[base]()
    sampler = offset_sampler(inner)
    relative: dict[int, dict[str, Any]] = {}
    real = inner.sample_relative

    def spy(study: optuna.Study, trial: Any, space: dict[str, Any]) -> dict[str, Any]:
        assert "lr" not in space
        out = real(study, trial, space)
        relative[trial.number] = dict(out)
        return out

    study = optuna.create_study(sampler=sampler, storage=storage(tmp_path))
    with patch.object(inner, "sample_relative", side_effect=spy):
        study.optimize(objective_for(), n_trials=10)
    trials = study.get_trials()
    # Every trial carries the offset with the one distribution, so it is in the
    # intersection search space; the rate never is.
    assert all(t.distributions[OFFSET] == _placement_distribution() for t in trials)
    space = sampler.infer_relative_search_space(study, trials[-1])
    assert space[OFFSET] == _placement_distribution() and "lr" not in space
    # After the startup trials the base sampler's relative sample holds the offset, and
    # the trial took it.
    late = [t for t in trials if t.number >= 5]
    assert late and all(OFFSET in relative[t.number] for t in late)
    assert all(t.params[OFFSET] == relative[t.number][OFFSET] for t in late)
    # The startup trials drew it independently, inside the prior (the sweep's band).
    lo, hi = _placement.PRIOR_OFFSETS
    assert all(lo <= t.params[OFFSET] <= hi for t in trials[:4])
    for t in trials:
        record_agrees_with_the_rate(t)


def _placement_distribution() -> FloatDistribution:
    return FloatDistribution(*_placement.OFFSET_RANGE)


def test_multivariate_tpe_learns_the_offset_with_the_other_parameter(tmp_path: Path) -> None:
    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0, n_startup_trials=10)),
        storage=storage(tmp_path),
    )
    study.optimize(objective_for(), n_trials=40)
    # The best offset is -0.5 - x (plus a constant from the anchor): found jointly.
    best = study.best_trial
    assert best.value < 0.02
    record_agrees_with_the_rate(best)


def test_multi_objective_studies_place_the_rate_too(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        return math.log10(lr) ** 2, (math.log10(lr) + 4) ** 2

    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=offset_sampler(TPESampler(seed=0, n_startup_trials=3)),
        storage=storage(tmp_path),
    )
    study.optimize(objective, n_trials=6)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        record_agrees_with_the_rate(t)


# ------------------------------------------------------------------ sweeps without an anchor


def _flat(config: RangeTestConfig) -> Sweep:
    return run_range_test(lambda lr: 1.0, config)


def _raising(config: RangeTestConfig) -> Sweep:
    raise RuntimeError("out of memory")


@pytest.mark.parametrize("bad", [_flat, _raising])
def test_a_trial_without_an_anchor_borrows_the_studys_median_anchor(
    bad: Callable[[RangeTestConfig], Sweep], tmp_path: Path
) -> None:
    def sweep_fn(trial: optuna.Trial) -> Callable[[RangeTestConfig], Sweep]:
        # Trials 0-2 sweep models whose anchors differ; trial 3 gets no anchor.
        return bad if trial.number == 3 else Toy(10.0 ** (trial.number + 1)).sweep

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0), narrow_sweeps=False),
        storage=storage(tmp_path),
    )
    study.optimize(objective_for(sweep_fn), n_trials=5)
    lost = study.trials[3]
    median = _placement.median_anchor([anchor_of(10.0), anchor_of(100.0), anchor_of(1000.0)])
    assert lost.user_attrs["lrrange:anchor"] == median
    assert lost.user_attrs["lrrange:source"] is None
    reason = lost.user_attrs["lrrange:reason"]
    assert reason.startswith(("no_anchor", "sweep_failed")) and "median anchor" in reason
    record_agrees_with_the_rate(lost)
    # A borrowed anchor is not an anchor of the study's own: trial 4 borrows nothing.
    assert _offset_own_anchors(study) == [anchor_of(10.0 ** (n + 1)) for n in (0, 1, 2, 4)]
    # The offset stays in every trial, so it stays in the joint model.
    space = study.sampler.infer_relative_search_space(study, study.trials[-1])
    assert OFFSET in space


def _offset_own_anchors(study: optuna.Study) -> list[float]:
    from optuna_lrrange import _offset

    return _offset.own_anchors(study)


def test_without_any_anchor_the_rate_is_sampled_in_the_full_range(tmp_path: Path) -> None:
    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0)), storage=storage(tmp_path)
    )
    study.optimize(objective_for(lambda trial: _flat), n_trials=3)
    for t in study.trials:
        attrs = t.user_attrs
        assert attrs["lrrange:anchor"] is None and attrs["lrrange:offset"] is None
        assert attrs["lrrange:band_used"] == [LOW, HIGH]
        assert attrs["lrrange:reason"].endswith("sampled in the full range")
        assert LOW <= t.params["lr"] <= HIGH and OFFSET in t.params


def test_without_attach_nothing_is_suggested_and_the_full_range_is_used(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0)), storage=storage(tmp_path)
    )
    study.optimize(objective, n_trials=2)
    for t in study.trials:
        assert OFFSET not in t.params
        assert t.user_attrs["lrrange:reason"].startswith("no_probe")
        assert t.user_attrs["lrrange:offset"] is None


# ------------------------------------------------------------------ fixed rates


def test_an_enqueued_rate_carries_the_offset_it_sits_at(tmp_path: Path) -> None:
    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0, n_startup_trials=2)), storage=storage(tmp_path)
    )
    study.optimize(objective_for(), n_trials=3)
    study.enqueue_trial({"x": 0.5, "lr": 1e-3})
    study.optimize(objective_for(), n_trials=2)
    fixed = study.trials[3]
    anchor = anchor_of(100.0)
    assert fixed.params["lr"] == 1e-3
    assert math.isclose(fixed.params[OFFSET], math.log10(1e-3 / anchor))
    assert fixed.user_attrs["lrrange:anchor"] == anchor
    assert fixed.user_attrs["lrrange:source"] is None  # the study's median, not its own
    space = study.sampler.infer_relative_search_space(study, study.trials[-1])
    assert OFFSET in space


def test_an_enqueued_rate_with_sweep_fixed_uses_its_own_anchor(tmp_path: Path) -> None:
    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0), sweep_fixed=True), storage=storage(tmp_path)
    )
    study.enqueue_trial({"x": 0.5, "lr": 5e-4})
    study.optimize(objective_for(), n_trials=1)
    (fixed,) = study.trials
    anchor = anchor_of(100.0)
    assert math.isclose(fixed.params[OFFSET], math.log10(5e-4 / anchor))
    assert fixed.user_attrs["lrrange:source"] == 0 and fixed.user_attrs["lrrange:anchor"] == anchor
    assert fixed.user_attrs["lrrange:reason"] == "fixed"


def test_the_offset_name_must_not_be_the_objectives(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float(OFFSET, -2.0, 1.0)
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0)), storage=storage(tmp_path)
    )
    with pytest.raises(RuntimeError, match="rename the objective's parameter"):
        study.optimize(objective, n_trials=1)

    def objective2(trial: optuna.Trial) -> float:
        trial.suggest_float(OFFSET, -1.0, 1.0)
        return 0.0

    with pytest.raises(ValueError, match="rename the objective's parameter"):
        study.optimize(objective2, n_trials=1)


# ------------------------------------------------------------------ the divergence cap


@pytest.mark.parametrize("base", ["random", "tpe"])
def test_draws_stay_below_where_the_study_diverged(base: str, tmp_path: Path) -> None:
    anchor = anchor_of(100.0)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        offset = math.log10(lr / anchor)
        if offset > 0.1:
            return 10.0  # diverged: far worse than every run that trains
        return (offset + 0.3) ** 2

    inner = RandomSampler(seed=0) if base == "random" else TPESampler(seed=0, n_startup_trials=5)
    study = optuna.create_study(sampler=offset_sampler(inner), storage=storage(tmp_path))
    study.optimize(objective, n_trials=25)
    trials = study.trials
    diverged: list[float] = []
    for t in trials:
        offset, cap = t.params[OFFSET], t.user_attrs.get("lrrange:cap")
        if cap is not None:
            assert offset <= cap + 1e-9
        if diverged:
            # Once a rate has diverged above every good one, the cap holds draws below the
            # lowest such offset, and never closes one that trained well.
            assert cap is not None and cap <= min(diverged) + 1e-9
            good = [u.params[OFFSET] for u in trials[: t.number] if u.value < 1.0]
            assert cap > max(good)
        if t.value == 10.0:
            diverged.append(offset)
    assert 1 <= len(diverged) <= 3


def test_the_cap_counts_failed_trials(tmp_path: Path) -> None:
    anchor = anchor_of(100.0)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        if math.log10(lr / anchor) > 0.0:
            raise FloatingPointError("the loss went NaN")
        return 1.0

    study = optuna.create_study(
        sampler=offset_sampler(RandomSampler(seed=1)), storage=storage(tmp_path)
    )
    study.optimize(objective, n_trials=15, catch=(FloatingPointError,))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed
    caps = [t.user_attrs["lrrange:cap"] for t in study.trials if t.number > failed[0].number]
    assert all(c is not None and c > 0.0 for c in caps)
    assert all(
        t.params[OFFSET] <= t.user_attrs["lrrange:cap"]
        for t in study.trials
        if t.number > failed[0].number
    )


# ------------------------------------------------------------------ narrower sweeps


def test_later_sweeps_span_less_at_the_same_points_per_decade(tmp_path: Path) -> None:
    models: list[Toy] = []

    def sweep_fn(trial: optuna.Trial) -> Callable[[RangeTestConfig], Sweep]:
        models.append(Toy(100.0))
        return models[-1].sweep

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0)), storage=storage(tmp_path)
    )
    study.optimize(objective_for(sweep_fn), n_trials=5)
    full = RangeTestConfig()
    configs = [m.configs[0] for m in models]
    assert configs[:3] == [full] * 3
    anchor = anchor_of(100.0)
    anchors = [t.user_attrs["lrrange:anchor"] for t in study.trials]
    for i, config in enumerate(configs[3:], start=3):
        assert math.isclose(config.start_lr, min(anchors[:i]) * 10**-_placement.SPAN_BELOW)
        assert math.isclose(config.end_lr, max(anchors[:i]) * 10**_placement.SPAN_ABOVE)
        assert config.num_iter < full.num_iter
        per_decade = (config.num_iter - 1) / math.log10(config.end_lr / config.start_lr)
        assert abs(per_decade - (full.num_iter - 1) / 8) < 0.5
    # What each sweep spanned is on record, and the narrowed sweeps still found the anchor.
    summary = ol.sweeps_summary(study)
    assert list(summary["start_lr"]) == [c.start_lr for c in configs]
    assert list(summary["num_iter"]) == [c.num_iter for c in configs]
    assert list(summary["narrowed"]) == [False, False, False, True, True]
    assert list(summary["placement"]) == ["offset"] * 5
    assert list(summary["anchor"]) == [t.user_attrs["lrrange:anchor"] for t in study.trials]
    assert list(summary["offset"]) == [t.params[OFFSET] for t in study.trials]
    assert list(summary["chosen_lr"]) == [t.params["lr"] for t in study.trials]
    for t in study.trials:
        record_agrees_with_the_rate(t)
        assert t.user_attrs["lrrange:source"] == t.number
        # A narrowed sweep finds the full sweep's anchor to within two of its steps.
        assert abs(math.log10(t.user_attrs["lrrange:anchor"] / anchor)) <= 2 * 8 / 99

    models.clear()
    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0), narrow_sweeps=False),
        storage=f"sqlite:///{tmp_path / 'wide.db'}",
    )
    study.optimize(objective_for(sweep_fn), n_trials=5)
    assert [m.configs[0] for m in models] == [full] * 5


# ------------------------------------------------------------------ clipping and reuse


def test_a_rate_above_where_its_configuration_diverged_is_bisected(tmp_path: Path) -> None:
    # Small models diverge above 10**0.2 x the anchor, large ones only above 10**0.8; the
    # sweep's anchor is the same for both, so the offset alone cannot tell them apart.
    a = anchor_of(100.0)

    def objective(trial: optuna.Trial) -> float:
        size = trial.suggest_categorical("size", ["small", "large"])
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        if math.log10(lr / a) > (0.2 if size == "small" else 0.8):
            return math.nan  # diverged: the trial fails
        return math.log10(lr / a) ** 2

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0)), storage=storage(tmp_path)
    )
    plan = [("small", -0.5), ("small", 0.0), ("small", 0.5), ("large", 0.5), ("small", 0.6)]
    for size, offset in [*plan, ("small", 0.9)]:
        study.enqueue_trial({"size": size, OFFSET: offset})
    study.optimize(objective, n_trials=6)
    t = study.trials
    lr = [u.params["lr"] for u in t]
    assert [u.state for u in t] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.COMPLETE,
    ]
    # The large model is not held back by the small one's divergence.
    assert t[3].user_attrs["lrrange:reason"] is None
    assert lr[3] == _placement.place(t[3].user_attrs["lrrange:anchor"], 0.5, LOW, HIGH)
    # Trial 4 asked for +0.6: the small model's rates are bisected (in log space) between
    # trial 1's (good) and trial 2's (failed); that fails too, so trial 5, asking for +0.9,
    # is placed between trial 1's and trial 4's.
    for u, good, edge in [(t[4], lr[1], lr[2]), (t[5], lr[1], lr[4])]:
        reason = u.user_attrs["lrrange:reason"]
        note = reason.split("; ")[-1]  # after "settled: ..." once the small sweeps agree
        assert note.startswith("rate_capped: ") and "in the trials with size='small'" in note
        assert math.isclose(u.params["lr"], math.sqrt(good * edge), rel_tol=1e-9)
        assert u.user_attrs["lrrange:band_used"] == pytest.approx([good, edge], rel=1e-12)
        assert u.user_attrs["lrrange:offset"] == u.params[OFFSET]  # what the sampler drew
    assert [u.params[OFFSET] for u in t] == [-0.5, 0.0, 0.5, 0.5, 0.6, 0.9]


def test_a_rate_outside_the_range_is_clipped_and_says_so(tmp_path: Path) -> None:
    anchor = anchor_of(100.0)
    high = anchor * 10**-0.5  # every offset above -0.5 lands above the range

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        trial.suggest_float("lr", LOW, high, log=True)
        return 0.0  # no result is worse than another: no divergence cap

    study = optuna.create_study(
        sampler=offset_sampler(RandomSampler(seed=0)), storage=storage(tmp_path)
    )
    study.optimize(objective, n_trials=8)
    clipped = 0
    for t in study.trials:
        offset, reason = t.user_attrs["lrrange:offset"], t.user_attrs["lrrange:reason"]
        placed_from = t.user_attrs["lrrange:anchor"]  # narrowed sweeps move it a little
        assert t.params["lr"] == _placement.place(placed_from, offset, LOW, high)
        if placed_from * 10**offset > high:
            clipped += 1
            assert t.params["lr"] == high and "clipped: anchor" in reason
        else:
            assert reason is None or (reason.startswith("settled") and "clipped" not in reason)
    assert 0 < clipped < 8


def test_an_anchor_beyond_reach_of_the_range_is_moved_and_says_so(tmp_path: Path) -> None:
    # The drop point lies near 1e-3; the objective asks for rates in [1e-8, 1e-6]. Placed
    # from the drop point, every draw of the prior would clip to 1e-6 and the rate could
    # not be tuned; the anchor moves down until the prior fits under 1e-6.
    anchor = anchor_of(100.0)
    low, high = 1e-8, 1e-6
    assert anchor * 10 ** _placement.PRIOR_OFFSETS[0] > 10 * high

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        return math.log10(trial.suggest_float("lr", low, high, log=True))

    study = optuna.create_study(
        sampler=offset_sampler(RandomSampler(seed=0)), storage=storage(tmp_path)
    )
    study.optimize(objective, n_trials=6)
    moved = high / 10 ** _placement.PRIOR_OFFSETS[1]
    rates = set()
    for t in study.trials:
        attrs = t.user_attrs
        assert attrs["lrrange:source"] == t.number
        assert math.isclose(attrs["lrrange:anchor"], moved)
        assert attrs["lrrange:reason"].startswith("anchor_moved")
        placed = _placement.place(attrs["lrrange:anchor"], attrs["lrrange:offset"], low, high)
        assert t.params["lr"] == placed
        (sweep,) = ol.get_sweeps(t)
        assert sweep.info["anchor"] == attrs["lrrange:anchor"]
        assert sweep.info["reason"] == attrs["lrrange:reason"]
        rates.add(t.params["lr"])
    assert len(rates) == 6  # tuned, not pinned to the edge
    # Moved anchors are not drop points: later sweeps are not narrowed around them.
    assert not any(s.info["narrowed"] for t in study.trials for s in ol.get_sweeps(t))
    assert ol.sweeps_summary(study)["anchor"].notna().all()


def test_trials_with_the_same_parameters_stop_sweeping_once_their_sweeps_agree(
    tmp_path: Path,
) -> None:
    toys = {1: Toy(100.0), 2: Toy(10.0)}  # two drop points a decade apart

    def objective(trial: optuna.Trial) -> float:
        b = trial.suggest_categorical("b", [1, 2])
        ol.attach(trial, sweep_fn=toys[b].sweep)
        return math.log10(trial.suggest_float("lr", LOW, HIGH, log=True)) ** 2

    study = optuna.create_study(
        sampler=offset_sampler(RandomSampler(seed=0)), storage=storage(tmp_path)
    )
    study.optimize(objective, n_trials=24)
    for b, toy in toys.items():
        trials = [t for t in study.trials if t.params["b"] == b]
        swept = [t for t in trials if t.user_attrs["lrrange:source"] == t.number]
        settled = [t for t in trials if t not in swept]
        # Three sweeps settle the configuration; then one trial in four sweeps.
        assert swept[:3] == trials[:3]
        assert len(swept) == len(toy.configs) == len(trials) - len(settled)
        assert len(trials) / 4 <= len(swept) <= 3 + (len(trials) - 3) / 4 + 1
        for t in settled:
            reason = t.user_attrs["lrrange:reason"]
            assert reason.startswith("settled") and ol.get_sweeps(t) == []
            earlier = [s.user_attrs["lrrange:anchor"] for s in swept if s.number < t.number]
            assert math.isclose(
                t.user_attrs["lrrange:anchor"], _placement.settled_anchor(earlier, 0) or math.nan
            )
            assert t.params["lr"] == _placement.place(
                t.user_attrs["lrrange:anchor"], t.params[OFFSET], LOW, HIGH
            )
        # Each configuration's own anchor, never the other's.
        anchors = {round(math.log10(t.user_attrs["lrrange:anchor"])) for t in trials}
        assert anchors == {round(math.log10(anchor_of(toy.a)))}


def test_narrow_sweeps_false_sweeps_every_trial(tmp_path: Path) -> None:
    toy = Toy(100.0)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=toy.sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study = optuna.create_study(
        sampler=offset_sampler(RandomSampler(seed=0), narrow_sweeps=False),
        storage=storage(tmp_path),
    )
    study.optimize(objective, n_trials=8)
    assert len(toy.configs) == 8
    assert all(t.user_attrs["lrrange:source"] == t.number for t in study.trials)


def test_sweep_every_reuses_the_newest_anchor(tmp_path: Path) -> None:
    models: list[Toy] = []

    def sweep_fn(trial: optuna.Trial) -> Callable[[RangeTestConfig], Sweep]:
        models.append(Toy(10.0 ** (trial.number % 3 + 1)))
        return models[-1].sweep

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0), sweep_every=2), storage=storage(tmp_path)
    )
    study.optimize(objective_for(sweep_fn), n_trials=4)
    assert [len(m.configs) for m in models] == [1, 0, 1, 0]
    sources = [t.user_attrs["lrrange:source"] for t in study.trials]
    assert sources == [0, 0, 2, 2]
    anchors = [t.user_attrs["lrrange:anchor"] for t in study.trials]
    assert anchors == [anchor_of(10.0)] * 2 + [anchor_of(1000.0)] * 2
    for t in study.trials:
        record_agrees_with_the_rate(t)


def test_sweep_every_reuses_a_sweep_whose_placement_is_not_yet_stored(tmp_path: Path) -> None:
    # Another worker can read a trial between its sweep record and its placement
    # attributes (`lrrange:anchor`, `lrrange:source`): the anchor comes from the sweep.
    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0), sweep_every=2), storage=storage(tmp_path)
    )
    objective = objective_for()
    first = study.ask()
    objective(first)
    for key in ("lrrange:anchor", "lrrange:source"):  # as they are before they are written
        first.set_user_attr(key, None)
    second = study.ask()
    study.tell(second, objective(second))
    reused = study.trials[1]
    assert reused.user_attrs["lrrange:source"] == 0, reused.user_attrs["lrrange:reason"]
    assert reused.user_attrs["lrrange:anchor"] == anchor_of(100.0)
    assert ol.get_sweeps(reused) == []


def test_sweep_every_counts_a_sweep_that_gave_no_anchor(tmp_path: Path) -> None:
    calls: list[int] = []

    def sweep_fn(trial: optuna.Trial) -> Callable[[RangeTestConfig], Sweep]:
        def sweep(config: RangeTestConfig) -> Sweep:
            calls.append(trial.number)
            if trial.number == 0:
                return Toy(100.0).sweep(config)
            return run_range_test(lambda lr: 1.0, config)  # never descends: no anchor

        return sweep

    study = optuna.create_study(
        sampler=offset_sampler(TPESampler(seed=0), sweep_every=2), storage=storage(tmp_path)
    )
    study.optimize(objective_for(sweep_fn), n_trials=4)
    assert calls == [0, 2]  # trial 3 reuses trial 2's sweep, which ran but gave no anchor
    attrs = [t.user_attrs for t in study.trials]
    assert [a["lrrange:source"] for a in attrs] == [0, 0, None, None]
    assert [a["lrrange:anchor"] for a in attrs] == [anchor_of(100.0)] * 4  # 2, 3: the median
    assert attrs[2]["lrrange:reason"].startswith("no_anchor: no_band: never_descends; placed")
    assert attrs[3]["lrrange:reason"].startswith("no_anchor: trial 2's sweep; placed from")
    for t in study.trials:
        record_agrees_with_the_rate(t)


def test_resweep_on_params_true_does_not_compare_the_offset(tmp_path: Path) -> None:
    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_int("width", 1, 2)
        ol.attach(trial, sweep_fn=Toy(10.0**width).sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    sampler = offset_sampler(TPESampler(seed=0), sweep_every=10, resweep_on_params=True)
    study = optuna.create_study(sampler=sampler, storage=storage(tmp_path))
    for width in (1, 1, 2, 1, 2):
        study.enqueue_trial({"width": width})
    study.optimize(objective, n_trials=5)
    assert len({t.params[OFFSET] for t in study.trials}) == 5  # the offsets all differ
    assert [t.user_attrs["lrrange:source"] for t in study.trials] == [0, 0, 2, 0, 2]
    for t in study.trials:
        assert t.user_attrs["lrrange:anchor"] == anchor_of(10.0 ** t.params["width"])
        record_agrees_with_the_rate(t)


def test_a_grid_sampler_must_grid_the_offset_and_then_its_points_are_used(
    tmp_path: Path,
) -> None:
    for grid in ({"lr": [1e-3]}, {"x": [0.0]}, {OFFSET: [0.0], "lr": [1e-3]}):
        with pytest.raises(ValueError, match=r"grid must hold `lr:offset` and not `lr`.*over \["):
            offset_sampler(optuna.samplers.GridSampler(grid))
    offsets = [-1.0, -0.5, 0.0]
    study = optuna.create_study(
        sampler=offset_sampler(optuna.samplers.GridSampler({OFFSET: offsets}, seed=0)),
        storage=storage(tmp_path),
    )

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=Toy(100.0).sweep)
        return trial.suggest_float("lr", LOW, HIGH, log=True)

    study.optimize(objective, n_trials=5)  # the grid stops the study once it is done
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert sorted(t.params[OFFSET] for t in study.trials) == offsets
    for t in study.trials:
        record_agrees_with_the_rate(t)


def test_the_placement_is_checked_and_offset_is_the_default() -> None:
    with pytest.raises(ValueError, match="`placement` must be one of"):
        ol.LRRangeSampler(placement="middle")
    assert ol.LRRangeSampler().placement == "offset"
    assert ol.LRRangeSampler(placement="band").placement == "band"
