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


def test_head_to_head_study_quick(tmp_path):
    run_study("-m", "studies.head_to_head.run", "--quick", "--out", str(tmp_path))
    table = (tmp_path / "results.md").read_text()
    for method in ("LR(TPE)", "TPE", "Random"):
        assert method in table


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
