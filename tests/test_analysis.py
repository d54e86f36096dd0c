"""sweeps_dataframe and sweeps_summary over real storages, against the records written."""

from __future__ import annotations

from dataclasses import replace
import json
import math
import sys
import warnings

import numpy as np
import optuna
import pytest

import optuna_lrrange as ol
from optuna_lrrange import RangeTestConfig, Suggestion, Sweep, run_range_test
from optuna_lrrange._records import RecordWarning, write_sweep
from optuna_lrrange.analysis import STEP_COLUMNS, SUMMARY_COLUMNS

optuna.logging.set_verbosity(optuna.logging.WARNING)

STORAGES = ("inmemory", "sqlite", "journal")


def open_storage(kind: str, tmp_path) -> optuna.storages.BaseStorage | None:
    """A fresh storage of ``kind`` under ``tmp_path`` (None: in memory)."""
    if kind == "inmemory":
        return optuna.storages.InMemoryStorage()
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    return optuna.storages.JournalStorage(backend)


def make_sweep(best: float, *, seed: int = 0, num_iter: int = 100, info=None) -> Sweep:
    """A range test on a simulated model whose best rate is about ``best``."""
    rng = np.random.default_rng(seed)
    state = {"loss": 2.3}

    def step(lr: float) -> float:
        r = lr / best
        if r > 20:
            state["loss"] *= 1.0 + 3.0 * math.log10(r / 20 + 1)
        else:
            state["loss"] = max(0.2, state["loss"] * (1 - 0.08 * min(r, 1.0)))
        return state["loss"] * (1 + 0.01 * rng.standard_normal())

    sweep = run_range_test(step, start_lr=1e-6, end_lr=10.0, num_iter=num_iter)
    return replace(sweep, info=dict(info or {}))


def record(study: optuna.Study, trial_id: int, number: int, sweep: Sweep, **info) -> Suggestion:
    """Writes ``sweep`` on a trial as the sampler would; returns its suggestion."""
    sweep = replace(
        sweep, info={"kind": "trial", "trial_number": number, "trial_id": trial_id, **info}
    )
    suggestion = sweep.suggest()
    write_sweep(study._storage, trial_id, sweep, suggestion)
    return suggestion


def make_study(storage=None, *, n_trials: int = 3, reestimate: bool = True, extra=None) -> tuple:
    """A study whose trials carry sweeps; returns ``(study, {number: [(sweep, suggestion)]})``.

    Trial 0 also has a re-estimation at step 200, epoch 2; the last trial is left failed.
    ``extra`` maps a trial number to raw text stored as its next ``lrrange:sweep:<i>``.
    """
    extra = extra or {}
    study = optuna.create_study(storage=storage, study_name="s")
    written: dict[int, list[tuple[Sweep, Suggestion]]] = {}
    for i in range(n_trials):
        trial = study.ask()
        best = 10.0 ** (-4 + i)
        sweep = make_sweep(best, seed=i, num_iter=60 + 10 * i)
        suggestion = record(study, trial._trial_id, trial.number, sweep)
        written[trial.number] = [(sweep, suggestion)]
        trial.suggest_float("lr", 1e-5, 1.0, log=True)
        trial.suggest_int("width", 8, 64)
        if reestimate and i == 0:
            again = make_sweep(best / 3, seed=10, num_iter=40)
            info = {"kind": "reestimate", "step": 200, "epoch": 2, "chosen_lr": best / 10}
            sug = record(study, trial._trial_id, trial.number, again, **info)
            written[trial.number].append((again, sug))
        if trial.number in extra:
            key = f"lrrange:sweep:{len(written[trial.number])}"
            study._storage.set_trial_user_attr(trial._trial_id, key, extra[trial.number])
        if i == n_trials - 1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, 0.5 + i)
    return study, written


def expected_rows(written) -> int:
    return sum(len(s) for pairs in written.values() for s, _ in pairs)


