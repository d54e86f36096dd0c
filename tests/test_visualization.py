"""The plots' data objects against the records written; one smoke render per plot."""

from __future__ import annotations

from dataclasses import replace
import subprocess
import sys

import numpy as np
import optuna
import pytest
import test_analysis as helpers

import optuna_lrrange as ol
from optuna_lrrange import Suggestion
from optuna_lrrange._records import write_sweep
from optuna_lrrange.visualization import (
    get_bands_plot_info,
    get_loss_change_plot_info,
    get_sweep_plot_info,
    get_sweeps_plot_info,
)

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study_and_records():
    return helpers.make_study(None)


# --------------------------------------------------------------------------- plot_sweep


def test_sweep_info_of_a_bare_sweep_uses_the_default_rule():
    sweep = helpers.make_sweep(1e-3)
    info = get_sweep_plot_info(sweep)
    expected = sweep.suggest()
    assert info.lrs == sweep.lrs and info.losses == sweep.losses
    np.testing.assert_allclose(info.smoothed, sweep.smoothed_losses())
    assert (info.suggestion_lr, info.band, info.method) == (
        expected.lr,
        expected.band,
        ol.core.DEFAULT_METHOD,
    )
    assert info.stop_reason == sweep.stop_reason == "diverged"
    assert info.chosen_lr is None
    # The y range shows the descent and cuts off the divergence tail.
    low, high = info.y_lim
    assert low < min(sweep.losses) and high < max(sweep.losses)
    assert get_sweep_plot_info(sweep, method="valley").method == "valley"


def test_sweep_info_of_a_study_shows_the_recorded_suggestion():
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    sweep = replace(helpers.make_sweep(1e-3), info={"kind": "trial", "trial_number": 0})
    recorded = Suggestion(lr=1.23e-4, band=(1e-5, 1e-3), method="steepest_band")
    write_sweep(study._storage, trial._trial_id, sweep, recorded)
    study.tell(trial, 1.0)

    info = get_sweep_plot_info(study, trial=0)
    assert (info.suggestion_lr, info.band) == (1.23e-4, (1e-5, 1e-3))
    assert info.title == "Trial 0, sweep 0 (trial)"
    # Asking for a rule recomputes from the raw data.
    assert get_sweep_plot_info(study, trial=0, method="steepest").method == "steepest"


def test_sweep_info_picks_the_best_trial_and_the_index(study_and_records):
    study, written = study_and_records
    assert study.best_trial.number == 0  # values 0.5, 1.5; trial 2 failed
    info = get_sweep_plot_info(study)
    assert info.lrs == written[0][0][0].lrs
    last = get_sweep_plot_info(study, index=-1)
    assert last.lrs == written[0][1][0].lrs
    assert last.title == "Trial 0 (best), sweep 1 (reestimate) at step 200"
    # The rate the trial went on with: the sampled parameter, then the re-estimate's.
    assert info.chosen_lr == study.trials[0].params["lr"]
    assert last.chosen_lr == pytest.approx(1e-5)
    frozen = study.trials[1]
    assert get_sweep_plot_info(frozen).lrs == written[1][0][0].lrs


def test_sweep_info_errors_name_what_is_wrong(study_and_records):
    study, _ = study_and_records
    with pytest.raises(ValueError, match="`trial` must be the number of a trial"):
        get_sweep_plot_info(study, trial=7)
    with pytest.raises(ValueError, match=r"`-2 <= index < 2` must hold for trial 0"):
        get_sweep_plot_info(study, trial=0, index=2)
    empty = optuna.create_study()
    with pytest.raises(ValueError, match="must hold at least one sweep record"):
        get_sweep_plot_info(empty)
    with pytest.raises(TypeError, match="`source` must be a Sweep"):
        get_sweep_plot_info([1, 2])


# --------------------------------------------------------------------------- loss change


