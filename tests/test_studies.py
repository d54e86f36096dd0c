"""Every benchmark study in ``studies/`` reruns in its quick mode, so none can rot.

The quick modes are smoke runs (tiny budgets); their numbers mean nothing and are written
to a temporary folder. Each test checks the study wrote its tables with the rows it must
have. The overhead study needs torch-lr-finder, a benchmark-only dependency, and is not
run here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_study(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_oracle_study_quick(tmp_path):
    run_study("-m", "studies.oracle.run", "--quick", "--out", str(tmp_path), "--no-plots")
    table = (tmp_path / "results.md").read_text()
    for rule in ("steepest_band", "descent_band", "valley", "minimum_div10", "sma_derivative"):
        assert rule in table


def test_head_to_head_noise_and_retrained_studies_quick(tmp_path):
    # The noise and retrained studies replay recorded studies and require every value to
    # repeat bit for bit. Training numbers differ in the last digits between CPUs and library
    # builds, so they replay studies this run recorded itself, never the committed ones.
    results = tmp_path / "results"
    run_study("-m", "studies.head_to_head.run", "--quick", "--out", str(results))
    table = (results / "results.md").read_text()
    for method in ("LR(TPE)", "TPE", "Random"):
        assert method in table
    run_study(
        "-m",
        "studies.head_to_head.run",
        "--long",
        "--seeds",
        "1",
        "--trials",
        "10",
        "--out",
        str(results / "long"),
    )
    tasks = {"digits_mlp_sgd", "breast_cancer_mlp_adamw", "mnist1d_mlp_adam"}

    run_study(
        "-m", "studies.head_to_head.noise", "--quick", "--results", str(results),
        "--out", str(tmp_path / "n"),
    )  # fmt: skip
    table = (tmp_path / "n" / "noise.md").read_text()
    for task in tasks:
        assert task in table
    noise = json.loads((tmp_path / "n" / "noise.json").read_text())
    for task in tasks:
        (config,) = noise["tasks"][task]["configs"]
        assert len(config["reseeded"]) == 2
    assert (tmp_path / "n" / "noise.png").stat().st_size > 10_000

    run_study(
        "-m", "studies.head_to_head.retrained", "--quick", "--results", str(results),
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    result = json.loads((tmp_path / "r" / "results.json").read_text())
    assert set(result["summary"]) == tasks
    assert (tmp_path / "r" / "retrained.png").stat().st_size > 10_000


def test_reestimation_study_quick(tmp_path):
    run_study("studies/reestimation/run.py", "--quick", "--out", str(tmp_path))
    written = {p.name for p in tmp_path.iterdir()}
    assert any(name.endswith(".md") for name in written), written
    results = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    assert results and json.loads(results[0].read_text())


def test_dataframe_speed_study_small(tmp_path):
    out = tmp_path / "results.md"
    run_study(
        "studies/dataframe_speed/run.py", "--trials", "20", "--repeats", "1", "--out", str(out)
    )
    assert "sweeps_dataframe" in out.read_text()


def test_ddp_overhead_study_smoke(tmp_path):
    # Two rounds on 2 gloo ranks: the ratios mean nothing, the tables must be there.
    run_study(
        "studies/ddp_overhead/run.py", "--tasks", "mlp", "--rounds", "2", "--warmup", "0",
        "--out", str(tmp_path),
    )  # fmt: skip
    result = json.loads((tmp_path / "results.json").read_text())
    assert set(result["tasks"]) == {"mlp"}
    assert {"ddp", "single"} <= set(result["tasks"]["mlp"]["ratios"]["wall"])
    assert "2 ranks, DDP" in (tmp_path / "results.md").read_text()


def test_keras_overhead_study_smoke(tmp_path):
    # A sweep and the same number of plain train_on_batch steps, two rounds.
    run_study(
        "studies/overhead/run_keras.py", "--tasks", "mlp", "--rounds", "2", "--warmup", "0",
        "--out", str(tmp_path),
    )  # fmt: skip
    result = json.loads((tmp_path / "results_keras.json").read_text())
    assert result["tasks"]["mlp"]["steps"] == {"plain": [100], "optuna_lrrange": [100]}
    assert "| mlp |" in (tmp_path / "results_keras.md").read_text()


def test_head_to_head_target_counts_reference_studies_and_censors_at_n_plus_one(monkeypatch):
    # The long run's target also counts the main run's studies: a better loss found only
    # there tightens it; a study that never reaches the target counts as n + 1 trials.
    monkeypatch.syspath_prepend(str(ROOT))
    from studies.head_to_head.run import summarise

    def study(method, values):
        trials = [
            {
                "value": v,
                "state": "COMPLETE",
                "train_steps": 10,
                "sweep_steps": 5,
                "sweep_seconds": 0.0,
                "diverged": False,
                "reason": None,
            }
            for v in values
        ]
        return {"task": "t", "method": method, "seed": 0, "wall_seconds": 1.0, "trials": trials}

    studies = [study("LR(TPE)", [3.0, 1.2, 1.0]), study("TPE", [3.0, 2.0, 1.04])]
    alone = summarise(studies, ["t"], 3)["t"]
    assert alone["best"] == 1.0
    assert alone["methods"]["LR(TPE)"]["trials_to_target"] == [3]
    assert alone["methods"]["TPE"]["trials_to_target"] == [3]
    assert alone["methods"]["LR(TPE)"]["steps_to_target"] == [45]
    tighter = summarise(studies, ["t"], 3, reference=[study("Random", [0.98])])["t"]
    assert tighter["best"] == 0.98 and abs(tighter["target"] - 0.98 * 1.05) < 1e-12
    assert tighter["methods"]["LR(TPE)"]["trials_to_target"] == [3]  # 1.0 <= 1.029
    assert tighter["methods"]["TPE"]["trials_to_target"] == [4]  # 1.04 > 1.029: n + 1
    assert "Random" not in tighter["methods"]  # reference studies are not reported


def test_oracle_draw_in_reads_the_grid_curve_across_the_band(monkeypatch):
    # A flat stretch at the best scores 1 with every rate near-optimal; a stretch at twice
    # the best scores 2 with none; rates above the grid score the worst value (not the last one).
    monkeypatch.syspath_prepend(str(ROOT))
    import numpy as np

    from studies.oracle.run import draw_in

    grid = list(np.logspace(-5, 0, 6))
    curve = [2.0, 2.0, 1.0, 1.0, 4.0, 3.0]
    assert draw_in(grid, curve, grid[2], grid[3]) == pytest.approx((1.0, 1.0))
    assert draw_in(grid, curve, grid[0], grid[1]) == pytest.approx((2.0, 0.0))
    assert draw_in(grid, curve, grid[-1] * 10, grid[-1] * 100) == pytest.approx((4.0, 0.0))
    # Three rates: 2x, 1x and 1x the best.
    assert draw_in(grid, curve, grid[1], grid[3], n=3) == pytest.approx((2 ** (1 / 3), 2 / 3))


def test_noise_study_replays_a_recorded_trial_and_retrains_it_under_other_seeds(monkeypatch):
    # The noise study recovers a trial's hyperparameters by replaying its study; a replay
    # that does not give the recorded value must stop the study, not be reported.
    monkeypatch.syspath_prepend(str(ROOT))
    from studies.head_to_head.noise import best_trials, replay, retrain
    from studies.head_to_head.run import run_study as run_one

    task = "breast_cancer_mlp_adamw"
    recorded = run_one((task, "LR(TPE)", 0, 3))
    t = recorded["trials"][2]
    trial = {"method": "LR(TPE)", "seed": 0, "number": 2, "value": t["value"], "lr": t["lr"]}
    params = replay(task, trial)
    assert params["lr"] == t["lr"] and set(params) == {"width", "dropout", "weight_decay", "lr"}
    # Outside the study, with the trial's own seed: the same value (its sweep changed nothing).
    assert retrain(task, params, 0, 2) == (t["value"], t["diverged"])
    assert retrain(task, params, 1000, 0)[0] != t["value"]
    with pytest.raises(RuntimeError, match="must give the recorded value"):
        replay(task, {**trial, "value": t["value"] + 1.0})

    # best_trials: distinct values, best first; a long study repeats its short one's trials.
    short = {**recorded, "trials": recorded["trials"][:2]}
    ranked = best_trials([recorded, short], task, 5)
    values = sorted(x["value"] for x in recorded["trials"])
    assert [r["value"] for r in ranked] == values
    assert best_trials([recorded], "digits_mlp_sgd", 5) == []


def test_head_to_head_marks_a_median_that_involves_a_study_never_reaching_the_target(
    monkeypatch,
):
    # 10 seeds: the median averages the 5th and 6th studies; with 5 reached, the 6th never
    # did and counts as n + 1, so the median is a lower bound.
    monkeypatch.syspath_prepend(str(ROOT))
    from studies.head_to_head.run import _fmt_hits

    m = {"median_trials_to_target": 134.5, "median_steps_to_target": 38052.0, "reached": 5}
    assert _fmt_hits(m, 10, 150) == (">= 134.5", ">= 38,052")
    assert _fmt_hits({**m, "reached": 6}, 10, 150) == ("134.5", "38,052")
    assert _fmt_hits({**m, "reached": 4}, 10, 150) == (">150 (n.r.)", ">= 38,052")


def test_retrained_incumbents_and_the_target_on_configuration_losses(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from studies.head_to_head.retrained import incumbents, summarise

    # The incumbent after n trials: the first trial with the lowest value so far; failed
    # trials (None) never count, and a checkpoint before any completed trial has none.
    assert incumbents([None, 3.0, 2.0, 2.0, None, 1.0], (1, 2, 3, 4, 5, 6)) == {
        2: 1,
        3: 2,
        4: 2,
        5: 2,
        6: 5,
    }

    def record(method, seed, losses):
        # One incumbent per checkpoint (trial numbers 0, 1, 2), with these configuration losses.
        return {
            "task": "t",
            "method": method,
            "seed": seed,
            "incumbent_at": {"10": 0, "20": 1, "30": 2},
            "configs": {str(i): {"config_loss": v} for i, v in enumerate(losses)},
        }

    records = [
        record("LR(TPE)", 0, [1.2, 1.0, 1.0]),
        record("LR(TPE)", 1, [1.04, 1.04, 1.04]),
        record("TPE", 0, [2.0, 1.5, 1.05]),
        record("TPE", 1, [2.0, 2.0, 1.9]),
    ]
    s = summarise(records, (10, 20, 30))["t"]
    assert s["best_config_loss"] == 1.0 and s["target"] == pytest.approx(1.05)
    assert s["methods"]["LR(TPE)"]["first_checkpoint_within_target"] == [20, 10]
    assert s["methods"]["TPE"]["first_checkpoint_within_target"] == [30, 31]  # never: 31
    assert s["methods"]["TPE"]["reached"] == 1
    assert s["lower_in"] == [2, 2, 2] and s["higher_in"] == [0, 0, 0]
    assert s["methods"]["LR(TPE)"]["median"] == pytest.approx([1.12, 1.02, 1.02])


def test_table_study_quick(tmp_path):
    # The table study's smoke run: its own small tables, studies of every non-GP method on
    # two tasks in both cases, the point-suggestion table; the rows must all be there.
    run_study("-m", "studies.tables.run", "--quick", "--out", str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())
    tasks = list(result["config"]["tasks"])
    assert len(tasks) == 2
    for case in ("two", "lr"):
        block = result["summary"][case]
        assert list(block["tasks"]) == tasks
        for rows in block["tasks"].values():
            assert {"TPE", "LR(TPE) band", "Random", "LR(Random) band"} <= set(rows)
            for m in rows.values():
                assert m["studies"] == 2
                assert 1 <= m["median_trials"] <= m["n_trials"] + 1
        assert block["ratios"]["LR(TPE) band"]["vs"] == "TPE"
        assert block["ratios"]["LR(TPE) band"]["tasks"] == 2
    suggestions = result["suggestions"]["design"]
    assert suggestions["n"] == 2 * 3  # two tasks x three settings x one pool sweep
    assert set(suggestions["summary"]) >= {"default", "minimum_div10", "fastai_minimum_div10"}
    table = (tmp_path / "results.md").read_text()
    assert "LR(TPE) band" in table and "False declines" in table
    assert (tmp_path / "trials_to_target.png").stat().st_size > 10_000
    # Every study stops at its first trial within the target and counts the steps up to it;
    # the narrowed ones ran the sampler's range test (recorded sweep steps).
    for line in (tmp_path / "studies.jsonl").read_text().splitlines():
        s = json.loads(line)
        hits = [i for i, t in enumerate(s["trials"]) if t["config_loss"] <= s["target"]]
        assert s["reached"] == bool(hits)
        if hits:
            assert hits == [len(s["trials"]) - 1] and s["trials_to_target"] == len(s["trials"])
        else:
            assert s["trials_to_target"] == s["n_trials"] + 1
        upto = s["trials"][: s["trials_to_target"]]
        assert s["steps_to_target"] == sum(t["train_steps"] + t["sweep_steps"] for t in upto)
        narrowed = s["method"].startswith("LR(")
        assert (s["sweep_steps"] > 0) == narrowed


def test_table_study_reads_the_table_between_grid_points_and_counts_steps_to_target(
    monkeypatch,
):
    # Linear in log10(rate) between grid points; a study's steps to target count training
    # and sweep steps up to and including the first trial within 5% of the best.
    monkeypatch.syspath_prepend(str(ROOT))
    import math

    import numpy as np

    from studies.tables.run import fastai_minimum_div10, interp, summarise

    grid = [1e-3, 1e-2, 1e-1]
    assert interp(grid, [3.0, 1.0, 2.0], 10**-1.5) == pytest.approx(1.5)
    assert interp(grid, [3.0, 1.0, 2.0], 1e-2) == pytest.approx(1.0)
    assert interp(grid, [3.0, 1.0, 2.0], 1.0) == pytest.approx(2.0)  # clipped at the edge

    # fastai's minimum/10: the smoothed loss falls from step 30, is lowest at step 59 (the
    # last before it rises), and a non-finite loss at step 80 ends what is read.
    lrs = list(np.logspace(-5, 1, 100))
    losses = [1.0] * 30 + [0.0] * 30 + [5.0] * 20 + [math.nan] + [0.0] * 19
    assert fastai_minimum_div10(lrs, losses) == pytest.approx(lrs[59] / 10)

    def study(method, trials_to_target, reached=True):
        return {
            "task": "t",
            "case": "two",
            "method": method,
            "seed": 0,
            "n_trials": 10,
            "reached": reached,
            "trials_to_target": trials_to_target,
            "steps_to_target": 100 * trials_to_target,
            "sweep_steps_to_target": 0,
            "sweep_steps": 0,
            "trials": [{}] * trials_to_target,
        }

    studies = [study("TPE", 8), study("LR(TPE) band", 2)]
    studies += [{**study("TPE", 4), "task": "u"}, {**study("LR(TPE) band", 8), "task": "u"}]
    summary = summarise(studies, ["t", "u"], roles={"t": "design", "u": "held_out"})["two"]
    assert summary["tasks"]["t"]["TPE"]["median_trials"] == 8
    ratio = summary["ratios"]["LR(TPE) band"]  # 2/8 and 8/4: geometric mean sqrt(1/2)
    assert ratio["trial_ratio_geomean"] == pytest.approx(math.sqrt(0.5))
    assert ratio["tasks_later_than_base"] == 1
    design = summary["by_role"]["design"]["ratios"]["LR(TPE) band"]
    held_out = summary["by_role"]["held_out"]["ratios"]["LR(TPE) band"]
    assert design["trial_ratio_geomean"] == pytest.approx(0.25)
    assert held_out["trial_ratio_geomean"] == pytest.approx(2.0)


def test_table_ceiling_moves_each_sweep_onto_its_settings_best_rate(monkeypatch, tmp_path):
    # The ceiling's sweeps are the pool's, rates multiplied by one factor: losses untouched,
    # and the drop points land where the prior's middle falls on the setting's best
    # seed-mean rate (the setting's median drop point; each sweep's own in mode "sweep").
    monkeypatch.syspath_prepend(str(ROOT))
    import math

    import numpy as np

    from optuna_lrrange.core import RangeTestConfig, _placement
    from studies.tables.ceiling import MovedPool, SweepMovedPool, best_rate
    from studies.tables.tables import GRID, POOL_SEEDS, TABLE_SEEDS, Tables

    tables = Tables(ROOT / "studies" / "tables" / "results" / "tables.json")
    task, setting = "digits_mlp_sgd_batch", 8
    mean = tables.curves(task, setting, GRID, TABLE_SEEDS).mean(axis=0)
    best = best_rate(tables, task, setting)
    assert best == GRID[int(np.argmin(mean))] and best < 0.05  # batch 8 trains best low
    target = math.log10(best) - float(np.mean(_placement.PRIOR_OFFSETS))
    for pool_cls in (MovedPool, SweepMovedPool):
        pool = pool_cls(tables, task)
        drops = []
        for seed in POOL_SEEDS:
            raw = tables.sweep(task, setting, seed)
            moved = pool.sweep(setting, seed, RangeTestConfig())
            factors = np.asarray(moved.lrs) / np.asarray(raw["lrs"])
            assert np.allclose(factors, factors[0])
            assert [x if math.isfinite(x) else None for x in moved.losses] == raw["losses"]
            drops.append(math.log10(_placement.anchor(moved.lrs, moved.losses)[0]))
        if pool_cls is SweepMovedPool:
            assert drops == pytest.approx([target] * len(drops))
        else:
            assert float(np.median(drops)) == pytest.approx(target)
            assert max(drops) - min(drops) > 0.1  # the scatter is kept

    # The what-if prior: the interval's width around the package prior's middle.
    from studies.tables.ceiling import set_prior

    saved = (_placement.prior_interval.__defaults__, _placement.in_reach.__defaults__)
    try:
        assert set_prior(0.5) == pytest.approx((-0.65, -0.15))
        assert _placement.prior_interval(None) == pytest.approx((-0.65, -0.15))
    finally:
        _placement.prior_interval.__defaults__, _placement.in_reach.__defaults__ = saved
    assert _placement.prior_interval(None) == _placement.PRIOR_OFFSETS

    # A smoke run on one task: the offset methods in every mode, against the recorded bases.
    task = "cancer_mlp_plain_sgd_batch"  # one whose moved sweeps change the study
    run_study(
        "-m", "studies.tables.ceiling", "--seeds", "1", "--trials", "10",
        "--tasks", task, "--out", str(tmp_path), "--modes", "setting,sweep,none",
    )  # fmt: skip
    result = json.loads((tmp_path / "ceiling.json").read_text())
    assert len(result["studies"]) == 6
    modes = ("", " [setting]", " [sweep]", " [none]")
    assert set(result["summary"]["ratios"]) == {
        f"LR({b}) offset{v}" for b in ("TPE", "GP") for v in modes
    }
    assert "LR(TPE) offset [none]" in (tmp_path / "ceiling.md").read_text()
    # Mode "none" is the table study's own placement: the same study, run here directly.
    from studies.tables.run import run_study as table_study

    tables_path = str(ROOT / "studies" / "tables" / "results" / "tables.json")
    direct = table_study((task, "two", "LR(TPE) offset", 0, 10, tables_path, False))
    (none,) = [
        r for r in result["studies"] if r["mode"] == "none" and r["method"] == "LR(TPE) offset"
    ]
    assert (none["trials_to_target"], none["steps_to_target"]) == (
        direct["trials_to_target"],
        direct["steps_to_target"],
    )