@pytest.mark.parametrize("kind", STORAGES)
def test_dataframe_holds_every_step_of_every_sweep(kind, tmp_path):
    storage = open_storage(kind, tmp_path)
    _, written = make_study(storage)
    study = optuna.load_study(study_name="s", storage=storage)  # read back from storage
    df = ol.sweeps_dataframe(study)

    assert list(df.columns) == [
        "number",
        "state",
        "value",
        "params_lr",
        "params_width",
        *STEP_COLUMNS,
    ]
    assert len(df) == expected_rows(written)
    for number, pairs in written.items():
        for index, (sweep, _) in enumerate(pairs):
            part = df[(df["number"] == number) & (df["sweep"] == index)]
            np.testing.assert_array_equal(part["iteration"], np.arange(len(sweep)))
            np.testing.assert_array_equal(part["lr"], sweep.lrs)
            np.testing.assert_array_equal(part["loss"], sweep.losses)
            np.testing.assert_allclose(part["smoothed_loss"], sweep.smoothed_losses())
            np.testing.assert_allclose(part["loss_change"], sweep.loss_change(20))
            assert part["loss_change"].iloc[:20].isna().all()
    trial0 = df[df["number"] == 0]
    assert set(trial0["sweep"]) == {0, 1}
    first, again = trial0[trial0["sweep"] == 0], trial0[trial0["sweep"] == 1]
    assert set(first["kind"]) == {"trial"} and first["step"].isna().all()
    assert set(again["kind"]) == {"reestimate"}
    assert set(again["step"]) == {200.0} and set(again["epoch"]) == {2.0}
    assert set(df.loc[df["number"] == 1, "value"]) == {1.5}
    failed = df[df["number"] == 2]
    assert set(failed["state"]) == {"FAIL"} and failed["value"].isna().all()
    params = study.trials[1].params
    assert set(df.loc[df["number"] == 1, "params_lr"]) == {params["lr"]}
    assert df["params_width"].dtype.kind == "i"
    assert df["lr"].dtype == np.float64 and df["number"].dtype == np.int64


def test_dataframe_sma_is_the_loss_change_window():
    study, written = make_study(None, n_trials=1, reestimate=False)
    df = ol.sweeps_dataframe(study, sma=5)
    sweep = written[0][0][0]
    np.testing.assert_allclose(df["loss_change"], sweep.loss_change(5))
    assert df["loss_change"].iloc[:5].isna().all() and not math.isnan(df["loss_change"].iloc[5])


@pytest.mark.parametrize("kind", STORAGES)
def test_summary_has_one_row_per_sweep(kind, tmp_path):
    storage = open_storage(kind, tmp_path)
    _, written = make_study(storage)
    study = optuna.load_study(study_name="s", storage=storage)
    summary = ol.sweeps_summary(study)

    assert list(summary.columns) == [
        "number",
        "state",
        "value",
        "params_lr",
        "params_width",
        *SUMMARY_COLUMNS,
    ]
    assert len(summary) == sum(len(p) for p in written.values())
    for row in summary.itertuples():
        sweep, suggestion = written[row.number][row.sweep]
        assert row.suggestion_lr == pytest.approx(suggestion.lr)
        assert (row.band_low, row.band_high) == pytest.approx(suggestion.band)
        assert row.method == suggestion.method == ol.core.DEFAULT_METHOD
        assert row.stop_reason == sweep.stop_reason
        assert row.n_steps == len(sweep)
        assert row.final_lr == sweep.lrs[-1]
        assert row.min_loss == pytest.approx(min(sweep.losses))
        assert (row.start_lr, row.end_lr, row.mode) == (1e-6, 10.0, "exp")
        assert row.num_iter == sweep.config.num_iter
        assert row.diverge_factor == 4.0
    again = summary[(summary["number"] == 0) & (summary["sweep"] == 1)].iloc[0]
    assert again["kind"] == "reestimate" and again["step"] == 200 and again["epoch"] == 2
    assert again["chosen_lr"] == pytest.approx(1e-4 / 10)


def test_summary_keeps_the_reason_of_a_sweep_without_band():
    study = optuna.create_study()
    trial = study.ask()
    flat = Sweep(
        lrs=np.geomspace(1e-6, 1, 30),
        losses=[2.3] * 30,
        stop_reason="completed",
        config=RangeTestConfig(num_iter=30),
    )
    suggestion = record(study, trial._trial_id, trial.number, flat)
    assert suggestion.band is None
    row = ol.sweeps_summary(study).iloc[0]
    assert row["reason"] == "never_descends"
    assert math.isnan(row["band_low"]) and math.isnan(row["suggestion_lr"])
    assert row["num_iter"] == 30 and row["stop_reason"] == "completed"


