"""One rank of the distributed range-test checks: ``python tests/_ddp_worker.py RANK WORLD DIR``.

The ranks meet through a file store in DIR (gloo, CPU, a 60 s timeout on every collective)
and each writes what it saw to ``DIR/rank-RANK.json``; ``tests/test_ddp.py`` compares the
ranks. In order, on one process group:

- ``sweep``: a range test on a DDP model (BatchNorm, dropout, momentum SGD) whose loss
  function records each rank's local losses; the model, optimizer and RNG states before and
  after; 3 training steps after the sweep, and on a twin model without one.
- ``halves``: the same sweep on a model without BatchNorm or dropout, each rank on its
  1/WORLD of every batch, and (rank 0) on one process with the whole batches.
- ``accumulation``: two batches per step under ``no_sync`` (checked against a plain run).
- ``raises`` / ``dry``: the last rank's step raises at step 5 (a plain model with
  ``process_group``), or its loader (3 batches on the first pass, none after) runs dry (a
  DDP model); every rank's error and whether its state came back.
- ``study``: 4 trials (the first enqueued with a fixed rate, ``sweep_fixed=True``; in the
  last, the last rank's loader runs dry in the sweep) of an ``LRRangeSampler`` study in
  SQLite on rank 0 with a ``TorchDistributedTrial`` on every rank; the rate each rank got,
  and the rates an ``LRReestimator`` with the ``TorchDistributedTrial`` chose at steps 3
  and 6.
- ``plateau``: an ``LRReestimator(on_plateau=1)`` given a validation loss that got worse
  on rank 0 and better on the others.
- ``ddp_raises``: the last rank's DDP step raises at step 4 and its process ends; every
  rank's error and whether its state came back.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
import random
import sys
import time

import numpy as np
import optuna
from optuna_integration import TorchDistributedTrial
import torch
from torch import nn
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import optuna_lrrange
from optuna_lrrange.pytorch import RankFailedError, range_test
from optuna_lrrange.reestimate import LRReestimator

torch.set_num_threads(1)
GLOBAL_BATCH = 48  # divisible by 1, 2 and 3 ranks
N_BATCHES = 40
SWEEP = {"start_lr": 1e-3, "end_lr": 50.0, "num_iter": 60}


def data(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 4, generator=g)
    batches = []
    for _ in range(N_BATCHES):
        x = torch.randn(GLOBAL_BATCH, 20, generator=g)
        batches.append((x, (x @ w).argmax(1)))
    return batches


def shard(batches, rank: int, world: int):
    n = GLOBAL_BATCH // world
    return [(x[rank * n : (rank + 1) * n], y[rank * n : (rank + 1) * n]) for x, y in batches]


def build(norm: bool) -> nn.Module:
    torch.manual_seed(0)
    if norm:
        return nn.Sequential(
            nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4)
        )
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 4))


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "opt": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "np_rng": np.random.get_state()[1].copy(),
        "py_rng": random.getstate(),
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class Recorder:
    """A cross-entropy loss that records its local values, and raises or exits on request."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.raise_at: int | None = None
        self.exit_at: int | None = None

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = len(self.losses)
        if n == self.raise_at:
            raise ValueError(f"bad batch at call {n}")
        if n == self.exit_at:
            os._exit(0)
        loss = F.cross_entropy(out, y)
        self.losses.append(loss.item())
        return loss


class OnePass:
    """A re-iterable loader whose first pass holds ``batches`` and every later pass none: it
    runs dry when the sweep needs a second pass."""

    def __init__(self, batches) -> None:
        self.batches, self.passes = batches, 0

    def __iter__(self):
        self.passes += 1
        return iter(self.batches if self.passes == 1 else ())


def train(model, optimizer, batches, steps: int) -> None:
    for x, y in batches[:steps]:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def sweep_record(sweep) -> dict:
    suggestion = sweep.suggest()
    return {
        "lrs": list(sweep.lrs),
        "losses": list(sweep.losses),
        "stop_reason": sweep.stop_reason,
        "suggested": suggestion.lr,
        "band": suggestion.band,
    }


