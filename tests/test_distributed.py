"""Several worker processes on one study, over every storage Optuna offers for it.

SQLite, PostgreSQL and MySQL (RDB; MariaDB here), the journal file, the Redis journal and
the gRPC storage proxy: 4 workers x 25 trials each. Every trial completes once, every
trial's sweep record is intact and readable by every worker, ``sweep_every`` reuses bands
written by other workers, and ``sweeps_dataframe`` sees every sweep exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _servers import BACKENDS, open_storage, storage_spec
import optuna
import pytest

import optuna_lrrange
from optuna_lrrange._records import SWEEP_PREFIX, decode

WORKER = os.path.join(os.path.dirname(__file__), "_worker.py")
N_WORKERS, N_TRIALS = 4, 25


def run_workers(spec: str, study_name: str, tmp_path, *extra: str) -> list[dict]:
    procs, reports = [], []
    for w in range(N_WORKERS):
        report = tmp_path / f"report-{study_name}-{w}.json"
        reports.append(report)
        cmd = [sys.executable, WORKER, spec, study_name, str(N_TRIALS), "--seed", str(w)]
        cmd += ["--worker-id", str(w), "--report", str(report)]
        cmd += ["--expect", str(N_WORKERS * N_TRIALS), *extra]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out.decode()[-3000:]
    return [json.loads(r.read_text()) for r in reports]


@pytest.mark.parametrize("backend", BACKENDS)
def test_workers_share_one_study_on_every_storage(backend, tmp_path):
    with storage_spec(backend, tmp_path) as spec:
        name = f"distributed-{backend}-{os.getpid()}-{tmp_path.name}"
        optuna.create_study(study_name=name, storage=open_storage(spec))
        reports = run_workers(spec, name, tmp_path)

        study = optuna.load_study(study_name=name, storage=open_storage(spec))
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == N_WORKERS * N_TRIALS
        assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
        assert sorted(t.number for t in trials) == list(range(N_WORKERS * N_TRIALS))
        workers = {t.number: t.user_attrs["worker"] for t in trials}
        assert sorted(set(workers.values())) == [str(w) for w in range(N_WORKERS)]

        for t in trials:
            keys = [k for k in t.user_attrs if k.startswith(SWEEP_PREFIX)]
            assert keys == [f"{SWEEP_PREFIX}0"], (t.number, keys)
            sweep, suggestion = decode(t.user_attrs[keys[0]])
            assert sweep.info["trial_number"] == t.number
            assert len(sweep) >= 10 and suggestion is not None
            low, high = t.user_attrs["lrrange:band_used"]
            assert low <= t.params["lr"] <= high

        # Every worker read back every trial, the other workers' included, intact.
        for report in reports:
            assert {int(n) for n in report} == set(workers)
            assert all(n_sweeps == 1 for _, n_sweeps in report.values())
            assert {w for w, _ in report.values()} == set(workers.values())

        frame = optuna_lrrange.sweeps_dataframe(study)
        per_sweep = frame.groupby(["number", "sweep"]).size()
        assert len(per_sweep) == N_WORKERS * N_TRIALS
        lengths = {t.number: len(optuna_lrrange.get_sweeps(t)[0]) for t in trials}
        assert per_sweep.droplevel("sweep").to_dict() == lengths


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_sweep_every_reuses_bands_written_by_other_workers(backend, tmp_path):
    with storage_spec(backend, tmp_path) as spec:
        name = f"sweep-every-{backend}"
        optuna.create_study(study_name=name, storage=open_storage(spec))
        run_workers(spec, name, tmp_path, "--sweep-every", "5")

        study = optuna.load_study(study_name=name, storage=open_storage(spec))
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        own = [t for t in trials.values() if t.user_attrs["lrrange:source"] == t.number]
        reused = [t for t in trials.values() if t.user_attrs["lrrange:source"] != t.number]
        # Far fewer sweeps than trials: at least one in every 5 numbers, at most a few more
        # where concurrent trials could not yet see each other's records.
        assert len(trials) // 5 <= len(own) < len(trials) // 2
        assert reused
        across = 0
        for t in reused:
            source = trials[t.user_attrs["lrrange:source"]]
            assert 0 < t.number - source.number < 5 + N_WORKERS
            assert t.user_attrs["lrrange:band_used"] is not None
            assert not optuna_lrrange.get_sweeps(t)
            across += source.user_attrs["worker"] != t.user_attrs["worker"]
        assert across > 0, "no trial reused a band written by another worker"
