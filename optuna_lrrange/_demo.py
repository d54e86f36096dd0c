"""The demo study: a small CNN on MNIST-1D, tuned by TPE inside LRRangeSampler.

MNIST-1D (Greydanus 2020) is generated locally by the ``mnist1d`` package (no download):
4,000 training and 1,000 validation sequences of length 40, ten classes. Each trial builds
a three-layer 1-D CNN of ``channels`` width, trained with SGD (momentum 0.9, weight decay
``weight_decay``) at the learning rate the sampler picks inside the band its range test
found; the objective is the validation accuracy (maximised).

Needs the ``torch`` and ``data`` extras: ``pip install optuna-lrrange[torch,data]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import functools
import logging
import math
import os
from pathlib import Path
import random
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    import optuna
    import torch

#: Logs under optuna's hierarchy, so ``optuna.logging.set_verbosity`` governs it too.
logger = logging.getLogger("optuna.lrrange")

#: The plots the demo writes, by kind: file name.
PLOT_FILES = {
    "sweep": "sweep.png",
    "loss-change": "loss_change.png",
    "overlay": "sweeps.png",
    "bands": "bands.png",
}


@dataclass(frozen=True)
class DemoSettings:
    """How big a demo study is.

    Attributes:
        n_trials: Trials to run.
        epochs: Training epochs per trial.
        num_iter: Steps of each trial's range test.
        batch_size: Mini-batch size, for the range test and training alike.
    """

    n_trials: int
    epochs: int
    num_iter: int
    batch_size: int = 128


#: The default demo (about two minutes on two CPU cores) and ``--quick`` (seconds).
FULL = DemoSettings(n_trials=30, epochs=12, num_iter=100)
QUICK = DemoSettings(n_trials=6, epochs=2, num_iter=60)


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"the demo study needs {module}: `pip install optuna-lrrange[{extra}]`."
        ) from e


@functools.lru_cache(maxsize=2)
def load_mnist1d(seed: int = 42) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST-1D as ``(x_train, y_train, x_val, y_val)`` tensors, generated locally.

    ``x`` has shape ``(n, 1, 40)``. The generator seeds Python's and numpy's global random
    state; both are restored afterwards.
    """
    th = _require("torch", "torch")
    data = _require("mnist1d.data", "data")
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        args = data.get_dataset_args()
        args.seed = seed
        ds = data.make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)

    def x(a: np.ndarray) -> torch.Tensor:
        return th.tensor(a, dtype=th.float32).unsqueeze(1)  # type: ignore[no-any-return]

    def y(a: np.ndarray) -> torch.Tensor:
        return th.tensor(a, dtype=th.long)  # type: ignore[no-any-return]

    return x(ds["x"]), y(ds["y"]), x(ds["x_test"]), y(ds["y_test"])


def build_model(channels: int) -> torch.nn.Module:
    """A three-layer 1-D CNN for sequences of length 40, ten classes."""
    nn = _require("torch.nn", "torch")
    model: torch.nn.Module = nn.Sequential(
        nn.Conv1d(1, channels, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * 10, 10),
    )
    return model


def make_objective(
    settings: DemoSettings, *, seed: int = 0
) -> Callable[[optuna.trial.Trial], float]:
    """The demo's objective: validation accuracy of the CNN after ``settings.epochs``."""
    torch = _require("torch", "torch")
    import optuna_lrrange

    x_train, y_train, x_val, y_val = load_mnist1d()
    dataset = torch.utils.data.TensorDataset(x_train, y_train)

    def objective(trial: optuna.trial.Trial) -> float:
        channels = trial.suggest_categorical("channels", [16, 32, 64])
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        torch.manual_seed(seed + trial.number)
        generator = torch.Generator().manual_seed(seed + trial.number)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=settings.batch_size, shuffle=True, generator=generator
        )
        model = build_model(channels)
        optimizer = torch.optim.SGD(
            model.parameters(), lr=1e-3, momentum=0.9, weight_decay=weight_decay
        )
        loss_fn = torch.nn.CrossEntropyLoss()
        optuna_lrrange.attach(trial, model, optimizer, loss_fn, loader)
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        for group in optimizer.param_groups:
            group["lr"] = lr
        accuracy = 0.0
        for epoch in range(settings.epochs):
            model.train()
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(xb), yb)
                if not torch.isfinite(loss):
                    return 0.1  # diverged: chance level
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                accuracy = float((model(x_val).argmax(1) == y_val).float().mean())
            trial.report(accuracy, epoch)
        return accuracy

    return objective


