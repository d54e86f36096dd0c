"""Several hyperparameters besides the learning rate, and the optimizer among them.

The learning rate that works depends on everything else: the optimizer (SGD wants rates
~100x those of Adam), the width, the depth, the weight decay, the batch size. Because the
range test runs on each trial's own model and optimizer, the band follows those choices:
TPE chooses the other hyperparameters as usual and the learning rate inside the band that
fits them. Suggest the other hyperparameters first, build the model, attach, then suggest
"lr".

Run:  python examples/multi_param.py [--storage URL] [--n-trials 30]
Fast: OPTUNA_LRRANGE_FAST=1 python examples/multi_param.py
"""

from __future__ import annotations

import argparse
import os

import optuna
from sklearn.datasets import load_digits
import torch
from torch import nn

import optuna_lrrange

FAST = os.environ.get("OPTUNA_LRRANGE_FAST") == "1"
EPOCHS = 1 if FAST else 8

x, y = load_digits(return_X_y=True)
X = torch.tensor(x / 16.0 - 0.5, dtype=torch.float32)
Y = torch.tensor(y, dtype=torch.long)
TRAIN = torch.utils.data.TensorDataset(X[:-300], Y[:-300])
X_VAL, Y_VAL = X[-300:], Y[-300:]


def build_model(width: int, depth: int, dropout: float) -> nn.Module:
    layers: list[nn.Module] = []
    size = 64
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU(), nn.Dropout(dropout)]
        size = width
    layers.append(nn.Linear(size, 10))
    return nn.Sequential(*layers)


def objective(trial: optuna.trial.Trial) -> float:
    optimizer_name = trial.suggest_categorical("optimizer", ["sgd", "adam"])
    width = trial.suggest_int("width", 32, 256, log=True)
    depth = trial.suggest_int("depth", 1, 3)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    batch_size = trial.suggest_categorical("batch_size", [32, 64, 128])

    torch.manual_seed(trial.number)
    loader = torch.utils.data.DataLoader(TRAIN, batch_size=batch_size, shuffle=True)
    model = build_model(width, depth, dropout)
    if optimizer_name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=1e-3, momentum=0.9, weight_decay=weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()

    optuna_lrrange.attach(trial, model, optimizer, loss_fn, loader)
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    for group in optimizer.param_groups:
        group["lr"] = lr

    for epoch in range(EPOCHS):
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(X_VAL).argmax(1) == Y_VAL).float().mean())
        trial.report(accuracy, epoch)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="storage URL (default: in memory)")
    parser.add_argument("--study-name", default="multi_param")
    parser.add_argument("--n-trials", type=int, default=4 if FAST else 30)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=args.storage,
        study_name=args.study_name,
        direction="maximize",
        sampler=optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=1)),
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=args.n_trials)

    print(f"best accuracy {study.best_value:.3f} with {study.best_params}")
    # The band follows the optimizer: compare where SGD's and Adam's bands sit.
    for name in ("sgd", "adam"):
        bands = [
            t.user_attrs["lrrange:band"]
            for t in study.trials
            if t.params.get("optimizer") == name and t.user_attrs.get("lrrange:band")
        ]
        if bands:
            lows = sorted(b[0] for b in bands)
            highs = sorted(b[1] for b in bands)
            print(
                f"{name}: {len(bands)} bands, median [{lows[len(lows) // 2]:.2g}, "
                f"{highs[len(highs) // 2]:.2g}]"
            )


if __name__ == "__main__":
    main()
