"""Benchmark: does re-estimating the learning rate during training help?

On three real tasks (MNIST-1D, scikit-learn's bundled digits and breast-cancer data), a
small MLP trained with Adam for a fixed budget, several seeds. Every arm starts from the
same first sweep (the default 100-step range test from the initial weights) and its
suggested rate ``lr0``:

- ``constant``:  ``lr0`` throughout.
- ``reestimate``: ``lr0``, re-estimated with :class:`optuna_lrrange.LRReestimator` every
  ``EVERY`` epochs (defaults: 40-step sweeps over +-2 decades).
- ``cosine``: cosine annealing from ``lr0`` to 0 over the budget.
- ``cosine+reestimate``: the cosine schedule, rescaled at each re-estimation
  (``apply="scale_scheduler"``).

It records the final validation loss (and accuracy), the sweeps' extra optimizer steps and
wall time, and the rate each re-estimation chose. A second part measures how a sweep's
suggestion at a trained checkpoint depends on ``num_iter`` and ``span`` (how the defaults
were chosen).

Usage::

    nice -n 10 python studies/reestimation/run.py           # full run, ~10 minutes
    nice -n 10 python studies/reestimation/run.py --quick   # smoke run, < 60 s
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import statistics
import time
from typing import Any

import numpy as np
import torch

from optuna_lrrange import LRReestimator
from optuna_lrrange.pytorch import range_test

HERE = Path(__file__).resolve().parent
F = torch.nn.functional
ARMS = ("constant", "reestimate", "cosine", "cosine+reestimate")


# ---------------------------------------------------------------------------------------
# Tasks: (x_train, y_train, x_val, y_val, hidden width, batch size)


def _standardize(x_train: np.ndarray, x_val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return (x_train - mean) / std, (x_val - mean) / std


def _split(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    idx = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.75 * len(x))
    tr, va = idx[:cut], idx[cut:]
    xt, xv = _standardize(x[tr], x[va])
    return xt, y[tr], xv, y[va]


def load_task(name: str) -> dict[str, Any]:
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        xt, xv = _standardize(data["x"], data["x_test"])
        arrays = (xt, data["y"], xv, data["y_test"])
        hidden, batch = 128, 64
    elif name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        arrays = _split(d.data, d.target)
        hidden, batch = 64, 32
    elif name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        arrays = _split(d.data, d.target)
        hidden, batch = 32, 32
    else:
        raise ValueError(f"unknown task {name!r}")
    xt, yt, xv, yv = arrays
    return {
        "name": name,
        "train": torch.utils.data.TensorDataset(
            torch.tensor(xt, dtype=torch.float32), torch.tensor(yt, dtype=torch.long)
        ),
        "x_val": torch.tensor(xv, dtype=torch.float32),
        "y_val": torch.tensor(yv, dtype=torch.long),
        "hidden": hidden,
        "batch": batch,
        "classes": int(max(yt.max(), yv.max()) + 1),
    }


def make_model(task: dict[str, Any], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    d_in, h = task["train"].tensors[0].shape[1], task["hidden"]
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, h),
        torch.nn.ReLU(),
        torch.nn.Linear(h, h),
        torch.nn.ReLU(),
        torch.nn.Linear(h, task["classes"]),
    )


def make_loader(task: dict[str, Any], seed: int) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        task["train"], batch_size=task["batch"], shuffle=True, generator=g
    )


def evaluate(model: torch.nn.Module, task: dict[str, Any]) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        out = model(task["x_val"])
        loss = F.cross_entropy(out, task["y_val"]).item()
        acc = (out.argmax(1) == task["y_val"]).float().mean().item()
    model.train()
    return loss, acc


# ---------------------------------------------------------------------------------------
# Part 1: the four arms


def first_rate(task: dict[str, Any], seed: int) -> float:
    model = make_model(task, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sweep = range_test(model, optimizer, F.cross_entropy, make_loader(task, seed))
    lr = sweep.suggest().lr
    return 1e-3 if lr is None else float(lr)


def train_arm(
    task: dict[str, Any], seed: int, arm: str, lr0: float, epochs: int, every: int
) -> dict[str, Any]:
    model = make_model(task, seed)
    loader = make_loader(task, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr0)
    steps_per_epoch = len(loader)
    scheduler = None
    if arm.startswith("cosine"):
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch
        )
    reest = None
    if arm.endswith("reestimate"):
        reest = LRReestimator(
            model, optimizer, F.cross_entropy, loader, every_epochs=every, scheduler=scheduler
        )
    lrs_at_epoch = []
    start = time.perf_counter()
    for epoch in range(epochs):
        if reest is not None:
            reest.step(epoch=epoch)
        lrs_at_epoch.append(optimizer.param_groups[0]["lr"])
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
    seconds = time.perf_counter() - start
    val_loss, val_acc = evaluate(model, task)
    return {
        "task": task["name"],
        "seed": seed,
        "arm": arm,
        "lr0": lr0,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "train_steps": epochs * steps_per_epoch,
        "extra_steps": 0 if reest is None else reest.extra_steps,
        "seconds": seconds,
        "sweep_seconds": 0.0 if reest is None else reest.sweep_seconds,
        "lrs_at_epoch": lrs_at_epoch,
        "reestimations": []
        if reest is None
        else [
            {
                "epoch": r.epoch,
                "previous_lr": r.sweep.info["previous_lr"],
                "chosen_lr": r.lr,
                "suggested": r.suggestion.lr,
                "kept_reason": r.sweep.info.get("kept_reason"),
                "steps": len(r.sweep),
            }
            for r in reest.history
        ],
    }


# ---------------------------------------------------------------------------------------
# Part 2: how num_iter and span change a mid-training sweep's suggestion


def defaults_study(task: dict[str, Any], seed: int, lr0: float, checkpoints: list[int]) -> list:
    """At each checkpoint epoch of a constant-rate run, sweeps with several settings.

    The reference is a 200-step sweep over +-3 decades; every other setting's suggestion
    is compared with it as |log10(s / reference)| (decades off).
    """
    model = make_model(task, seed)
    loader = make_loader(task, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr0)
    settings = [(200, 3.0), (100, 2.0), (40, 2.0), (20, 2.0), (40, 1.0), (40, 3.0)]
    rows = []
    for epoch in range(max(checkpoints) + 1):
        if epoch in checkpoints:
            current = optimizer.param_groups[0]["lr"]
            found: dict[str, Any] = {}
            for num_iter, span in settings:
                sweep = range_test(
                    model,
                    optimizer,
                    F.cross_entropy,
                    loader,
                    start_lr=current / 10**span,
                    end_lr=current * 10**span,
                    num_iter=num_iter,
                )
                found[f"{num_iter}x{span:g}"] = sweep.suggest().lr
            rows.append({"task": task["name"], "seed": seed, "epoch": epoch, **found})
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return rows


# ---------------------------------------------------------------------------------------
# Summaries and the plot


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def summarize(runs: list[dict[str, Any]], defaults: list[dict[str, Any]], meta: dict) -> str:
    tasks = sorted({r["task"] for r in runs}, key=[r["task"] for r in runs].index)
    lines = [
        "# Re-estimation benchmark: results",
        "",
        f"Command: `{meta['command']}`. {meta['epochs']} epochs, re-estimation every "
        f"{meta['every']} epochs, seeds {meta['seeds']}, Adam, torch threads 1. "
        f"Total wall time {meta['wall_seconds']:.0f} s.",
        "",
        "## Final validation loss (mean ± sd over seeds; lower is better)",
        "",
        "| task | " + " | ".join(ARMS) + " | wins of reestimate vs constant |",
        "|---" * (len(ARMS) + 2) + "|",
    ]
    for task in tasks:
        cells = []
        by_arm = {arm: [r for r in runs if r["task"] == task and r["arm"] == arm] for arm in ARMS}
        for arm in ARMS:
            cells.append(_mean_sd([r["val_loss"] for r in by_arm[arm]]))
        wins = sum(
            a["val_loss"] < b["val_loss"]
            for a, b in zip(by_arm["reestimate"], by_arm["constant"], strict=True)
        )
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {wins}/{len(by_arm['constant'])} |")
    lines += [
        "",
        "## Final validation accuracy (mean over seeds)",
        "",
        "| task | " + " | ".join(ARMS) + " |",
        "|---" * (len(ARMS) + 1) + "|",
    ]
    for task in tasks:
        mine = [r for r in runs if r["task"] == task]
        accs = {a: [r["val_acc"] for r in mine if r["arm"] == a] for a in ARMS}
        cells = [f"{statistics.mean(accs[a]):.4f}" for a in ARMS]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cost of the sweeps (arm `reestimate`, mean per run)",
        "",
        "| task | training steps | extra sweep steps | extra steps % | training s | sweep s |"
        " sweeps kept the rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        rs = [r for r in runs if r["task"] == task and r["arm"] == "reestimate"]
        train = statistics.mean(r["train_steps"] for r in rs)
        extra = statistics.mean(r["extra_steps"] for r in rs)
        secs = statistics.mean(r["seconds"] - r["sweep_seconds"] for r in rs)
        sweep_s = statistics.mean(r["sweep_seconds"] for r in rs)
        kept = sum(1 for r in rs for e in r["reestimations"] if e["kept_reason"])
        total = sum(len(r["reestimations"]) for r in rs)
        lines.append(
            f"| {task} | {train:.0f} | {extra:.0f} | {100 * extra / train:.1f} | "
            f"{secs:.2f} | {sweep_s:.2f} | {kept}/{total} |"
        )
    lines += [
        "",
        "## Chosen rate over training (arm `reestimate`, geometric mean over seeds)",
        "",
        "| task | lr0 | " + " | ".join(f"epoch {e}" for e in meta["reest_epochs"]) + " |",
        "|---" * (len(meta["reest_epochs"]) + 2) + "|",
    ]
    for task in tasks:
        rs = [r for r in runs if r["task"] == task and r["arm"] == "reestimate"]
        row = [_gmean([r["lr0"] for r in rs])]
        for i in range(len(meta["reest_epochs"])):
            row.append(_gmean([r["reestimations"][i]["chosen_lr"] for r in rs]))
        lines.append(f"| {task} | " + " | ".join(f"{v:.2g}" for v in row) + " |")
    if defaults:
        keys = [k for k in defaults[0] if "x" in k and k[0].isdigit()]
        ref = keys[0]
        lines += [
            "",
            "## Defaults: a mid-training sweep's suggestion vs. the reference",
            "",
            f"Reference: {ref} (num_iter x span in decades each side). Median "
            "|log10(suggestion / reference)| in decades over checkpoints, seeds and tasks; "
            "'none' counts sweeps with no suggestion.",
            "",
            "| setting | median decades off | max decades off | none |",
            "|---|---|---|---|",
        ]
        for key in keys:
            offs = [
                abs(math.log10(d[key] / d[ref]))
                for d in defaults
                if d[key] is not None and d[ref] is not None
            ]
            none = sum(d[key] is None for d in defaults)
            med = statistics.median(offs) if offs else float("nan")
            mx = max(offs) if offs else float("nan")
            lines.append(f"| {key} | {med:.2f} | {mx:.2f} | {none}/{len(defaults)} |")
    return "\n".join(lines) + "\n"


def _gmean(values: list[float]) -> float:
    return float(math.exp(statistics.mean(math.log(v) for v in values)))


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs}, key=[r["task"] for r in runs].index)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    colors = {"reestimate": "C0", "cosine": "C1", "cosine+reestimate": "C2", "constant": "0.5"}
    for ax, task in zip(axes[0], tasks, strict=True):
        for arm in ("constant", "cosine", "reestimate", "cosine+reestimate"):
            for i, r in enumerate(x for x in runs if x["task"] == task and x["arm"] == arm):
                epochs = np.arange(len(r["lrs_at_epoch"]))
                ax.step(
                    epochs,
                    r["lrs_at_epoch"],
                    where="post",
                    color=colors[arm],
                    alpha=0.7,
                    lw=1.2 if arm.endswith("reestimate") else 0.8,
                    ls="--" if arm == "constant" else "-",
                    label=arm if i == 0 else None,
                )
                if arm == "reestimate":
                    ax.scatter(
                        [e["epoch"] for e in r["reestimations"]],
                        [e["chosen_lr"] for e in r["reestimations"]],
                        color=colors[arm],
                        s=12,
                        zorder=3,
                    )
        ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("learning rate at the start of the epoch")
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.suptitle("Learning rate over training: re-estimation every few epochs (dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, < 60 s")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        tasks, seeds, epochs, every, checkpoints = ["digits", "breast_cancer"], [0], 8, 3, [3]
    else:
        tasks = ["mnist1d", "digits", "breast_cancer"]
        seeds, epochs, every, checkpoints = [0, 1, 2, 3, 4], 40, 8, [8, 24]
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    defaults: list[dict[str, Any]] = []
    for name in tasks:
        task = load_task(name)
        for seed in seeds:
            lr0 = first_rate(task, seed)
            for arm in ARMS:
                runs.append(train_arm(task, seed, arm, lr0, epochs, every))
                r = runs[-1]
                print(
                    f"{name:14s} seed {seed} {arm:18s} lr0 {lr0:.2e} val_loss "
                    f"{r['val_loss']:.4f} acc {r['val_acc']:.3f} "
                    f"extra {r['extra_steps']} steps {r['seconds']:.1f}s",
                    flush=True,
                )
            if seed in seeds[:3]:
                defaults += defaults_study(task, seed, lr0, checkpoints)
    meta = {
        "command": "nice -n 10 python studies/reestimation/run.py"
        + (" --quick" if args.quick else ""),
        "epochs": epochs,
        "every": every,
        "seeds": seeds,
        "reest_epochs": list(range(every, epochs, every)),
        "wall_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results{suffix}.json").write_text(
        json.dumps({"meta": meta, "runs": runs, "defaults": defaults}, indent=1) + "\n"
    )
    (args.out / f"results{suffix}.md").write_text(summarize(runs, defaults, meta))
    plot(runs, args.out / f"lr_over_training{suffix}.png")
    print(summarize(runs, defaults, meta))


if __name__ == "__main__":
    main()