def test_multi_objective_values_are_named_like_trials_dataframe():
    study = optuna.create_study(directions=["minimize", "maximize"])
    trial = study.ask()
    record(study, trial._trial_id, trial.number, make_sweep(1e-3))
    study.tell(trial, [1.0, 2.0])
    df = ol.sweeps_dataframe(study)
    assert {"values_0", "values_1"} <= set(df.columns) and "value" not in df.columns
    assert set(df["values_0"]) == {1.0} and set(df["values_1"]) == {2.0}
    assert {"values_0", "values_1"} <= set(study.trials_dataframe().columns)

    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["loss", "accuracy"])
    summary = ol.sweeps_summary(study)
    assert summary.loc[0, "values_accuracy"] == 2.0
    assert "values_accuracy" in study.trials_dataframe().columns


def test_corrupted_records_are_skipped_with_a_warning(tmp_path):
    storage = open_storage("sqlite", tmp_path)
    bad = json.dumps({"schema": 1, "lrs": [1.0], "losses": "oops"})
    study, written = make_study(storage, reestimate=False, extra={0: bad, 1: "{not json"})

    results = []
    for frame in (ol.sweeps_dataframe, ol.sweeps_summary):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append(frame(study))
        messages = sorted(str(w.message) for w in caught if w.category is RecordWarning)
        assert len(messages) == 2 and len(caught) == 2
        assert messages[0].startswith("trial 0: skipped user attribute 'lrrange:sweep:1'")
        assert messages[1].startswith("trial 1: skipped user attribute 'lrrange:sweep:1'")
    df, summary = results
    assert len(df) == expected_rows(written)
    assert list(summary["number"]) == [0, 1, 2]


def test_a_record_of_a_newer_schema_warns_and_skips_that_trial():
    newer = json.dumps({"schema": 99})
    study, written = make_study(None, reestimate=False, extra={0: newer})
    with pytest.warns(RecordWarning, match="upgrade optuna-lrrange"):
        df = ol.sweeps_dataframe(study)
    assert set(df["number"]) == {1, 2}


