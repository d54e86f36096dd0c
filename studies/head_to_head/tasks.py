"""The head-to-head tasks: real packaged data, tiny networks, four hyperparameters each.

Every task tunes the learning rate (always on the wide log range ``LR_RANGE``) plus three
other hyperparameters, trains a fresh model for a fixed number of epochs and returns the
validation loss (a fixed train/validation split from :mod:`studies.oracle.tasks`; no test
split is read). A run that goes non-finite, or ends above the validation loss at
initialisation, scores the validation loss at initialisation (as in the oracle study).

The model's initialisation, dropout masks and data order are seeded from
``(study seed, trial number)`` only, so two methods that sample the same parameters in
the same trial get exactly the same result: methods differ only in what they sample. The
range test restores the model, the optimizer and the random number generators, and reads
its batches from a list of its own, so it leaves the training run untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import math
from typing import Any

import optuna
import torch
from torch import nn
import torch.nn.functional as F

import optuna_lrrange
from studies.oracle.tasks import Data, breast_cancer, digits, mnist1d

#: The learning rate's search range, for every method.
LR_RANGE = (1e-6, 1.0)


class MLP(nn.Module):
    """``depth`` hidden ReLU layers of ``width`` units, each followed by dropout."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width if depth else n_in, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, y)


@dataclass(frozen=True)
class Task:
    """One task: ``space(trial)`` suggests everything but the rate, ``build`` makes the run.

    Attributes:
        name: Unique key.
        description: One line for the tables (the space included).
        data: Loads the (train, val) split.
        space: Suggests the non-rate hyperparameters; returns them as a dict.
        build: ``build(params) -> (model, optimizer at a placeholder rate, batch size)``.
        loss: ``loss(outputs, targets)``.
        epochs: The fixed training budget.
    """

    name: str
    description: str
    data: Callable[[], Data]
    space: Callable[[optuna.Trial], dict[str, Any]]
    build: Callable[[dict[str, Any]], tuple[nn.Module, torch.optim.Optimizer, int]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    epochs: int


# --------------------------------------------------------------------------- digits


def _digits_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "width": trial.suggest_int("width", 16, 256, log=True),
        "depth": trial.suggest_int("depth", 1, 3),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128]),
    }


def _digits_build(p: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    model = MLP(64, 10, p["width"], p["depth"], 0.0)
    opt = torch.optim.SGD(
        model.parameters(), lr=1e-3, momentum=0.9, weight_decay=p["weight_decay"]
    )
    return model, opt, p["batch_size"]


# --------------------------------------------------------------------------- breast cancer


def _cancer_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "width": trial.suggest_int("width", 8, 128, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-1, log=True),
    }


def _cancer_build(p: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    model = MLP(30, 1, p["width"], 1, p["dropout"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=p["weight_decay"])
    return model, opt, 32


# --------------------------------------------------------------------------- MNIST-1D


def _mnist1d_space(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "width": trial.suggest_int("width", 32, 256, log=True),
        "depth": trial.suggest_int("depth", 1, 3),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
    }


def _mnist1d_build(p: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer, int]:
    model = MLP(40, 10, p["width"], p["depth"], p["dropout"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, opt, p["batch_size"]


TASKS: list[Task] = [
    Task(
        "digits_mlp_sgd",
        "sklearn digits, MLP (width 16-256, depth 1-3), SGD momentum 0.9 (weight decay "
        "1e-6..1e-2), batch size {16,32,64,128}, 10 epochs, cross-entropy",
        digits,
        _digits_space,
        _digits_build,
        F.cross_entropy,
        10,
    ),
    Task(
        "breast_cancer_mlp_adamw",
        "sklearn breast cancer, MLP (width 8-128, dropout 0-0.5), AdamW (weight decay "
        "1e-6..1e-1), batch 32, 20 epochs, binary cross-entropy",
        breast_cancer,
        _cancer_space,
        _cancer_build,
        _bce,
        20,
    ),
    Task(
        "mnist1d_mlp_adam",
        "MNIST-1D (generated locally), MLP (width 32-256, depth 1-3, dropout 0-0.5), Adam, "
        "batch size {32,64,128}, 6 epochs, cross-entropy",
        mnist1d,
        _mnist1d_space,
        _mnist1d_build,
        F.cross_entropy,
        6,
    ),
]

TASKS_BY_NAME = {t.name: t for t in TASKS}


# --------------------------------------------------------------------------- the objective


def _epoch(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled index batches (a trailing partial batch is dropped)."""
    perm = torch.randperm(n, generator=gen)
    n_full = max(1, n // batch_size)
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]


@torch.no_grad()
def _val_loss(task: Task, model: nn.Module, data: Data) -> float:
    model.eval()
    loss = float(task.loss(model(data.x_val), data.y_val))
    model.train()
    return loss


def trial_seed(study_seed: int, trial_number: int) -> int:
    return study_seed * 100_003 + trial_number


def make_objective(task: Task, study_seed: int, narrow: bool) -> Callable[[optuna.Trial], float]:
    """The objective of one study: suggest, build, attach, suggest the rate, train.

    ``narrow``: the study's sampler is an ``LRRangeSampler`` (only then is ``attach`` called;
    it would do nothing but warn otherwise).
    """

    def objective(trial: optuna.Trial) -> float:
        params = task.space(trial)
        seed = trial_seed(study_seed, trial.number)
        data = task.data()
        torch.manual_seed(seed)
        model, opt, batch_size = task.build(params)
        init = _val_loss(task, model, data)
        n = len(data.x_train)
        # The range test's batches: their own generator, so training's data order is unchanged.
        sweep_gen = torch.Generator().manual_seed(seed + 1)
        sweep_batches = [
            (data.x_train[i], data.y_train[i]) for i in _epoch(n, batch_size, sweep_gen)
        ]
        if narrow:
            optuna_lrrange.attach(trial, model, opt, task.loss, sweep_batches)
        lr = trial.suggest_float("lr", *LR_RANGE, log=True)
        for group in opt.param_groups:
            group["lr"] = lr
        gen = torch.Generator().manual_seed(seed)
        steps = 0
        diverged = False
        for _ in range(task.epochs):
            for idx in _epoch(n, batch_size, gen):
                loss = task.loss(model(data.x_train[idx]), data.y_train[idx])
                steps += 1
                if not torch.isfinite(loss):
                    diverged = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if diverged:
                break
        final = math.inf if diverged else _val_loss(task, model, data)
        diverged = diverged or not math.isfinite(final) or final > init
        trial.set_user_attr("train_steps", steps)
        trial.set_user_attr("diverged", diverged)
        return init if diverged else final

    return objective