def test_loss_change_info_is_the_skipped_sma_curve_and_its_minimum():
    sweep = helpers.make_sweep(1e-3)
    n = len(sweep)
    info = get_loss_change_plot_info(sweep, sma=5, n_skip_start=10, n_skip_end=3)
    expected = sweep.loss_change(5)[10 : n - 3]
    np.testing.assert_allclose(info.loss_change, expected)
    assert info.lrs == sweep.lrs[10 : n - 3]
    i = int(np.nanargmin(expected))
    assert (info.min_lr, info.min_value) == (sweep.lrs[10 + i], pytest.approx(expected[i]))
    assert info.min_value < 0
    assert info.band == sweep.suggest().band
    no_end = get_loss_change_plot_info(sweep, n_skip_start=0, n_skip_end=0)
    assert len(no_end.lrs) == n


def test_loss_change_options_are_checked():
    sweep = helpers.make_sweep(1e-3, num_iter=30)
    with pytest.raises(ValueError, match="`sma >= 1` must hold"):
        get_loss_change_plot_info(sweep, sma=0)
    with pytest.raises(ValueError, match="`n_skip_start \\+ n_skip_end < len\\(sweep\\)`"):
        get_loss_change_plot_info(sweep, n_skip_start=20, n_skip_end=len(sweep))
    with pytest.raises(ValueError, match="`y_lim\\[0\\] < y_lim\\[1\\]` must hold"):
        get_loss_change_plot_info(sweep, y_lim=(1.0, -1.0))


# --------------------------------------------------------------------------- overlay


def test_overlay_orders_worst_first_and_places_the_sampled_rate_on_its_curve(
    study_and_records,
):
    study, written = study_and_records
    info = get_sweeps_plot_info(study)
    # Minimised: the failed trial (no value) first, then 1.5, then the best (0.5) last.
    assert [line.number for line in info.lines] == [2, 1, 0]
    assert [line.value for line in info.lines] == [None, 1.5, 0.5]
    assert not info.reverse_colors
    for line in info.lines:
        sweep, suggestion = written[line.number][0]  # the first sweep only
        assert line.lrs == sweep.lrs and line.band == suggestion.band
        lr = study.trials[line.number].params["lr"]
        assert line.chosen_lr == lr
        if sweep.lrs[0] <= lr <= sweep.lrs[-1]:
            smoothed = sweep.smoothed_losses()
            expected = np.interp(np.log10(lr), np.log10(sweep.lrs), smoothed)
            assert line.chosen_loss == pytest.approx(expected)
        else:
            assert line.chosen_loss is None


def test_overlay_of_a_maximised_study_puts_the_highest_last():
    study = optuna.create_study(direction="maximize")
    for value in (0.9, 0.2, 0.5):
        trial = study.ask()
        helpers.record(study, trial._trial_id, trial.number, helpers.make_sweep(1e-3))
        trial.suggest_float("lr", 1e-5, 1, log=True)
        study.tell(trial, value)
    info = get_sweeps_plot_info(study, target_name="accuracy")
    assert [line.value for line in info.lines] == [0.2, 0.5, 0.9]
    assert info.reverse_colors and info.target_name == "accuracy"


def test_overlay_of_a_multi_objective_study_needs_a_target():
    study = optuna.create_study(directions=["minimize", "minimize"])
    trial = study.ask()
    helpers.record(study, trial._trial_id, trial.number, helpers.make_sweep(1e-3))
    study.tell(trial, [1.0, 3.0])
    with pytest.raises(ValueError, match="`target` must be given"):
        get_sweeps_plot_info(study)
    info = get_sweeps_plot_info(study, target=lambda t: t.values[1])
    assert info.lines[0].value == 3.0


# --------------------------------------------------------------------------- bands


def test_bands_info_has_one_entry_per_sweep(study_and_records):
    study, written = study_and_records
    info = get_bands_plot_info(study)
    assert [(e.number, e.sweep, e.kind) for e in info.entries] == [
        (0, 0, "trial"),
        (0, 1, "reestimate"),
        (1, 0, "trial"),
        (2, 0, "trial"),
    ]
    first, again = info.entries[0], info.entries[1]
    assert first.x == 0 and 0 < again.x < 1
    assert first.chosen_lr == study.trials[0].params["lr"]
    assert again.chosen_lr == pytest.approx(1e-5)  # info["chosen_lr"]
    for entry in info.entries:
        assert entry.band == written[entry.number][entry.sweep][1].band
    assert info.search_range == (1e-5, 1.0)
    assert info.best_number == 0 and info.param_name == "lr"
    assert all(e.anchor is None for e in info.entries)  # the band placement records none


