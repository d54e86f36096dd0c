"""LRRangeSampler on a small classification task (synthetic data, CPU, a minute).

Set LRRANGE_EXAMPLE_FAST=1 for a three-trial run of a few seconds.
"""

from __future__ import annotations

import os

import optuna
import optunahub
import torch
import torch.nn.functional as F

FAST = os.environ.get("LRRANGE_EXAMPLE_FAST") == "1"
N_TRIALS = 3 if FAST else 20
EPOCHS = 2 if FAST else 10

module = optunahub.load_module("samplers/lrrange")


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    w = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    return x, (x @ w + 0.5 * torch.randn(n, 4, generator=g)).argmax(1)


x_train, y_train = make_data(1024, seed=1)
x_valid, y_valid = make_data(512, seed=2)
train_loader = [(x_train[i : i + 64], y_train[i : i + 64]) for i in range(0, 1024, 64)]


def objective(trial: optuna.Trial) -> float:
    torch.manual_seed(trial.number)
    width = trial.suggest_int("width", 16, 128, log=True)
    model = torch.nn.Sequential(
        torch.nn.Linear(20, width), torch.nn.ReLU(), torch.nn.Linear(width, 4)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    module.attach(trial, model, optimizer, F.cross_entropy, train_loader)
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)  # the range test runs here
    for group in optimizer.param_groups:
        group["lr"] = lr
    for _ in range(EPOCHS):
        for x, y in train_loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    with torch.no_grad():
        return F.cross_entropy(model(x_valid), y_valid).item()


if __name__ == "__main__":
    sampler = module.LRRangeSampler(optuna.samplers.TPESampler(seed=0), num_iter=50)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=N_TRIALS)
    best = study.best_trial
    print(f"best validation loss {best.value:.4f} with {best.params}")
    anchor, offset = best.user_attrs["lrrange:anchor"], best.user_attrs["lrrange:offset"]
    print(f"placed at offset {offset} (decades) from the drop point {anchor}")
