"""Every script in examples/ runs in its fast mode and leaves what it promises in storage."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
import re
import subprocess
import sys

import optuna
import pytest

import optuna_lrrange as ol

pytest.importorskip("torch")
pytest.importorskip("sklearn")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    # One torch thread per process: on a loaded machine more only oversubscribe (3x slower).
    env = {
        **os.environ,
        "OPTUNA_LRRANGE_FAST": "1",
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, f"{name} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def complete_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(states=[optuna.trial.TrialState.COMPLETE])


def test_quickstart(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    text = run_example("quickstart.py", "--storage", url, cwd=tmp_path)
    trials = complete_trials(url, "quickstart")
    assert len(trials) == 3
    for t in trials:
        sweeps = ol.get_sweeps(t)
        assert len(sweeps) == 1 and sweeps[0].info["kind"] == "trial"
        band = t.user_attrs["lrrange:band"]
        if band is not None and 1e-5 <= band[0] and band[1] <= 1.0:
            assert band[0] <= t.params["lr"] <= band[1]  # sampled inside the band
        assert f"trial {t.number}: band" in text
    assert text.startswith("best accuracy ")


def test_multi_param(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    text = run_example("multi_param.py", "--storage", url, cwd=tmp_path)
    trials = complete_trials(url, "multi_param")
    assert len(trials) == 4
    names = {"optimizer", "width", "depth", "dropout", "weight_decay", "batch_size", "lr"}
    names.add("lr:offset")  # the rate's offset from its sweep's anchor, sampled jointly
    for t in trials:
        assert set(t.params) == names
        assert len(ol.get_sweeps(t)) == 1
    assert "best accuracy" in text


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_parallel_workers(tmp_path, storage):
    url = f"sqlite:///{tmp_path / 'p.db'}" if storage == "sqlite" else f"journal:{tmp_path}/p.log"
    text = run_example("parallel_workers.py", "--storage", url, cwd=tmp_path)
    lines = [line for line in text.splitlines() if line.startswith("worker ")]
    pids = {line.split("pid ")[1].split(")")[0] for line in lines}
    assert len(lines) == 2 and len(pids) == 2  # two separate processes
    assert "4 complete trials, 4 with a recorded sweep" in text
    if storage == "sqlite":
        trials = complete_trials(url, "parallel_workers")
        assert len(trials) == 4 and all(ol.get_sweeps(t) for t in trials)


def test_analyse_study_on_a_stored_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    run_example("quickstart.py", "--storage", url, cwd=tmp_path)
    csv = tmp_path / "summary.csv"
    text = run_example(
        "analyse_study.py",
        "--storage",
        url,
        "--study",
        "quickstart",
        "--csv",
        str(csv),
        cwd=tmp_path,
    )
    assert text.startswith("3 sweeps (")
    assert "first sweep of each trial, best first:" in text
    import pandas as pd

    table = pd.read_csv(csv)
    assert sorted(table["number"]) == [0, 1, 2]
    inside = table.dropna(subset=["position_in_band"])["position_in_band"]
    assert ((inside >= -1e-9) & (inside <= 1 + 1e-9)).all()


def test_analyse_study_runs_its_own_study(tmp_path):
    text = run_example("analyse_study.py", cwd=tmp_path)
    # Four trials of one configuration (the rate alone): the first three sweeps agree, so
    # the fourth is placed from them without a sweep of its own.
    assert re.match(r"3 sweeps \(\d+ steps\) in 3 trials\n", text), text[:200]


def test_reestimate(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    text = run_example("reestimate.py", "--storage", url, cwd=tmp_path)
    trials = complete_trials(url, "reestimate")
    assert len(trials) == 2
    for t in trials:
        kinds = [s.info["kind"] for s in ol.get_sweeps(t)]
        assert kinds == ["trial", "reestimate"]  # 4 epochs, every 2: one at epoch 2
        assert ol.get_sweeps(t)[1].info["epoch"] == 2
    assert "best accuracy" in text


def test_distributed(tmp_path):
    pytest.importorskip("optuna_integration")
    url = f"sqlite:///{tmp_path / 'd.db'}"
    text = run_example("distributed.py", "--storage", url, cwd=tmp_path)
    trials = complete_trials(url, "distributed")
    assert len(trials) == 2
    for t in trials:
        sweeps = ol.get_sweeps(t)
        # One record per sweep, written by rank 0: the trial's, and the epoch-2 re-estimation.
        assert [s.info["kind"] for s in sweeps] == ["trial", "reestimate"]
        low, high = t.user_attrs["lrrange:band_used"]
        assert low <= t.params["lr"] <= high
        assert f"trial {t.number}: lr " in text
    assert "best accuracy" in text


def test_keras_quickstart(tmp_path):
    # Not imported here: the example picks its backend before it imports Keras.
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    url = f"sqlite:///{tmp_path / 'k.db'}"
    text = run_example("keras_quickstart.py", "--storage", url, cwd=tmp_path)
    trials = complete_trials(url, "keras_quickstart")
    assert len(trials) == 3
    for t in trials:
        kinds = [s.info["kind"] for s in ol.get_sweeps(t)]
        assert kinds == ["trial", "reestimate"]  # 2 epochs, every epoch: one at epoch 1
        assert ol.get_sweeps(t)[1].info["epoch"] == 1
        low, high = t.user_attrs["lrrange:band_used"]
        assert low <= t.params["lr"] <= high
        assert f"trial {t.number}: band" in text
    assert text.startswith("best accuracy ")
