"""The oracle tables and the sweep pools, trained once and cached on disk.

Table: every task trained at every rate of ``GRID`` x every setting x ``TABLE_SEEDS``;
cell value = the validation-loss score of :func:`studies.tables.tasks.train`.
Sweep pool: ``POOL_SEEDS`` real range tests (the package's default ``RangeTestConfig``) per
task and setting, from fresh initialisations.

The cache file (``results/tables.json``) is a result: it is committed, and a rerun only
trains what is missing from it.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
import multiprocessing
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

#: The learning-rate grid of the tables and the studies' search range: 23 rates, log-spaced
#: over 1e-5..3 (0.25 decades apart).
GRID = tuple(float(x) for x in np.geomspace(1e-5, 3.0, 23))
LR_RANGE = (GRID[0], GRID[-1])
TABLE_SEEDS = (0, 1, 2)
POOL_SEEDS = (1000, 1001, 1002, 1003)

QUICK_GRID = tuple(float(x) for x in np.geomspace(1e-5, 3.0, 8))
QUICK_TABLE_SEEDS = (0,)
QUICK_POOL_SEEDS = (1000,)


def rate_key(lr: float) -> str:
    return f"{lr:.4e}"


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _train_job(job: tuple[str, int, str, int]) -> tuple[str, float, float]:
    from studies.tables.tasks import TASKS_BY_NAME, train

    name, setting, key, seed = job
    score, init = train(TASKS_BY_NAME[name], setting, float(key), seed)
    return cell_key(name, setting, key, seed), score, init


def _sweep_job(job: tuple[str, int, int]) -> tuple[str, dict[str, Any]]:
    from optuna_lrrange.core import RangeTestConfig
    from studies.tables.tasks import TASKS_BY_NAME, range_test

    name, setting, seed = job
    sweep = range_test(TASKS_BY_NAME[name], setting, seed, RangeTestConfig())
    return pool_key(name, setting, seed), {
        "lrs": list(sweep.lrs),
        "losses": [x if math.isfinite(x) else None for x in sweep.losses],
        "stop_reason": sweep.stop_reason,
    }


def cell_key(task: str, setting: int, lr_key: str, seed: int) -> str:
    return f"{task}|{setting}|{lr_key}|{seed}"


def pool_key(task: str, setting: int, seed: int) -> str:
    return f"{task}|{setting}|{seed}"


class Tables:
    """Cached cells ``task|setting|rate|seed -> [score, initial loss]`` and sweeps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = json.loads(path.read_text()) if path.exists() else {}
        self.cells: dict[str, list[float]] = raw.get("cells", {})
        self.sweeps: dict[str, dict[str, Any]] = raw.get("sweeps", {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cells": self.cells, "sweeps": self.sweeps}, sort_keys=True))
        os.replace(tmp, self.path)

    def ensure(
        self,
        task_names: Sequence[str],
        grid: Sequence[float],
        seeds: Sequence[int],
        pool_seeds: Sequence[int],
        n_jobs: int,
    ) -> None:
        """Trains every missing cell and runs every missing sweep."""
        from studies.tables.tasks import TASKS_BY_NAME

        cells = [
            (name, s, rate_key(lr), seed)
            for name in task_names
            for s in TASKS_BY_NAME[name].settings
            for lr in grid
            for seed in seeds
        ]
        todo = [c for c in cells if cell_key(*c) not in self.cells]
        sweeps = [
            (name, s, seed)
            for name in task_names
            for s in TASKS_BY_NAME[name].settings
            for seed in pool_seeds
        ]
        todo_sweeps = [j for j in sweeps if pool_key(*j) not in self.sweeps]
        if not todo and not todo_sweeps:
            return
        t0 = time.time()
        print(f"training {len(todo)} cells, {len(todo_sweeps)} sweeps ...", flush=True)
        if n_jobs > 1:
            with multiprocessing.get_context("spawn").Pool(n_jobs, _init_worker) as pool:
                for i, (key, score, init) in enumerate(
                    pool.imap_unordered(_train_job, todo, chunksize=4)
                ):
                    self.cells[key] = [score, init]
                    if i % 100 == 99:
                        self.save()
                        print(f"  {i + 1}/{len(todo)} {time.time() - t0:.0f} s", flush=True)
                for key, sweep in pool.imap_unordered(_sweep_job, todo_sweeps):
                    self.sweeps[key] = sweep
        else:
            _init_worker()
            for i, job in enumerate(todo):
                key, score, init = _train_job(job)
                self.cells[key] = [score, init]
                if i % 100 == 99:
                    self.save()
                    print(f"  {i + 1}/{len(todo)} {time.time() - t0:.0f} s", flush=True)
            for sweep_job in todo_sweeps:
                key, sweep = _sweep_job(sweep_job)
                self.sweeps[key] = sweep
        self.save()
        print(f"... {time.time() - t0:.0f} s", flush=True)

    def curves(
        self, task: str, setting: int, grid: Sequence[float], seeds: Sequence[int]
    ) -> np.ndarray:
        """Scores, shape ``(len(seeds), len(grid))``."""
        return np.array(
            [
                [self.cells[cell_key(task, setting, rate_key(lr), s)][0] for lr in grid]
                for s in seeds
            ]
        )

    def sweep(self, task: str, setting: int, seed: int) -> dict[str, Any]:
        return self.sweeps[pool_key(task, setting, seed)]


def main() -> None:
    import argparse

    from studies.tables.tasks import TASKS

    parser = argparse.ArgumentParser(description="Train the oracle tables and sweep pools.")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--tasks", default=None, help="comma-separated task names")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = args.tasks.split(",") if args.tasks else [t.name for t in TASKS]
    tables = Tables(args.out / "tables.json")
    if args.quick:
        tables.ensure(names, QUICK_GRID, QUICK_TABLE_SEEDS, QUICK_POOL_SEEDS, args.jobs)
    else:
        tables.ensure(names, GRID, TABLE_SEEDS, POOL_SEEDS, args.jobs)


if __name__ == "__main__":
    main()
