"""Sweep records written by LRRangeSampler: round trips on every storage, size, JSON only."""

from __future__ import annotations

from collections.abc import Callable
import json
import math

import optuna
from optuna.samplers import TPESampler

import optuna_lrrange as ol
from optuna_lrrange import RangeTestConfig, Sweep, run_range_test
from optuna_lrrange._records import decode, encode

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy_sweep(a: float) -> Callable[[RangeTestConfig], Sweep]:
    """A sweep of gradient descent on ``a * w**2 / 2`` with a little noise: 100 steps."""

    def sweep(config: RangeTestConfig) -> Sweep:
        w = [1.0]

        def step(lr: float) -> float:
            w[0] *= 1 - lr * a
            return 0.5 * a * w[0] ** 2 + 0.01 * (1 + math.sin(1e3 * lr))

        return run_range_test(step, config)

    return sweep


def _plain_json(value: object) -> bool:
    """Whether ``value`` is made of JSON-native Python types only."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def test_records_round_trip_on_every_storage(
    storage_url: str | None, storage_factory: Callable[[], optuna.storages.BaseStorage]
) -> None:
    live: dict[int, list[Sweep]] = {}
    study = optuna.create_study(
        study_name="records",
        storage=storage_factory(),
        sampler=ol.LRRangeSampler(TPESampler(seed=0), config=RangeTestConfig(end_lr=100.0)),
    )

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=toy_sweep(10.0**trial.number))
        lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
        live[trial.number] = ol.get_sweeps(trial)  # a live Trial reads fresh from storage
        return lr

    study.optimize(objective, n_trials=3)
    reloaded = optuna.load_study(study_name="records", storage=storage_factory())
    assert len(reloaded.trials) == 3
    for frozen in reloaded.trials:
        (sweep,) = ol.get_sweeps(frozen)
        assert live[frozen.number] == [sweep]
        assert dict(live[frozen.number][0].info) == dict(sweep.info)
        assert len(sweep) == 100 or sweep.stop_reason != "completed"
        info = sweep.info
        assert info["kind"] == "trial"
        assert (info["trial_number"], info["trial_id"]) == (frozen.number, frozen._trial_id)
        assert info["param_name"] == "lr" and (info["low"], info["high"]) == (1e-6, 1.0)
        assert info["chosen_lr"] == frozen.params["lr"]
        assert info["band_used"] == frozen.user_attrs["lrrange:band_used"]
        assert info["reason"] is None and info["seconds"] >= 0
        lo, hi = frozen.user_attrs["lrrange:band_used"]
        assert lo <= frozen.params["lr"] <= hi
        lrrange = {k: v for k, v in frozen.user_attrs.items() if k.startswith("lrrange:")}
        assert set(lrrange) == {
            "lrrange:sweep:0",
            "lrrange:schema",
            "lrrange:band",
            "lrrange:suggestion",
            "lrrange:band_used",
            "lrrange:source",
            "lrrange:reason",
        }
        assert _plain_json(lrrange)
        assert lrrange["lrrange:source"] == frozen.number


def test_a_100_step_record_fits_in_8_kb() -> None:
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0), end_lr=1e6))

    def objective(trial: optuna.Trial) -> float:
        # Never diverges inside the schedule: all 100 steps are taken and recorded.
        ol.attach(trial, sweep_fn=lambda c: run_range_test(lambda lr: 1.0 / (1.0 + lr), c))
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study.optimize(objective, n_trials=1)
    text = study.trials[0].user_attrs["lrrange:sweep:0"]
    sweep, suggestion = decode(text)
    assert len(sweep) == 100 and sweep.stop_reason == "completed"
    assert len(text) <= 8 * 1024
    assert json.loads(text)["info"]["chosen_lr"] == study.trials[0].params["lr"]
    assert encode(sweep, suggestion) == text  # decode and encode are inverse


def test_reused_and_fallback_trials_record_why(storage: optuna.storages.BaseStorage) -> None:
    study = optuna.create_study(
        storage=storage, sampler=ol.LRRangeSampler(TPESampler(seed=0), sweep_every=2)
    )

    def objective(trial: optuna.Trial) -> float:
        if trial.number != 2:  # trial 2 forgets to attach; trial 3 reuses nothing of it
            ol.attach(trial, sweep_fn=toy_sweep(100.0))
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study.optimize(objective, n_trials=4)
    attrs = [t.user_attrs for t in study.trials]
    assert [a["lrrange:source"] for a in attrs] == [0, 0, None, 3]
    assert attrs[1]["lrrange:band_used"] == attrs[0]["lrrange:band_used"]
    assert "lrrange:sweep:0" not in attrs[1] and "lrrange:band" not in attrs[1]
    assert attrs[2]["lrrange:reason"].startswith("no_probe")
    assert attrs[2]["lrrange:band_used"] == [1e-6, 1.0]
    assert [len(ol.get_sweeps(t)) for t in study.trials] == [1, 0, 0, 1]