def retry_of(study: optuna.Study, number: int) -> optuna.Trial:
    """Optuna's own retry of trial ``number``: created by its retry callback (holding the
    attempt's parameters and user attributes), then started."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=2)(study, study.trials[number])
    return study.ask()


def test_records_inherited_by_a_retried_trial_are_not_counted_twice():
    study, written = make_study(None, n_trials=1, reestimate=False)
    dead = written[0][0][0]
    retry = retry_of(study, 0)
    assert retry.number == 1 and "lrrange:sweep:0" in retry.user_attrs  # inherited
    own = make_sweep(1e-3, seed=5, num_iter=50)
    sweep = replace(own, info={"kind": "trial", "trial_number": retry.number})
    write_sweep(study._storage, retry._trial_id, sweep, sweep.suggest())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = ol.sweeps_dataframe(study)
    assert len(df[df["number"] == retry.number]) == len(sweep)
    assert len(df) == len(dead) + len(sweep)
    assert ol.get_sweeps(study.trials[1]) == [sweep]
    assert ol.get_sweeps(study.trials[1], inherited=True) == [dead, sweep]
    everything = ol.sweeps_summary(study, inherited=True)
    assert list(everything.loc[everything["number"] == retry.number, "n_steps"]) == [
        len(dead),
        len(sweep),
    ]
    # A retry of the retry inherits both; neither is counted again.
    again = retry_of(study, 1)
    assert again.user_attrs.keys() >= {"lrrange:sweep:0", "lrrange:sweep:1"}
    study.tell(again, 1.0)
    assert ol.get_sweeps(study.trials[2]) == []
    assert len(ol.sweeps_dataframe(study)) == len(dead) + len(sweep)


@pytest.mark.parametrize("kind", STORAGES)
def test_sweeps_of_trials_merged_from_another_study_are_counted(kind, tmp_path):
    source, written = make_study(None)
    # The target already holds trials, so the merged trials get new numbers.
    target = optuna.create_study(storage=open_storage(kind, tmp_path), study_name="merged")
    own_steps = 0
    for _ in range(2):
        trial = target.ask()
        sweep = make_sweep(1e-2, seed=7)
        record(target, trial._trial_id, trial.number, sweep)
        target.tell(trial, 0.0)
        own_steps += len(sweep)

    target.add_trials(source.trials)
    merged = target.trials[2:]
    assert [t.number for t in merged] == [2, 3, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for copy, number in zip(merged, written, strict=True):
            assert ol.get_sweeps(copy) == ol.get_sweeps(source.trials[number])
            assert [s for s, _ in written[number]] == ol.get_sweeps(copy)
        summary = ol.sweeps_summary(target)
        frame = ol.sweeps_dataframe(target)
    expected = ol.sweeps_summary(source)
    rows = summary[summary["number"] >= 2].reset_index(drop=True)
    assert list(rows["number"]) == [n + 2 for n in expected["number"]]
    assert list(rows["n_steps"]) == list(expected["n_steps"])
    assert len(frame) == own_steps + len(ol.sweeps_dataframe(source))


def test_a_merged_retry_still_counts_each_sweep_once():
    source, written = make_study(None, n_trials=1, reestimate=False)
    dead = written[0][0][0]
    retry = retry_of(source, 0)
    own = replace(make_sweep(1e-3, seed=5, num_iter=50), info={"trial_number": retry.number})
    write_sweep(source._storage, retry._trial_id, own, own.suggest())
    source.tell(retry, 1.0)

    target = optuna.create_study()
    target.enqueue_trial({})
    target.optimize(lambda t: 0.0, n_trials=1)
    target.add_trials(source.trials)
    copy_of_dead, copy_of_retry = target.trials[1:]
    assert ol.get_sweeps(copy_of_dead) == [dead]
    assert ol.get_sweeps(copy_of_retry) == [own]
    assert ol.get_sweeps(copy_of_retry, inherited=True) == [dead, own]
    assert list(ol.sweeps_summary(target)["n_steps"]) == [len(dead), len(own)]


def test_a_retry_merged_without_its_failed_attempt_warns_for_the_sweep_left_out():
    source, written = make_study(None, n_trials=1, reestimate=False)
    dead = written[0][0][0]
    retry = retry_of(source, 0)
    source.tell(retry, 1.0)
    target = optuna.create_study()
    target.add_trials([t for t in source.trials if t.state.name == "COMPLETE"])
    (copy,) = target.trials
    assert ol.get_sweeps(copy) == [] and ol.get_sweeps(copy, inherited=True) == [dead]
    message = r"trial 0: left out user attribute 'lrrange:sweep:0', a sweep inherited"
    for frame in (ol.sweeps_summary, ol.sweeps_dataframe):
        with pytest.warns(RecordWarning, match=message):
            assert frame(target).empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(ol.sweeps_summary(target, inherited=True)["n_steps"]) == [len(dead)]


def test_a_study_without_sweeps_gives_empty_frames_with_the_columns():
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    df, summary = ol.sweeps_dataframe(study), ol.sweeps_summary(study)
    assert df.empty and summary.empty
    assert set(STEP_COLUMNS) <= set(df.columns)
    assert set(SUMMARY_COLUMNS) <= set(summary.columns)


def test_frames_merge_with_trials_dataframe_on_number():
    study, _ = make_study(None)
    merged = ol.sweeps_summary(study).merge(
        study.trials_dataframe(attrs=("number", "duration")), on="number"
    )
    assert len(merged) == 4 and "duration" in merged.columns


def test_wrong_arguments_raise():
    study, _ = make_study(None, n_trials=1)
    with pytest.raises(TypeError, match="`study` must be an optuna.Study"):
        ol.sweeps_dataframe(study.trials)
    with pytest.raises(ValueError, match="`sma >= 1` must hold"):
        ol.sweeps_dataframe(study, sma=0)


def test_missing_pandas_names_the_extra(monkeypatch):
    import optuna_lrrange.analysis as analysis

    study, _ = make_study(None, n_trials=1)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"optuna-lrrange\[pandas\]"):
        analysis.sweeps_dataframe(study)
