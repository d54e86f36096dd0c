"""Several worker processes on one study, through one SQLite file or journal file.

Optuna's storages are the engine: each worker is an ordinary process (on this machine or
another one) that loads the study and calls ``optimize``. Every sweep is stored on its
trial, so any worker, and any later session, reads every other worker's sweeps back.

Run:  python examples/parallel_workers.py [--storage sqlite:///parallel.db | journal:parallel.log]
                                          [--workers 4] [--trials-per-worker 5]
Fast: OPTUNA_LRRANGE_FAST=1 python examples/parallel_workers.py

For PostgreSQL, pass its URL (``postgresql+psycopg2://user@host/db``) and start the workers
on as many machines as you like with ``--worker``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import optuna
from sklearn.datasets import load_digits
import torch
from torch import nn

import optuna_lrrange

FAST = os.environ.get("OPTUNA_LRRANGE_FAST") == "1"
EPOCHS = 1 if FAST else 8
STUDY = "parallel_workers"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL, or ``journal:PATH`` for a journal file (no database server needed)."""
    if url.startswith("journal:"):
        backend = optuna.storages.journal.JournalFileBackend(url[len("journal:") :])
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(url)


def objective(trial: optuna.trial.Trial) -> float:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0 - 0.5, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    train = torch.utils.data.TensorDataset(x[:-300], y[:-300])
    width = trial.suggest_int("width", 32, 256, log=True)
    torch.manual_seed(trial.number)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    optuna_lrrange.attach(trial, model, optimizer, loss_fn, loader)
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    for group in optimizer.param_groups:
        group["lr"] = lr
    for _ in range(EPOCHS):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    with torch.no_grad():
        return float((model(x[-300:]).argmax(1) == y[-300:]).float().mean())


def worker(storage_url: str, n_trials: int, seed: int) -> None:
    """One worker: load the study, run trials, say which."""
    torch.set_num_threads(1)  # the workers share the machine's cores
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=STUDY,
        storage=open_storage(storage_url),
        sampler=optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=seed)),
    )
    numbers = []
    study.optimize(objective, n_trials=n_trials, callbacks=[lambda s, t: numbers.append(t.number)])
    print(f"worker {seed} (pid {os.getpid()}) ran trials {numbers}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite:///parallel_workers.db")
    parser.add_argument("--workers", type=int, default=2 if FAST else 4)
    parser.add_argument("--trials-per-worker", type=int, default=2 if FAST else 5)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker is not None:
        worker(args.storage, args.trials_per_worker, args.worker)
        return

    # Create the study once, before the workers start, so that they do not race to it.
    optuna.create_study(
        storage=open_storage(args.storage),
        study_name=STUDY,
        direction="maximize",
        load_if_exists=True,
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--storage",
                args.storage,
                "--trials-per-worker",
                str(args.trials_per_worker),
                "--worker",
                str(i),
            ]
        )
        for i in range(args.workers)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a worker failed: exit codes {codes}")

    # Any process reads every worker's sweeps back from the storage.
    study = optuna.load_study(study_name=STUDY, storage=open_storage(args.storage))
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    with_sweeps = [t for t in complete if optuna_lrrange.get_sweeps(t)]
    print(f"{len(complete)} complete trials, {len(with_sweeps)} with a recorded sweep")
    print(f"best accuracy {study.best_value:.3f} with {study.best_params}")


if __name__ == "__main__":
    main()
