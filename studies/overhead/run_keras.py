"""Per-step overhead of the Keras range test against plain ``train_on_batch`` steps.

For a small Keras MLP and a small Keras CNN (with BatchNormalization), the same networks as
``run.py``'s, on the same 100 fixed batches, it times in one process (Keras on the torch
backend):

a. 100 plain ``model.train_on_batch(x, y)`` steps;
b. ``optuna_lrrange.keras.range_test`` with ``num_iter=100`` on the same batches, snapshot
   and restore included.

The rate runs from 1e-4 to 1e-2 and the divergence threshold is huge, so the sweep takes
exactly 100 steps (checked), and the sweep must give the weights back (checked). After
warm-up the two run interleaved, alternating which goes first, for ``--rounds`` rounds;
each round gives the ratio b/a, and the report gives its median with a 95% bootstrap
interval, the interquartile range and the extremes, in process CPU time and wall-clock
time.

Run from the repository root::

    taskset -c 1 python studies/overhead/run_keras.py --rounds 100 --out studies/overhead
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import gc
import json
import os
from pathlib import Path
import platform
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from optuna_lrrange.keras import preserved, range_test  # noqa: E402

NUM_ITER = 100
START_LR, END_LR = 1e-4, 1e-2  # the loss stays finite and below any divergence threshold
DIVERGE = 1e6
CLOCKS = {"cpu": "process CPU time", "wall": "wall-clock time"}
TOOLS = ("plain", "optuna_lrrange")


def make_task(name: str) -> tuple[keras.Model, list[tuple[np.ndarray, np.ndarray]]]:
    """A compiled model (SGD with momentum, as in run.py) and 100 fixed batches."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    if name == "mlp":
        xs = [rng.normal(size=(64, 64)).astype("float32") for _ in range(NUM_ITER)]
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(256, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
    elif name == "cnn":
        xs = [rng.normal(size=(32, 28, 28, 1)).astype("float32") for _ in range(NUM_ITER)]
        model = keras.Sequential(
            [
                keras.Input((28, 28, 1)),
                keras.layers.Conv2D(8, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(10),
            ]
        )
    else:
        raise ValueError(name)
    model.compile(
        optimizer=keras.optimizers.SGD(START_LR, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batches = [(x, rng.integers(0, 10, size=len(x))) for x in xs]
    return model, batches


def plain(model: keras.Model, batches: list) -> int:
    for x, y in batches:
        model.train_on_batch(x, y)
    return len(batches)


def ours(model: keras.Model, batches: list) -> int:
    sweep = range_test(
        model, batches, start_lr=START_LR, end_lr=END_LR, num_iter=NUM_ITER, diverge_factor=DIVERGE
    )
    return len(sweep)


RUNS: dict[str, Callable[[keras.Model, list], int]] = {"plain": plain, "optuna_lrrange": ours}


def _weights(model: keras.Model) -> list[bytes]:
    return [keras.ops.convert_to_numpy(v).tobytes() for v in model.variables]


def timed(tool: str, model: keras.Model, batches: list) -> tuple[float, float, int]:
    """CPU and wall-clock seconds one run takes, and the steps it took. The model starts
    each run from the same state: plain training is undone (outside the timing)."""
    before = _weights(model)
    with preserved(model):
        gc.collect()
        gc.disable()  # as timeit does
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            steps = RUNS[tool](model, batches)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            gc.enable()
        if tool != "plain":  # the sweep must give the weights back by itself
            assert _weights(model) == before, tool
    return cpu, wall, steps


def summarize(values: list[float]) -> dict[str, float]:
    """Median with a 95% bootstrap interval for it (fixed seed), quartiles, extremes; the
    same summary as run.py's."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
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
    model, batches = make_task(name)
    for _ in range(warmup):
        for tool in TOOLS:
            timed(tool, model, batches)
    times: dict[str, dict[str, list[float]]] = {c: {t: [] for t in TOOLS} for c in CLOCKS}
    steps: dict[str, set[int]] = {t: set() for t in TOOLS}
    for r in range(rounds):
        for tool in TOOLS if r % 2 == 0 else TOOLS[::-1]:
            cpu, wall, n = timed(tool, model, batches)
            times["cpu"][tool].append(cpu)
            times["wall"][tool].append(wall)
            steps[tool].add(n)
    result: dict[str, Any] = {"steps": {t: sorted(s) for t, s in steps.items()}}
    for clock, by_tool in times.items():
        ratios = [t / p for t, p in zip(by_tool["optuna_lrrange"], by_tool["plain"], strict=True)]
        result[clock] = {
            "seconds": {tool: summarize(v) for tool, v in by_tool.items()},
            "ratio_to_plain": summarize(ratios),
            "raw_seconds": by_tool,
        }
    return result


def to_markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# Overhead of a 100-step Keras range test",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Keras {env['keras']} on the {env['backend']} backend (torch {env['torch']}), Python "
        f"{env['python']}, {env['machine']}, torch threads {env['threads']}, "
        f"{results['rounds']} interleaved rounds after {results['warmup']} warm-up rounds.",
        "",
        f"Pinned to CPUs {env['cpu_affinity']}; load average (1, 5, 15 min) "
        f"{env['load_average_1_5_15_min']['start']} at the start, "
        f"{env['load_average_1_5_15_min']['end']} at the end.",
        "",
        "Ratio = time of `range_test(num_iter=100)` / time of 100 plain `train_on_batch` "
        "steps in the same round: median (95% bootstrap interval of the median) "
        "[interquartile range] (min-max). Steps = the steps each took (plain, optuna-lrrange).",
    ]
    for clock, title in CLOCKS.items():
        lines += [
            "",
            f"## {title[0].upper()}{title[1:]}",
            "",
            "| task | plain, ms (median) | optuna-lrrange / plain | steps |",
            "|---|---|---|---|",
        ]
        for name, task in results["tasks"].items():
            s = task[clock]["ratio_to_plain"]
            cell = (
                f"{s['median']:.3f} ({s['median_ci95_low']:.3f}-{s['median_ci95_high']:.3f}) "
                f"[{s['q1']:.3f}, {s['q3']:.3f}] ({s['min']:.3f}-{s['max']:.3f})"
            )
            steps = ", ".join(str(task["steps"][t]) for t in TOOLS)
            plain_ms = 1000 * task[clock]["seconds"]["plain"]["median"]
            lines.append(f"| {name} | {plain_ms:.1f} | {cell} | {steps} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--out", type=Path, default=None, help="folder for results_keras.*")
    args = parser.parse_args()

    torch.set_num_threads(1)
    affinity = sorted(os.sched_getaffinity(0))
    command = f"python studies/overhead/run_keras.py --rounds {args.rounds}"
    if args.warmup != 2:
        command += f" --warmup {args.warmup}"
    if args.tasks != ["mlp", "cnn"]:
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
            "keras": keras.__version__,
            "backend": keras.backend.backend(),
            "torch": torch.__version__,
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
            f"{name} (CPU time): ours/plain {ratio['median']:.3f} "
            f"({ratio['median_ci95_low']:.3f}-{ratio['median_ci95_high']:.3f}), "
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
        (args.out / "results_keras.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "results_keras.md").write_text(markdown)


if __name__ == "__main__":
    main()
