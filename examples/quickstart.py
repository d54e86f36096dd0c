"""Quickstart: let a range test narrow each trial's learning rate.

An MLP on scikit-learn's handwritten digits (8x8 images, packaged with scikit-learn, no
download). The objective builds the model and optimizer, hands them to
``optuna_lrrange.attach`` and then asks for the learning rate as usual: the
``LRRangeSampler`` runs a short range test on that very model, narrows ``lr`` to the
steepest-descent band, and lets TPE pick inside it. The sweep is recorded on the trial.

Run:  python examples/quickstart.py [--storage sqlite:///quickstart.db] [--n-trials 20]
Fast: OPTUNA_LRRANGE_FAST=1 python examples/quickstart.py  (3 trials, 1 epoch)
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
EPOCHS = 1 if FAST else 10


def load_data() -> tuple[torch.utils.data.TensorDataset, torch.Tensor, torch.Tensor]:
    """Digits: 1,497 training and 300 validation images, standardised."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0 - 0.5, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    train = torch.utils.data.TensorDataset(x[:-300], y[:-300])
    return train, x[-300:], y[-300:]


TRAIN, X_VAL, Y_VAL = load_data()


def objective(trial: optuna.trial.Trial) -> float:
    torch.manual_seed(trial.number)
    loader = torch.utils.data.DataLoader(TRAIN, batch_size=64, shuffle=True)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    # One line: the sampler will run the range test on this model before sampling "lr".
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
        return float((model(X_VAL).argmax(1) == Y_VAL).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="storage URL (default: in memory)")
    parser.add_argument("--study-name", default="quickstart")
    parser.add_argument("--n-trials", type=int, default=3 if FAST else 20)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=0))
    study = optuna.create_study(
        storage=args.storage,
        study_name=args.study_name,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=args.n_trials)

    print(f"best accuracy {study.best_value:.3f} at lr={study.best_params['lr']:.3g}")
    for trial in study.trials:
        band = trial.user_attrs.get("lrrange:band")
        band_text = "none (full range)" if band is None else f"[{band[0]:.2g}, {band[1]:.2g}]"
        print(
            f"trial {trial.number}: band {band_text}, lr {trial.params['lr']:.3g}, "
            f"accuracy {trial.value:.3f}, sweeps {len(optuna_lrrange.get_sweeps(trial))}"
        )


if __name__ == "__main__":
    main()
