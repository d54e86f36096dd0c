"""The benchmark tasks: real data shipped inside packages, tiny models, fixed budgets.

Every task carves a validation split out of the data it trains on (a fixed split, seed
``SPLIT_SEED``); no test split is read anywhere. A task is trained at one constant learning
rate for a fixed number of epochs and scored by its validation loss at the end.

A run that diverges (a non-finite loss on the way, or a final validation loss above the
validation loss at initialisation) is scored as the validation loss at initialisation of
that seed: a run no better than not training at all counts as not training at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import functools
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from optuna_lrrange.core import RangeTestConfig, Sweep, run_range_test

SPLIT_SEED = 0
VAL_FRACTION = 0.25


@dataclass(frozen=True)
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        name: Unique key (also the cache key).
        role: ``"design"`` (rules may be tuned on it) or ``"held_out"`` (evaluation only).
        description: One line for the tables.
        data: Loads the (train, val) split.
        model: Builds a fresh model (call after seeding).
        optimizer: Builds the optimizer for ``(params, lr)``.
        loss: ``loss(outputs, targets)``.
        batch_size: Mini-batch size (training and range test alike).
        epochs: The fixed training budget.
    """

    name: str
    role: str
    description: str
    data: Callable[[], Data]
    model: Callable[[], nn.Module]
    optimizer: Callable[[object, float], torch.optim.Optimizer]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int
    epochs: int


# ---------------------------------------------------------------------------------------
# Data


def _split(x: np.ndarray, y: np.ndarray, y_dtype: torch.dtype) -> Data:
    """A fixed train/validation split with features standardised on the train part."""
    rng = np.random.default_rng(SPLIT_SEED)
    idx = rng.permutation(len(x))
    n_val = int(round(VAL_FRACTION * len(x)))
    val, train = idx[:n_val], idx[n_val:]
    mean, std = x[train].mean(axis=0), x[train].std(axis=0) + 1e-6
    x = (x - mean) / std
    return Data(
        torch.tensor(x[train], dtype=torch.float32),
        torch.tensor(y[train], dtype=y_dtype),
        torch.tensor(x[val], dtype=torch.float32),
        torch.tensor(y[val], dtype=y_dtype),
    )


@functools.cache
def digits() -> Data:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _split(x.astype(np.float64), y, torch.long)


@functools.cache
def breast_cancer() -> Data:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return _split(x, y.astype(np.float64), torch.float32)


@functools.cache
def diabetes() -> Data:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    y = (y - y.mean()) / y.std()  # a standardised target: MSE 1.0 is the mean predictor
    return _split(x, y, torch.float32)


@functools.cache
def mnist1d() -> Data:
    """MNIST-1D generated locally (the package's default arguments, no download).

    Only the 4000 training sequences are used; the package's test split is never read.
    Sequences are standardised per position on the training part.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    data = make_dataset(args)
    return _split(np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"]), torch.long)


# ---------------------------------------------------------------------------------------
# Models


class MLP(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(n_in, hidden)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), nn.Linear(hidden, n_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ConvBN(nn.Module):
    """A small 1-D convolutional network with BatchNorm for MNIST-1D (length 40)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(1, 16, 5, padding=2),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Conv1d(16, 16, 5, stride=2, padding=2),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Conv1d(16, 16, 5, stride=2, padding=2),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 10, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1))


class GRUClassifier(nn.Module):
    """A one-layer GRU over MNIST-1D, read as 20 steps of 2 values."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.gru = nn.GRU(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x.reshape(x.shape[0], 20, 2))
        return self.head(h[-1])


class DeepMLP(nn.Module):
    """An MLP with two hidden layers (no normalisation)."""

    def __init__(self, n_in: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class DigitsCNN(nn.Module):
    """A small 2-D convolutional network for the 8x8 digits images."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], 1, 8, 8))


class TinyTransformer(nn.Module):
    """One self-attention encoder layer over MNIST-1D read as 10 tokens of 4 values."""

    def __init__(self, d_model: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(4, d_model)
        self.pos = nn.Parameter(torch.zeros(1, 10, d_model))
        self.encoder = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True
        )
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.reshape(x.shape[0], 10, 4)) + self.pos
        return self.head(self.encoder(h).mean(dim=1))


