"""Per-step overhead of the range test against plain training and torch-lr-finder.

For a small MLP, CNN and GRU on the same 100 fixed batches it times, in one process:

a. 100 plain training steps (zero_grad, forward, loss, backward, step);
b. ``optuna_lrrange.pytorch.range_test`` with ``num_iter=100``, snapshot and restore
   included;
c. torch-lr-finder 0.2.2: ``LRFinder(...)`` (which snapshots), ``.range_test(...,
   num_iter=100)`` and ``.reset()``.

The learning-rate range is kept small and the divergence threshold huge so that every
tool takes exactly 100 steps (checked). After warm-up the three run interleaved, in a
rotating order, for ``--rounds`` rounds; each round gives the ratios b/a and c/a, and the
report gives their medians with the interquartile range and the extremes.

Run from the repository root (torch-lr-finder is a benchmark-only dependency)::

    taskset -c 1 python studies/overhead/run.py --rounds 150 --out studies/overhead
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import contextlib
import gc
import json
import os
from pathlib import Path
import platform
import time
from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from torch_lr_finder import LRFinder, TrainDataLoaderIter

from optuna_lrrange.pytorch import range_test

NUM_ITER = 100
START_LR, END_LR = 1e-4, 1e-2  # the loss stays finite and below any divergence threshold
DIVERGE = 1e6
# Process CPU time first: on a shared machine it leaves out the time other jobs hold the
# cores, which wall-clock time does not.
CLOCKS = {"cpu": "process CPU time", "wall": "wall-clock time"}


def make_task(name: str) -> tuple[Callable[[], nn.Module], list[tuple[torch.Tensor, ...]]]:
    """A model factory (same initial weights every call) and 100 fixed batches."""
    g = torch.Generator().manual_seed(0)
    if name == "mlp":
        xs = [torch.randn(64, 64, generator=g) for _ in range(NUM_ITER)]

        def build() -> nn.Module:
            return nn.Sequential(
                nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
            )

    elif name == "cnn":
        xs = [torch.randn(32, 1, 28, 28, generator=g) for _ in range(NUM_ITER)]

        def build() -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.BatchNorm2d(8),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(16 * 7 * 7, 10),
            )

    elif name == "gru":
        xs = [torch.randn(32, 20, 16, generator=g) for _ in range(NUM_ITER)]

        class GRUNet(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.gru = nn.GRU(16, 64, batch_first=True)
                self.head = nn.Linear(64, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                out, _ = self.gru(x)
                return self.head(out[:, -1])

        build = GRUNet
    else:
        raise ValueError(name)
    batches = [(x, torch.randint(0, 10, (x.shape[0],), generator=g)) for x in xs]
    torch.manual_seed(0)
    initial = build().state_dict()

    def factory() -> nn.Module:
        model = build()
        model.load_state_dict(initial)
        return model

    return factory, batches


def new_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=START_LR, momentum=0.9)


def plain(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> int:
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return len(batches)


def ours(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> int:
    sweep = range_test(
        model,
        optimizer,
        F.cross_entropy,
        batches,
        start_lr=START_LR,
        end_lr=END_LR,
        num_iter=NUM_ITER,
        diverge_factor=DIVERGE,
    )
    return len(sweep)


def torch_lr_finder(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list) -> int:
    finder = LRFinder(model, optimizer, F.cross_entropy)
    finder.range_test(
        TrainDataLoaderIter(batches),
        start_lr=START_LR,
        end_lr=END_LR,
        num_iter=NUM_ITER,
        diverge_th=DIVERGE,
    )
    finder.reset()
    return len(finder.history["lr"])


TOOLS: dict[str, Callable[[nn.Module, torch.optim.Optimizer, list], int]] = {
    "plain": plain,
    "optuna_lrrange": ours,
    "torch_lr_finder": torch_lr_finder,
}


def timed(tool: str, factory: Callable[[], nn.Module], batches: list) -> tuple[float, float, int]:
    """CPU and wall-clock seconds one tool takes on a fresh model and optimizer, and the
    steps it took."""
    model = factory()
    optimizer = new_optimizer(model)
    gc.collect()
    # As timeit does, the garbage collector is off while timing. torch-lr-finder prints and
    # draws a tqdm bar; all three run with their output discarded.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        with contextlib.redirect_stderr(sink):
            gc.disable()
            try:
                cpu, wall = time.process_time(), time.perf_counter()
                steps = TOOLS[tool](model, optimizer, batches)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            finally:
                gc.enable()
    if tool != "plain":  # both tools must give the initial weights back
        reference = factory().state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(value, reference[key]), (tool, key)
    return cpu, wall, steps


def summarize(values: list[float]) -> dict[str, float]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    # How far the median itself may be off: a 95% bootstrap interval (rounds resampled
    # with replacement, fixed seed). On a noisy machine it is the number to read.
    resampled = np.random.default_rng(0).choice(values, size=(10_000, len(values)))
    low, high = np.percentile(np.median(resampled, axis=1), [2.5, 97.5])
    return {
        "median": float(median),
        "median_ci95_low": float(low),
        "median_ci95_high": float(high),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def run_task(name: str, rounds: int, warmup: int) -> dict[str, Any]:
    factory, batches = make_task(name)
    order = list(TOOLS)
    for _ in range(warmup):
        for tool in order:
            timed(tool, factory, batches)
    times: dict[str, dict[str, list[float]]] = {
        clock: {tool: [] for tool in order} for clock in CLOCKS
    }
    steps: dict[str, set[int]] = {tool: set() for tool in order}
    for r in range(rounds):
        rotated = order[r % 3 :] + order[: r % 3]
        for tool in rotated:
            cpu, wall, n = timed(tool, factory, batches)
            times["cpu"][tool].append(cpu)
            times["wall"][tool].append(wall)
            steps[tool].add(n)
    result: dict[str, Any] = {"steps": {tool: sorted(s) for tool, s in steps.items()}}
    for clock, by_tool in times.items():
        ratios = {
            tool: [t / p for t, p in zip(by_tool[tool], by_tool["plain"], strict=True)]
            for tool in ("optuna_lrrange", "torch_lr_finder")
        }
        result[clock] = {
            "seconds": {tool: summarize(v) for tool, v in by_tool.items()},
            "ratio_to_plain": {tool: summarize(v) for tool, v in ratios.items()},
            "raw_seconds": by_tool,
        }
    return result


def to_markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# Overhead of a 100-step range test",
        "",
        f"Command: `{results['command']}`",
        "",
        f"torch {env['torch']}, torch-lr-finder {env['torch_lr_finder']}, Python "
        f"{env['python']}, {env['machine']}, torch threads {env['threads']}, "
        f"{results['rounds']} interleaved rounds after {results['warmup']} warm-up rounds.",
        "",
        f"Pinned to CPUs {env['cpu_affinity']}; load average (1, 5, 15 min) "
        f"{env['load_average_1_5_15_min']['start']} at the start, "
        f"{env['load_average_1_5_15_min']['end']} at the end.",
        "",
        "Ratio = time of the tool / time of 100 plain training steps in the same round: "
        "median (95% bootstrap interval of the median) [interquartile range] (min-max). "
        "Steps = the steps each tool took (plain, optuna-lrrange, torch-lr-finder).",
    ]
    for clock, title in CLOCKS.items():
        lines += [
            "",
            f"## {title[0].upper()}{title[1:]}",
            "",
            "| task | plain, ms (median) | optuna-lrrange / plain | torch-lr-finder / plain "
            "| steps |",
            "|---|---|---|---|---|",
        ]
        for name, task in results["tasks"].items():
            cells = []
            for tool in ("optuna_lrrange", "torch_lr_finder"):
                s = task[clock]["ratio_to_plain"][tool]
                cells.append(
                    f"{s['median']:.3f} ({s['median_ci95_low']:.3f}-{s['median_ci95_high']:.3f}) "
                    f"[{s['q1']:.3f}, {s['q3']:.3f}] ({s['min']:.3f}-{s['max']:.3f})"
                )
            steps = ", ".join(str(task["steps"][t]) for t in TOOLS)
            plain_ms = 1000 * task[clock]["seconds"]["plain"]["median"]
            lines.append(f"| {name} | {plain_ms:.1f} | {cells[0]} | {cells[1]} | {steps} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=["mlp", "cnn", "gru"])
    parser.add_argument("--out", type=Path, default=None, help="folder for results.{md,json}")
    args = parser.parse_args()

    torch.set_num_threads(1)
    import torch_lr_finder as tlf_package

    # The command as run, with the CPUs the process was pinned to (on a shared machine
    # the timing runs are pinned to a core the other jobs do not use).
    affinity = sorted(os.sched_getaffinity(0))
    command = f"python studies/overhead/run.py --rounds {args.rounds}"
    if args.warmup != 2:
        command += f" --warmup {args.warmup}"
    if args.tasks != ["mlp", "cnn", "gru"]:
        command += " --tasks " + " ".join(args.tasks)
    command += f" --out {args.out}" if args.out is not None else ""
    if len(affinity) < (os.cpu_count() or 1):
        command = f"taskset -c {','.join(map(str, affinity))} {command}"
    load_at_start = os.getloadavg()
    results: dict[str, Any] = {
        "command": command,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "num_iter": NUM_ITER,
        "lr_range": [START_LR, END_LR],
        "environment": {
            "torch": torch.__version__,
            "torch_lr_finder": getattr(tlf_package, "__version__", "0.2.2"),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "threads": torch.get_num_threads(),
            "cpu_affinity": affinity,
        },
        "tasks": {},
    }
    for name in args.tasks:
        results["tasks"][name] = run_task(name, args.rounds, args.warmup)
        ratio = results["tasks"][name]["cpu"]["ratio_to_plain"]
        print(
            f"{name} (CPU time): ours/plain {ratio['optuna_lrrange']['median']:.3f}, "
            f"torch-lr-finder/plain {ratio['torch_lr_finder']['median']:.3f}, "
            f"steps {results['tasks'][name]['steps']}",
            flush=True,
        )
    results["environment"]["load_average_1_5_15_min"] = {
        "start": [round(x, 2) for x in load_at_start],
        "end": [round(x, 2) for x in os.getloadavg()],
    }
    markdown = to_markdown(results)
    print(markdown)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "results.md").write_text(markdown)


if __name__ == "__main__":
    main()