def error_case(rank: int, world: int, batches, fail: str) -> dict:
    """``raises``: a plain model's step raises on the last rank (a step without collectives
    of its own); ``dry``: the last rank's loader runs dry under DDP."""
    model = build(True) if fail == "raises" else DDP(build(True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, optimizer, batches, 2)
    before = snapshot(model, optimizer)
    loss_fn = Recorder()
    loader = batches
    if rank == world - 1:
        if fail == "raises":
            loss_fn.raise_at = 5
        else:
            loader = OnePass(batches[:3])  # one pass of 3 batches, then nothing
    try:
        range_test(model, optimizer, loss_fn, loader, process_group=dist.group.WORLD, **SWEEP)
        error = None
    except RankFailedError as e:
        error = [type(e).__name__, str(e), e.group_usable]
    return {"error": error, "restored": same(before, snapshot(model, optimizer))}


def study_case(rank: int, world: int, batches, out: Path) -> dict:
    storage = f"sqlite:///{out / 'study.db'}"
    lrs: list[float] = []
    reestimated: list[list[float]] = []

    def objective(trial: optuna.Trial | None) -> float:
        dtrial = TorchDistributedTrial(trial)
        model = DDP(build(False))
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        loader = batches
        if dtrial.number == 3 and rank == world - 1:
            loader = OnePass(batches[:3])  # this rank's loader runs dry in the sweep
        optuna_lrrange.attach(dtrial, model, optimizer, F.cross_entropy, loader)
        lr = dtrial.suggest_float("lr", 1e-3, 10.0, log=True)
        lrs.append(lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        reest = LRReestimator(
            model,
            optimizer,
            F.cross_entropy,
            batches,
            every_steps=3,
            num_iter=20,
            trial=dtrial,
            allow_increase=True,
        )
        rates = []
        for step, (x, y) in enumerate(batches[:7]):
            if reest.step(step=step) is not None:
                rates.append(reest.lr)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        reestimated.append(rates)
        return loss.item()

    if rank == 0:
        sampler = optuna_lrrange.LRRangeSampler(
            optuna.samplers.RandomSampler(seed=0),
            start_lr=1e-3,
            end_lr=50.0,
            num_iter=40,
            sweep_fixed=True,
            narrow_sweeps=False,  # every trial sweeps: trial 3's sweep must run, and fail
        )
        study = optuna.create_study(storage=storage, study_name="ddp", sampler=sampler)
        study.enqueue_trial({"lr": 0.05})  # a fixed rate: swept (in attach) only to record it
        study.optimize(objective, n_trials=4)
    else:
        for _ in range(4):
            objective(None)
    return {"lrs": lrs, "reestimated": reestimated}


def main() -> None:
    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out / 'store'}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    everything = data()
    batches = shard(everything, rank, world)
    report: dict = {}

    # sweep: identical sweeps, the mean loss, state restored, training continues as without
    random.seed(rank)
    np.random.seed(rank)
    model, twin = DDP(build(True)), DDP(build(True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(100 + rank)  # dropout differs by rank, as it does in real runs
    train(model, optimizer, batches, 2)
    before = snapshot(model, optimizer)
    loss_fn = Recorder()
    sweep = range_test(model, optimizer, loss_fn, batches, **SWEEP)
    report["sweep"] = {**sweep_record(sweep), "local_losses": loss_fn.losses}
    report["sweep"]["restored"] = same(before, snapshot(model, optimizer))
    torch.manual_seed(7)
    train(model, optimizer, batches[2:], 3)
    after_sweep = snapshot(model, optimizer)
    torch.manual_seed(100 + rank)
    train(twin, twin_optimizer, batches, 2)
    torch.manual_seed(7)
    train(twin, twin_optimizer, batches[2:], 3)
    report["sweep"]["continues"] = same(after_sweep["model"], twin.state_dict()) and same(
        after_sweep["opt"]["state"], twin_optimizer.state_dict()["state"]
    )

    # halves: the same sweep with the batch split over the ranks, and on one process (in
    # float64, so that rounding does not grow into a visible difference as the loss blows up)
    torch.set_default_dtype(torch.float64)
    everything = data()
    batches = shard(everything, rank, world)
    model = DDP(build(False))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    report["halves"] = sweep_record(
        range_test(model, optimizer, F.cross_entropy, batches, **SWEEP)
    )
    if rank == 0:
        alone = build(False)
        optimizer = torch.optim.Adam(alone.parameters(), lr=1e-3)
        one = range_test(alone, optimizer, F.cross_entropy, everything, **SWEEP)
        report["one_process"] = sweep_record(one)

    # accumulation: two batches a step with no_sync, against one process on both batches
    model = DDP(build(False))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    syncs = [0]
    model.register_comm_hook(None, _counting_hook(syncs))
    sweep = range_test(model, optimizer, F.cross_entropy, batches, accumulation_steps=2, **SWEEP)
    report["accumulation"] = {**sweep_record(sweep), "syncs": syncs[0]}
    if rank == 0:
        alone = build(False)
        optimizer = torch.optim.SGD(alone.parameters(), lr=1.0)
        one = range_test(
            alone, optimizer, F.cross_entropy, everything, accumulation_steps=2, **SWEEP
        )
        report["accumulation_one_process"] = sweep_record(one)

    torch.set_default_dtype(torch.float32)
    everything = data()
    batches = shard(everything, rank, world)

    # raises, dry: a failing rank stops every rank at the same step with a clear error
    report["raises"] = error_case(rank, world, batches, "raises")
    report["dry"] = error_case(rank, world, batches, "dry")

    # study: the sampler on rank 0, every rank in the sweep, one record per sweep
    report["study"] = study_case(rank, world, batches, out)

    # plateau: rank 0's validation loss got worse, the others' better; all decide on the mean
    model = DDP(build(False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    reest = LRReestimator(model, optimizer, F.cross_entropy, batches, on_plateau=1, num_iter=20)
    reest.step(val_loss=1.0)
    fired = reest.step(val_loss=2.0 if rank == 0 else 0.0)
    report["plateau"] = {"fired": fired is not None, "lr": reest.lr}

    # ddp_raises: the last rank's DDP step raises, and its process ends; the others must
    # not wait for the group's timeout
    (out / f"rank-{rank}.json").write_text(json.dumps(report))
    model = DDP(build(True))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(model, optimizer, batches, 2)
    before = snapshot(model, optimizer)
    loss_fn = Recorder()
    if rank == world - 1:
        loss_fn.raise_at = 4
    start = time.monotonic()
    try:
        range_test(model, optimizer, loss_fn, batches, **SWEEP)
        error = None
    except RankFailedError as e:
        error = [type(e).__name__, str(e), e.group_usable]
    except RuntimeError as e:
        error = [type(e).__name__, str(e), None]
    report["ddp_raises"] = {
        "error": error,
        "seconds": time.monotonic() - start,
        "restored": same(before, snapshot(model, optimizer)),
    }
    (out / f"rank-{rank}.json").write_text(json.dumps(report))
    os._exit(0)  # the group is out of step: skip its teardown


def _counting_hook(count: list[int]):
    def hook(state, bucket):
        count[0] += 1
        return default_hooks.allreduce_hook(dist.group.WORLD, bucket)

    return hook


if __name__ == "__main__":
    main()