def test_bands_info_shows_the_anchor_of_the_offset_placement(tmp_path):
    def objective(trial):
        def sweep_fn(config):
            return ol.run_range_test(lambda lr: 1.0 / (1.0 + 1e3 * lr), config)

        ol.attach(trial, sweep_fn=sweep_fn)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study = optuna.create_study(
        sampler=ol.LRRangeSampler(optuna.samplers.TPESampler(seed=0), placement="offset"),
        storage=f"sqlite:///{tmp_path / 'study.db'}",
    )
    study.optimize(objective, n_trials=2)
    info = get_bands_plot_info(study)
    for entry, trial in zip(info.entries, study.trials, strict=True):
        assert entry.anchor == trial.user_attrs["lrrange:anchor"] is not None
        assert entry.chosen_lr == trial.params["lr"]
    ax = ol.plot_bands(study, ax=Figure().subplots())
    assert "anchor (rate = anchor x 10**offset)" in _texts(ax)


# --------------------------------------------------------------------------- drawing


def _texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_each_plot_draws_on_the_given_axes_and_changes_no_global_style(study_and_records):
    study, _ = study_and_records
    before = dict(matplotlib.rcParams)
    fig = Figure()
    axes = fig.subplots(2, 2).ravel()
    assert ol.plot_sweep(study, ax=axes[0]) is axes[0]
    assert ol.plot_loss_change(study, y_lim=(-2.0, 1.0), ax=axes[1]) is axes[1]
    assert ol.plot_sweeps(study, ax=axes[2]) is axes[2]
    assert ol.plot_bands(study, ax=axes[3]) is axes[3]
    assert dict(matplotlib.rcParams) == before

    assert axes[0].get_xscale() == "log" and axes[0].get_xlabel().startswith("learning rate")
    labels = _texts(axes[0])
    assert labels[:2] == ["raw loss", "smoothed loss (EMA)"]
    assert any(t.startswith("band [") for t in labels)
    assert any(t.startswith("suggestion ") for t in labels)
    assert axes[1].get_ylim() == (-2.0, 1.0)
    assert any(t.startswith("steepest descent at lr=") for t in _texts(axes[1]))
    assert any(t.startswith("band [") for t in _texts(axes[1]))
    assert len(fig.axes) == 5  # the overlay's colour bar
    assert fig.axes[-1].get_ylabel() == "Objective Value"
    assert axes[3].get_yscale() == "log" and axes[3].get_xlabel() == "trial number"
    assert "best trial (0)" in _texts(axes[3])


def test_without_axes_a_pyplot_free_figure_is_made(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(helpers.__file__.rsplit("/", 1)[0])!r})
import test_analysis as helpers
import optuna_lrrange as ol
study, _ = helpers.make_study(None)
for i, plot in enumerate([ol.plot_sweep, ol.plot_loss_change, ol.plot_sweeps, ol.plot_bands]):
    ax = plot(study)
    ax.figure.savefig({str(tmp_path)!r} + f"/{{i}}.png")
print("pyplot" if "matplotlib.pyplot" in sys.modules else "no pyplot")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "no pyplot"
    for i in range(4):
        assert (tmp_path / f"{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"optuna-lrrange\[plots\]"):
        ol.plot_sweep(helpers.make_sweep(1e-3))


def test_a_sweep_without_band_draws_without_band_or_line():
    flat = helpers.make_sweep(1e-3, num_iter=30)
    flat = replace(flat, losses=tuple(2.3 for _ in flat.lrs), stop_reason="completed")
    info = get_sweep_plot_info(flat)
    assert info.band is None and info.suggestion_lr is None
    assert info.reason == "never_descends"
    ax = ol.plot_sweep(flat)
    assert _texts(ax) == ["raw loss", "smoothed loss (EMA)"]
    assert "no band: never_descends" in ax.get_title()