def run_demo(
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    settings: DemoSettings,
    *,
    seed: int = 0,
    show_progress_bar: bool = True,
) -> optuna.Study:
    """Runs (or continues) the demo study and returns it."""
    import optuna

    import optuna_lrrange

    sampler = optuna_lrrange.LRRangeSampler(
        optuna.samplers.TPESampler(seed=seed), num_iter=settings.num_iter
    )
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
    )
    done = len(study.trials)
    if done:
        logger.info("continuing study %r, which holds %d trials", study_name, done)
    study.optimize(
        make_objective(settings, seed=seed),
        n_trials=settings.n_trials,
        show_progress_bar=show_progress_bar,
    )
    return study


def write_plots(study: optuna.Study, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Writes the four plots of ``study`` as PNG files into ``out``; returns their paths."""
    import optuna_lrrange

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    draw: dict[str, Callable[[], Axes]] = {
        "sweep": lambda: optuna_lrrange.plot_sweep(study),
        "loss-change": lambda: optuna_lrrange.plot_loss_change(study),
        "overlay": lambda: optuna_lrrange.plot_sweeps(study, target_name="validation accuracy"),
        "bands": lambda: optuna_lrrange.plot_bands(study),
    }
    paths = {}
    for kind, make in draw.items():
        ax = make()
        path = folder / PLOT_FILES[kind]
        cast("Figure", ax.figure).savefig(path, dpi=110)
        paths[kind] = path
    return paths


def _g(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def summary(study: optuna.Study, plots: dict[str, Path] | None = None) -> str:
    """A plain-text report: best trial, each trial's band and sampled lr, the plots."""
    import optuna

    from optuna_lrrange._records import read_trial_records

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    lines = [
        f"Study {study.study_name!r}: {len(trials)} trials, {len(complete)} complete.",
    ]
    if complete:
        best = study.best_trial
        params = ", ".join(
            f"{k}={_g(v) if isinstance(v, float) else v}" for k, v in best.params.items()
        )
        lines.append(f"Best: trial {best.number}, validation accuracy {best.value:.4f}")
        lines.append(f"      {params}")
    lines.append("")
    lines.append(f"{'trial':>5}  {'state':<8}  {'accuracy':>8}  {'band':<21}  {'lr':>9}  note")
    for t in trials:
        records = read_trial_records(t)
        band_text, note = "-", ""
        if records:
            _, suggestion = records[0]
            if suggestion is not None and suggestion.band is not None:
                band_text = f"[{suggestion.band[0]:.2e}, {suggestion.band[1]:.2e}]"
            elif suggestion is not None:
                note = f"no band ({suggestion.reason}): full range"
        else:
            note = "no sweep recorded"
        value = "-" if t.value is None else f"{t.value:.4f}"
        lr = t.params.get("lr")
        lr_text = "-" if lr is None else f"{lr:.2e}"
        lines.append(
            f"{t.number:>5}  {t.state.name:<8}  {value:>8}  {band_text:<21}  {lr_text:>9}  {note}"
        )
    if plots:
        lines.append("")
        lines.append("Plots:")
        for kind, path in plots.items():
            lines.append(f"  {kind:<12} {path}")
    return "\n".join(line.rstrip() for line in lines)
