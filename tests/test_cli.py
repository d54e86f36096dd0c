"""The ``optuna-lrrange`` command: export, plots, clear errors, and the demo study."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import optuna
import pandas as pd
import pytest
import test_analysis as helpers

import optuna_lrrange as ol
from optuna_lrrange.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """An SQLite study named 's' with sweeps (and an empty study 'other'); its URL.

    Shared by the tests of this module, which only read it.
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'study.db'}"
    helpers.make_study(url)
    optuna.create_study(storage=url, study_name="other")
    return url


def test_sweeps_exports_the_dataframe_as_csv(stored, tmp_path, capsys):
    out = tmp_path / "out" / "sweeps.csv"
    assert main(["sweeps", "--storage", stored, "--study", "s", "-o", str(out)]) == 0
    written = pd.read_csv(out)
    expected = ol.sweeps_dataframe(optuna.load_study(study_name="s", storage=stored))
    assert list(written.columns) == list(expected.columns)
    assert len(written) == len(expected)
    pd.testing.assert_series_equal(written["lr"], expected["lr"], check_exact=False)
    assert f"wrote {len(expected)} rows" in capsys.readouterr().err


def test_sweeps_summary_to_stdout(stored, capsys):
    assert main(["sweeps", "--storage", stored, "--study", "s", "--summary", "-o", "-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("number,state,value,")
    assert len(lines) == 1 + 4  # a header and one row per sweep


def test_parquet_needs_pyarrow(stored, tmp_path, capsys):
    out = tmp_path / "sweeps.parquet"
    code = main(["sweeps", "--storage", stored, "--study", "s", "-o", str(out)])
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 2
        assert "needs pyarrow" in capsys.readouterr().err and not out.exists()
    else:  # pragma: no cover - pyarrow is not installed here
        assert code == 0 and len(pd.read_parquet(out)) > 0


@pytest.mark.parametrize("kind", ["sweep", "loss-change", "overlay", "bands"])
def test_plot_writes_each_kind(stored, tmp_path, kind):
    out = tmp_path / f"{kind}.png"
    args = ["plot", "--storage", stored, "--study", "s", "--kind", kind, "-o", str(out)]
    if kind in ("sweep", "loss-change"):
        args += ["--trial", "1"]
    assert main(args) == 0
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "sqlite:///{tmp}/missing.db", "--study", "s"], "no SQLite file at"),
        (["--storage", "nonsense", "--study", "s"], "--storage must be an RDB URL"),
        (["--storage", "foo://bar", "--study", "s"], "cannot open storage 'foo://bar'"),
        (["--storage", "journal:{tmp}/none.log", "--study", "s"], "no journal file at"),
        (["--storage", "{url}", "--study", "nope"], "the studies there: 'other', 's'."),
    ],
)
def test_user_errors_exit_2_with_a_message(stored, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, url=stored) for a in args]
    code = main(["sweeps", *args, "-o", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("optuna-lrrange: error: ") and message in err
    assert not (tmp_path / "missing.db").exists()  # a reading command creates no file


def test_plot_errors_exit_2(stored, tmp_path, capsys):
    base = ["plot", "--storage", stored, "-o", str(tmp_path / "x.png")]
    assert main([*base, "--study", "s", "--kind", "sweep", "--trial", "9"]) == 2
    assert "`trial` must be the number of a trial" in capsys.readouterr().err
    assert main([*base, "--study", "other", "--kind", "sweep"]) == 2
    assert "must hold at least one sweep record" in capsys.readouterr().err
    assert main([*base, "--study", "s", "--kind", "bands", "--trial", "1"]) == 2
    assert "--trial applies to" in capsys.readouterr().err


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "optuna_lrrange.cli",
            "sweeps",
            "--storage",
            f"sqlite:///{tmp_path}/missing.db",
            "--study",
            "s",
            "-o",
            "x.csv",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "no SQLite file" in out.stderr and "Traceback" not in out.stderr


def test_main_leaves_optuna_verbosity_as_it_was(stored, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        main(["-v", "sweeps", "--storage", stored, "--study", "s", "-o", str(tmp_path / "a")])
        assert optuna.logging.get_verbosity() == optuna.logging.ERROR
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_logger_sits_under_optunas_hierarchy():
    from optuna_lrrange import cli

    assert cli.logger.name == "optuna.lrrange"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        assert not cli.logger.isEnabledFor(optuna.logging.INFO)
        optuna.logging.set_verbosity(optuna.logging.INFO)
        assert cli.logger.isEnabledFor(optuna.logging.INFO)
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_quick_demo_runs_a_real_study_and_writes_its_plots(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("mnist1d")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "optuna_lrrange.cli",
            "demo",
            "--quick",
            "--n-trials",
            "3",
            "--no-progress",
            "--out",
            "plots",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    db = tmp_path / "studies" / "demo" / "demo.db"  # the default storage, relative to cwd
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{db}")
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 3
    for trial in complete:
        assert set(trial.params) == {"lr", "channels", "weight_decay"}
        assert len(ol.get_sweeps(trial)) == 1
    for name in ("sweep.png", "loss_change.png", "sweeps.png", "bands.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG
    text = out.stdout
    assert f"Best: trial {study.best_trial.number}, validation accuracy" in text
    assert "plots/bands.png" in text
    for trial in study.trials:
        assert f"{trial.params['lr']:.2e}" in text