class LSTMClassifier(nn.Module):
    """A one-layer LSTM over MNIST-1D, read as 20 steps of 2 values."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x.reshape(x.shape[0], 20, 2))
        return self.head(h[-1])


def _plain_sgd(params: object, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr)  # type: ignore[arg-type]


def _rmsprop(params: object, lr: float) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=lr)  # type: ignore[arg-type]


def _sgd(params: object, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9)  # type: ignore[arg-type]


def _adam(params: object, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)  # type: ignore[arg-type]


def _adamw(params: object, lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)  # type: ignore[arg-type]


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out, y)


# Rounds of the study. The first round designed on the first three tasks and held out the
# next four; its rules were then read against those four, so from the second round on all
# seven are design tasks, and the six tasks after them are held out: they were added before
# any rule was evaluated on them and no setting was chosen by looking at them.
TASKS: list[Task] = [
    Task(
        "digits_mlp_sgd_5ep",
        "design",
        "digits, MLP 64-64-10, SGD momentum 0.9, cross-entropy, 5 epochs",
        digits,
        lambda: MLP(64, 64, 10),
        _sgd,
        F.cross_entropy,
        32,
        5,
    ),
    Task(
        "digits_mlp_sgd_20ep",
        "design",
        "the same, 20 epochs (the budget study)",
        digits,
        lambda: MLP(64, 64, 10),
        _sgd,
        F.cross_entropy,
        32,
        20,
    ),
    Task(
        "mnist1d_cnn_bn_adam",
        "design",
        "MNIST-1D, 3-layer CNN with BatchNorm, Adam, cross-entropy, 4 epochs",
        mnist1d,
        ConvBN,
        _adam,
        F.cross_entropy,
        64,
        4,
    ),
    Task(
        "mnist1d_gru_adam",
        "design",
        "MNIST-1D, GRU(32), Adam, cross-entropy, 4 epochs",
        mnist1d,
        GRUClassifier,
        _adam,
        F.cross_entropy,
        64,
        4,
    ),
    Task(
        "breast_cancer_mlp_adamw",
        "design",
        "breast cancer, MLP 30-32-1, AdamW (wd 1e-2), binary cross-entropy, 20 epochs",
        breast_cancer,
        lambda: MLP(30, 32, 1),
        _adamw,
        _bce,
        32,
        20,
    ),
    Task(
        "diabetes_mlp_sgd",
        "design",
        "diabetes, MLP 10-32-1, SGD momentum 0.9, MSE regression, 30 epochs",
        diabetes,
        lambda: MLP(10, 32, 1),
        _sgd,
        F.mse_loss,
        32,
        30,
    ),
    Task(
        "mnist1d_bn_mlp_sgd",
        "design",
        "MNIST-1D, MLP 40-128-10 with BatchNorm, SGD momentum 0.9, cross-entropy, 5 epochs",
        mnist1d,
        lambda: MLP(40, 128, 10, batch_norm=True),
        _sgd,
        F.cross_entropy,
        64,
        5,
    ),
    Task(
        "digits_cnn_adam",
        "held_out",
        "digits as 8x8 images, 2-layer CNN, Adam, cross-entropy, 5 epochs",
        digits,
        DigitsCNN,
        _adam,
        F.cross_entropy,
        32,
        5,
    ),
    Task(
        "mnist1d_transformer_adamw",
        "held_out",
        "MNIST-1D as 10 tokens, one attention layer (d 32, 4 heads), AdamW (wd 1e-2), "
        "cross-entropy, 5 epochs",
        mnist1d,
        TinyTransformer,
        _adamw,
        F.cross_entropy,
        64,
        5,
    ),
    Task(
        "mnist1d_lstm_rmsprop",
        "held_out",
        "MNIST-1D, LSTM(32), RMSprop, cross-entropy, 4 epochs",
        mnist1d,
        LSTMClassifier,
        _rmsprop,
        F.cross_entropy,
        64,
        4,
    ),
    Task(
        "mnist1d_deep_mlp_plain_sgd",
        "held_out",
        "MNIST-1D, MLP 40-256-256-10, SGD without momentum, cross-entropy, 6 epochs",
        mnist1d,
        lambda: DeepMLP(40, 256, 10),
        _plain_sgd,
        F.cross_entropy,
        32,
        6,
    ),
    Task(
        "breast_cancer_mlp_sgd",
        "held_out",
        "breast cancer, MLP 30-64-1, SGD momentum 0.9, binary cross-entropy, 15 epochs",
        breast_cancer,
        lambda: MLP(30, 64, 1),
        _sgd,
        _bce,
        16,
        15,
    ),
    Task(
        "diabetes_deep_mlp_adam",
        "held_out",
        "diabetes, MLP 10-64-64-1, Adam, MSE regression, 20 epochs",
        diabetes,
        lambda: DeepMLP(10, 64, 1),
        _adam,
        F.mse_loss,
        16,
        20,
    ),
]

TASKS_BY_NAME = {t.name: t for t in TASKS}


# ---------------------------------------------------------------------------------------
# Training and the range test


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch of shuffled mini-batch indices (the last partial batch is dropped when a
    full one exists, so BatchNorm never sees a batch of one)."""
    perm = torch.randperm(n, generator=gen)
    n_full = n // batch_size
    if n_full == 0:
        return [perm]
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]


@torch.no_grad()
def _val_loss(task: Task, model: nn.Module, data: Data) -> float:
    model.eval()
    loss = float(task.loss(model(data.x_val), data.y_val))
    model.train()
    return loss


def train(task: Task, lr: float, seed: int) -> tuple[float, float]:
    """Trains a fresh model at a constant ``lr``; returns (final, initial) validation loss.

    The final loss is ``inf`` when the run went non-finite.
    """
    torch.manual_seed(seed)
    data = task.data()
    model = task.model()
    init = _val_loss(task, model, data)
    opt = task.optimizer(model.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    for _ in range(task.epochs):
        for idx in _batches(n, task.batch_size, gen):
            loss = task.loss(model(data.x_train[idx]), data.y_train[idx])
            if not torch.isfinite(loss):
                return math.inf, init
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    final = _val_loss(task, model, data)
    return (final if math.isfinite(final) else math.inf), init


def range_test(task: Task, seed: int, config: RangeTestConfig | None = None) -> Sweep:
    """A range test on a fresh model of the task (seeded), over shuffled training batches."""
    torch.manual_seed(seed)
    data = task.data()
    model = task.model()
    model.train()
    opt = task.optimizer(model.parameters(), 1e-7)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.x_train)
    batches: list[torch.Tensor] = []

    def step(lr: float) -> float:
        if not batches:
            batches.extend(_batches(n, task.batch_size, gen))
        idx = batches.pop(0)
        for group in opt.param_groups:
            group["lr"] = lr
        loss = task.loss(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return run_range_test(step, config or RangeTestConfig())
