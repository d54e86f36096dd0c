"""The range test inside torch.distributed data-parallel training: 2 and 3 ranks on CPU.

Each world size is one job of spawned processes (``tests/_ddp_worker.py``, gloo, a file
store, a 60 s timeout on every collective) that runs every scenario on one process group
and writes what each rank saw; the tests compare the ranks. A job is bounded by
``communicate(timeout=...)``: a rank left hanging fails the test instead of stalling it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import subprocess
import sys

import numpy as np
import optuna
import pytest

import optuna_lrrange as ol
from optuna_lrrange.core import _placement

pytest.importorskip("torch")
pytest.importorskip("optuna_integration")

WORKER = Path(__file__).with_name("_ddp_worker.py")
LIGHTNING_WORKER = Path(__file__).with_name("_ddp_lightning_worker.py")
TIMEOUT = 240  # seconds for a whole job; it takes 10-30 s


def run_job(world: int, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for rank in range(world)
    ]
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, text) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank}:\n{text[-4000:]}"
    return [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(world)]


@pytest.fixture(scope="module", params=[2, 3], ids=["2-ranks", "3-ranks"])
def job(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ddp{request.param}")
    return request.param, out, run_job(request.param, out)


def test_every_rank_gets_the_same_sweep_on_the_mean_loss(job):
    world, _, ranks = job
    first = ranks[0]["sweep"]
    assert first["stop_reason"] == "diverged" and 10 < len(first["lrs"]) < 60
    assert first["suggested"] is not None
    for report in ranks[1:]:
        for key in ("lrs", "losses", "stop_reason", "suggested", "band"):
            assert report["sweep"][key] == first[key], key
    n = len(first["losses"])
    local = np.array([r["sweep"]["local_losses"][:n] for r in ranks])
    assert all(len(r["sweep"]["local_losses"]) == n for r in ranks)  # all stopped together
    assert not np.allclose(local[0], local[1])  # the ranks' own losses differ...
    np.testing.assert_allclose(first["losses"], local.mean(0), rtol=1e-12)  # ...their mean


def test_state_restored_and_training_continues_as_without_a_sweep(job):
    _, _, ranks = job
    for report in ranks:
        assert report["sweep"]["restored"]
        assert report["sweep"]["continues"]


def test_one_process_and_split_batches_give_the_same_sweep(job):
    world, _, ranks = job
    split, alone = ranks[0]["halves"], ranks[0]["one_process"]
    assert all(r["halves"] == split for r in ranks)
    assert split["stop_reason"] == alone["stop_reason"] == "diverged"
    assert split["lrs"] == alone["lrs"]
    np.testing.assert_allclose(split["losses"], alone["losses"], rtol=1e-8)


def test_accumulation_syncs_gradients_once_per_step(job):
    _, _, ranks = job
    accumulated, alone = ranks[0]["accumulation"], ranks[0]["accumulation_one_process"]
    for report in ranks:
        # Two batches a step; DDP's all-reduce ran on the last of them only.
        assert report["accumulation"]["syncs"] == len(accumulated["lrs"])
        assert report["accumulation"]["losses"] == accumulated["losses"]
    assert accumulated["lrs"] == alone["lrs"]
    np.testing.assert_allclose(accumulated["losses"], alone["losses"], rtol=1e-6)


@pytest.mark.parametrize("case, step", [("raises", 5), ("dry", 2)])
def test_a_failing_rank_stops_every_rank_with_a_clear_error(job, case, step):
    world, _, ranks = job
    for report in ranks:
        kind, message, usable = report[case]["error"]
        assert kind == "RankFailedError" and usable
        assert f"failed at step {step} on rank {world - 1} (ValueError: " in message
        assert report[case]["restored"]


def test_a_rank_whose_ddp_step_raises_does_not_leave_the_others_waiting(job):
    world, _, ranks = job
    for rank, report in enumerate(ranks):
        kind, message, usable = report["ddp_raises"]["error"]
        assert kind == "RankFailedError" and usable is False
        assert "step 4 failed on this rank" in message
        if rank == world - 1:
            assert "(ValueError: bad batch at call 4)" in message
        else:  # the failing rank's process ended, which ended the others' wait
            assert "gloo" in message
        assert report["ddp_raises"]["restored"]


def test_study_on_rank_0_with_a_torch_distributed_trial(job):
    world, out, ranks = job
    first = ranks[0]["study"]
    assert len(first["lrs"]) == 4 and all(len(r) == 2 for r in first["reestimated"])
    for report in ranks[1:]:
        assert report["study"] == first  # the same rates, and re-estimations, everywhere
    study = optuna.load_study(study_name="ddp", storage=f"sqlite:///{out / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    for t, lr, rates in zip(trials, first["lrs"], first["reestimated"], strict=True):
        sweeps = ol.get_sweeps(t)
        assert lr == pytest.approx(t.params["lr"], rel=1e-6)  # broadcast as a float32
        assert [s.info["chosen_lr"] for s in sweeps if s.info["kind"] == "reestimate"] == rates
        if t.number == 3:  # a rank's loader ran dry: no sweep record, the median anchor
            assert [s.info["kind"] for s in sweeps] == ["reestimate", "reestimate"]
            reason = t.user_attrs["lrrange:reason"]
            assert reason.startswith(
                f"sweep_failed: RankFailedError: the range test failed at step 2 on rank "
                f"{world - 1} (ValueError: `loader` must be re-iterable"
            )
            assert "; placed from the study's median anchor " in reason
            anchor = t.user_attrs["lrrange:anchor"]
            earlier = [
                u.user_attrs["lrrange:anchor"]
                for u in trials[:3]
                if u.user_attrs["lrrange:source"] == u.number
                and u.user_attrs["lrrange:anchor"] is not None
            ]
            assert earlier and anchor == _placement.median_anchor(earlier)
            assert t.user_attrs["lrrange:band_used"] == list(
                _placement.reachable(anchor, 1e-3, 10.0)
            )
            continue
        # One record per sweep: the trial's, then one per re-estimation.
        assert [s.info["kind"] for s in sweeps] == ["trial", "reestimate", "reestimate"]
        if t.number == 0:  # the enqueued rate, swept on every rank only to be recorded
            assert t.params["lr"] == 0.05 and sweeps[0].info["reason"] == "fixed"
            assert t.user_attrs["lrrange:band_used"] is None
        else:
            low, high = t.user_attrs["lrrange:band_used"]
            assert low <= t.params["lr"] <= high


def test_reestimation_on_plateau_is_decided_on_the_mean_validation_loss(job):
    world, _, ranks = job
    # Validation losses 1 then (2, 0) or (2, 0, 0): the mean, 1 or 2/3, did not improve on
    # 2 ranks and did on 3; every rank follows the mean, not its own loss.
    assert {r["plateau"]["fired"] for r in ranks} == {world == 2}
    assert len({r["plateau"]["lr"] for r in ranks}) == 1


def test_lightning_ddp_strategy_moves_every_rank_to_the_same_rate(tmp_path):
    pytest.importorskip("lightning")
    world = 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "LOCAL_RANK": str(rank),
            "NODE_RANK": "0",
            "WORLD_SIZE": str(world),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, str(LIGHTNING_WORKER), str(rank), str(world), str(tmp_path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
    try:
        outputs = [p.communicate(timeout=TIMEOUT)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, text) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank}:\n{text[-4000:]}"
    ranks = [json.loads((tmp_path / f"lightning-{r}.json").read_text()) for r in range(world)]
    first = ranks[0]
    assert [r["epoch"] for r in first["reestimations"]] == [1, 2]
    for report in ranks[1:]:
        assert report == first  # the same sweeps and rates, and training at them, everywhere
    # Each epoch after a re-estimation trained at the rate it chose.
    assert first["epoch_lrs"][1:] == [r["lr"] for r in first["reestimations"]]
    study = optuna.load_study(study_name="lightning", storage=f"sqlite:///{tmp_path}/lightning.db")
    (trial,) = study.get_trials(deepcopy=False)
    sweeps = ol.get_sweeps(trial)
    assert [s.info["epoch"] for s in sweeps] == [1, 2]  # one record per re-estimation
    assert [list(s.losses) for s in sweeps] == [r["losses"] for r in first["reestimations"]]


def test_process_group_must_be_a_group_none_or_false():
    torch = pytest.importorskip("torch")
    from optuna_lrrange.pytorch import range_test

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.ones(4, 2), torch.ones(4, 1))]
    with pytest.raises(TypeError, match="`process_group` must be a torch.distributed"):
        range_test(model, optimizer, torch.nn.functional.mse_loss, batches, process_group=1)
    # False, and None for a model that is not DDP: this process sweeps alone.
    for group in (False, None):
        sweep = range_test(
            model, optimizer, torch.nn.functional.mse_loss, batches, process_group=group
        )
        assert len(sweep) > 0
