"""One trial spread over several processes: DistributedDataParallel with a range test.

The quickstart's digits MLP, trained with ``torch.nn.parallel.DistributedDataParallel`` on
2 processes (gloo, CPU; each rank trains on its half of every batch through a
``DistributedSampler``). As in Optuna's own distributed example, the study and its sampler
live on rank 0 and every rank wraps its trial in ``optuna_integration.TorchDistributedTrial``.
Every rank calls ``optuna_lrrange.attach`` and then asks for the learning rate: the
``LRRangeSampler`` on rank 0 runs the range test on all ranks together (each rank steps
its DDP model on its own shard, the loss recorded is the mean over the ranks, so every
rank stops at the same step), narrows ``lr`` to the sweep's band and samples it there;
the value reaches every rank as ``TorchDistributedTrial`` broadcasts every value. One
sweep record per trial is written, by rank 0. An ``LRReestimator`` with the same
``TorchDistributedTrial`` re-estimates the rate every 2 epochs, on all ranks together.

Run:  python examples/distributed.py [--storage sqlite:///distributed.db] [--n-trials 10]
Fast: OPTUNA_LRRANGE_FAST=1 python examples/distributed.py  (2 trials, 3 epochs)
Needs: pip install optuna-lrrange[distributed] scikit-learn
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import tempfile

import optuna
from optuna_integration import TorchDistributedTrial
from sklearn.datasets import load_digits
import torch
from torch import nn
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import optuna_lrrange
from optuna_lrrange.reestimate import LRReestimator

FAST = os.environ.get("OPTUNA_LRRANGE_FAST") == "1"
EPOCHS = 3 if FAST else 10
WORLD_SIZE = 2


def load_data() -> tuple[torch.utils.data.TensorDataset, torch.Tensor, torch.Tensor]:
    """Digits: 1,497 training and 300 validation images, standardised."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0 - 0.5, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    return torch.utils.data.TensorDataset(x[:-300], y[:-300]), x[-300:], y[-300:]


def objective(trial: optuna.trial.Trial | None) -> float:
    """Runs on every rank: ``trial`` is the study's trial on rank 0, ``None`` elsewhere."""
    dtrial = TorchDistributedTrial(trial)
    train, x_val, y_val = load_data()
    torch.manual_seed(dtrial.number)  # the same initial weights on every rank
    sampler = torch.utils.data.distributed.DistributedSampler(train, seed=dtrial.number)
    loader = torch.utils.data.DataLoader(train, batch_size=32, sampler=sampler)
    model = DDP(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    # On every rank, as in a single process: attach, then ask for the rate.
    optuna_lrrange.attach(dtrial, model, optimizer, loss_fn, loader)
    lr = dtrial.suggest_float("lr", 1e-5, 1.0, log=True)
    for group in optimizer.param_groups:
        group["lr"] = lr

    reestimator = LRReestimator(
        model, optimizer, loss_fn, loader, every_epochs=2, num_iter=20, trial=dtrial
    )
    for epoch in range(EPOCHS):
        reestimator.step(epoch=epoch)
        sampler.set_epoch(epoch)
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    with torch.no_grad():
        return float((model(x_val).argmax(1) == y_val).float().mean())


def run(rank: int, store: str, storage: str, study_name: str, n_trials: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=WORLD_SIZE,
        # A rank that dies leaves the others in a collective at most this long.
        timeout=datetime.timedelta(minutes=2),
    )
    if rank == 0:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction="maximize",
            sampler=optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=0)),
            load_if_exists=True,
        )
        study.optimize(objective, n_trials=n_trials)
        for t in study.trials:
            kinds = [s.info["kind"] for s in optuna_lrrange.get_sweeps(t)]
            print(
                f"trial {t.number}: lr {t.params['lr']:.3g}, accuracy {t.value:.3f}, "
                f"sweeps {kinds}"
            )
        print(f"best accuracy {study.best_value:.3f} at lr={study.best_params['lr']:.3g}")
    else:
        for _ in range(n_trials):
            objective(None)
    gc.collect()  # DDP models in reference cycles go while the group exists, not at exit
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///distributed.db")
    parser.add_argument("--study-name", default="distributed")
    parser.add_argument("--n-trials", type=int, default=2 if FAST else 10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(
            run,
            args=(os.path.join(tmp, "store"), args.storage, args.study_name, args.n_trials),
            nprocs=WORLD_SIZE,
        )


if __name__ == "__main__":
    main()
