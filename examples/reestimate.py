"""Re-estimate the learning rate during training, recorded on the trial.

The best learning rate falls as training goes on. ``LRReestimator`` re-runs a short range
test from the current weights every few epochs (around the current rate, two decades
either side), moves the optimizer to the rate it suggests, and leaves the model exactly as
it was. Inside a trial each re-estimation is stored next to the sampler's first sweep
(``kind == "reestimate"``), so ``sweeps_summary`` and ``plot_bands`` show them.

Run:  python examples/reestimate.py [--storage URL] [--n-trials 8]
Fast: OPTUNA_LRRANGE_FAST=1 python examples/reestimate.py
"""

from __future__ import annotations

import argparse
import os

import optuna
from sklearn.datasets import load_digits
import torch
from torch import nn

import optuna_lrrange
from optuna_lrrange.reestimate import LRReestimator

FAST = os.environ.get("OPTUNA_LRRANGE_FAST") == "1"
EPOCHS = 4 if FAST else 12
EVERY = 2 if FAST else 4  # re-estimate every EVERY epochs

x, y = load_digits(return_X_y=True)
X = torch.tensor(x / 16.0 - 0.5, dtype=torch.float32)
Y = torch.tensor(y, dtype=torch.long)
TRAIN = torch.utils.data.TensorDataset(X[:-300], Y[:-300])


def objective(trial: optuna.trial.Trial) -> float:
    torch.manual_seed(trial.number)
    loader = torch.utils.data.DataLoader(TRAIN, batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    optuna_lrrange.attach(trial, model, optimizer, loss_fn, loader)
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    for group in optimizer.param_groups:
        group["lr"] = lr

    reestimator = LRReestimator(
        model, optimizer, loss_fn, loader, every_epochs=EVERY, trial=trial, max_change=10.0
    )
    for epoch in range(EPOCHS):
        new_lr = reestimator.step(epoch=epoch)
        if new_lr is not None:
            print(f"trial {trial.number}, epoch {epoch}: lr {new_lr:.3g}", flush=True)
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    with torch.no_grad():
        return float((model(X[-300:]).argmax(1) == Y[-300:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="storage URL (default: in memory)")
    parser.add_argument("--study-name", default="reestimate")
    parser.add_argument("--n-trials", type=int, default=2 if FAST else 8)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=args.storage,
        study_name=args.study_name,
        direction="maximize",
        sampler=optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=0)),
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=args.n_trials)

    summary = optuna_lrrange.sweeps_summary(study)
    columns = ["number", "sweep", "kind", "epoch", "band_low", "band_high", "reason", "chosen_lr"]
    print(summary[columns].to_string(index=False, float_format="{:.3g}".format))
    print(f"best accuracy {study.best_value:.3f}")


if __name__ == "__main__":
    main()
