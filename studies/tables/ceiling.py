"""A ceiling for the offset placement: how few trials would a perfect sweep need?

The offset placement draws its first trials' offsets from ``PRIOR_OFFSETS`` around each
sweep's drop point and leaves the rest to the base sampler. Two things it cannot know
limit it: where a setting's best rate lies relative to its sweeps (the training horizon a
100-step sweep does not see), and how far one sweep's drop point strays from the others
of the same setting. This study removes them and reruns the table study's offset methods:

- ``setting``: every sweep of a setting is moved (its rates multiplied by one factor) so
  that the median drop point of the setting's pool sweeps sits ``-mean(PRIOR_OFFSETS)``
  decades above the setting's best seed-mean rate: the prior's middle lands on the best
  rate. Each sweep keeps its scatter around that median.
- ``sweep``: each sweep is moved by its own factor, so that its own drop point sits there:
  no scatter either (a sweep without a drop point takes its setting's factor).
- ``none`` (run only when asked, ``--modes none``): the sweeps as they are, the table
  study's placement. With ``--prior-decades`` it measures a narrower prior with the anchors
  a real study has, against what the same prior gives with perfect ones.

A setting none of whose pool sweeps has a drop point (batch 4 on three diabetes tasks) is
left unmoved: its trials are placed as in the table study.

The rates' best positions are read off the tables (which a real study cannot do): these
are bounds, not methods. Everything else is ``run.py``'s ``run_study``: the same tasks,
draws, target and counting, the real sampler. A narrowed sweep asked of a moved pool is
run live over the range asked, moved back. The plain base samplers' studies do not
change and are read from ``results/results.json``.

Run ``python -m studies.tables.ceiling --jobs 2`` (~6 min on 2 cores); results go to
``results/ceiling/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
import json
import math
import multiprocessing
from pathlib import Path
import shlex
import time
from typing import Any

import numpy as np

from studies.tables.run import HERE, Pool, against_base, run_study, select
from studies.tables.tables import GRID, POOL_SEEDS, TABLE_SEEDS, Tables

MODES = ("setting", "sweep")
METHODS = ("LR(TPE) offset", "LR(GP) offset")


def best_rate(tables: Tables, task: str, setting: int) -> float:
    """The grid rate of the setting's lowest seed-mean loss."""
    mean = tables.curves(task, setting, GRID, TABLE_SEEDS).mean(axis=0)
    return float(GRID[int(np.argmin(mean))])


def _drop_point(lrs: Sequence[float], losses: Sequence[float]) -> float | None:
    from optuna_lrrange.core import _placement

    return _placement.anchor(lrs, losses)[0]


def _target_anchor(best: float) -> float:
    """Where a drop point must sit for the prior's middle to land on ``best``."""
    from optuna_lrrange.core import _placement

    return best * 10.0 ** (-float(np.mean(_placement.PRIOR_OFFSETS)))


class MovedPool(Pool):
    """The table study's sweeps, each moved onto its setting's best rate (see the module)."""

    mode = "setting"

    def __init__(self, tables: Tables, task: str) -> None:
        super().__init__(tables, task)
        self._targets: dict[int, tuple[float, float]] = {}

    def target(self, setting: int) -> tuple[float, float]:
        """``(where a drop point must sit, the setting's factor)``, computed once."""
        if setting not in self._targets:
            drops = []
            for seed in POOL_SEEDS:
                raw = self.tables.sweep(self.task, setting, seed)
                losses = [math.nan if x is None else x for x in raw["losses"]]
                d = _drop_point(raw["lrs"], losses)
                if d is not None:
                    drops.append(math.log10(d))
            where = _target_anchor(best_rate(self.tables, self.task, setting))
            factor = where / 10.0 ** float(np.median(drops)) if drops else 1.0
            self._targets[setting] = where, factor
        return self._targets[setting]

    def sweep(self, setting: int, seed: int, config: Any) -> Any:
        from optuna_lrrange.core import RangeTestConfig, Sweep

        where, f = self.target(setting)
        asked = config
        if config != RangeTestConfig():  # a narrowed sweep: run the range asked, unmoved
            config = replace(config, start_lr=config.start_lr / f, end_lr=config.end_lr / f)
        raw = super().sweep(setting, seed, config)
        if self.mode == "sweep":
            own = _drop_point(raw.lrs, raw.losses)
            if own is not None:
                f = where / own
        return Sweep([x * f for x in raw.lrs], list(raw.losses), raw.stop_reason, asked)


class SweepMovedPool(MovedPool):
    mode = "sweep"


#: ``none`` leaves every sweep where it is: the table study's own placement, for the
#: what-if priors (``--modes none --prior-decades ...``) with the anchors a study has.
POOLS = {"setting": MovedPool, "sweep": SweepMovedPool, "none": Pool}


def set_prior(decades: float) -> tuple[float, float]:
    """Makes this process's sampler draw its independent offsets from ``decades`` around
    the middle of ``PRIOR_OFFSETS`` (a what-if for this study: the package has no such
    option); returns the new interval."""
    from optuna_lrrange.core import _placement

    middle = float(np.mean(_placement.PRIOR_OFFSETS))
    prior = (middle - decades / 2, middle + decades / 2)
    _placement.prior_interval.__defaults__ = (prior, _placement.OFFSET_RANGE)
    _placement.in_reach.__defaults__ = (prior,)
    return prior


def _run(job: tuple[Any, ...]) -> dict[str, Any]:
    mode, decades, study_job = job[0], job[1], job[2:]
    if decades is not None:
        set_prior(decades)
    rec = run_study(study_job, pool_factory=POOLS[mode])
    return {
        k: rec[k]
        for k in ("task", "method", "seed", "trials_to_target", "steps_to_target", "reached")
    } | {"mode": mode}


def summarise(records: list[dict[str, Any]], recorded: dict[str, Any]) -> dict[str, Any]:
    """Medians per task, method and mode; geometric-mean ratios against the plain base
    samplers' recorded medians, and against the recorded offset placement."""
    from studies.tables.tasks import TASKS_BY_NAME

    tasks = list(dict.fromkeys(r["task"] for r in records))
    per: dict[str, Any] = {}
    for r in records:
        cell = per.setdefault(r["task"], {}).setdefault(f"{r['method']} [{r['mode']}]", [])
        cell.append((r["trials_to_target"], r["steps_to_target"]))
    medians: dict[str, dict[str, Any]] = {}
    for task in tasks:
        row = {
            m: {
                "median_trials": float(np.median([t for t, _ in xs])),
                "median_steps": float(np.median([s for _, s in xs])),
                "studies": len(xs),
            }
            for m, xs in per[task].items()
        }
        for m, rec in recorded[task].items():
            row[m] = {
                "median_trials": float(np.median(rec["trials_to_target"])),
                "median_steps": float(np.median(rec["steps_to_target"])),
                "studies": len(rec["trials_to_target"]),
            }
        medians[task] = row
    ratios: dict[str, Any] = {}
    for method in METHODS:
        for name in (method, *(f"{method} [{m}]" for m in POOLS)):
            against = against_base(medians, name)
            if against is None:
                continue
            by_role: dict[str, float] = {}
            for role in dict.fromkeys(TASKS_BY_NAME[t].role for t in medians):
                mine = {t: row for t, row in medians.items() if TASKS_BY_NAME[t].role == role}
                r = against_base(mine, name)
                if r is not None:
                    by_role[role] = r["trial_ratio_geomean"]
            against["trial_ratio_geomean_by_role"] = by_role
            ratios[name] = against
    return {"tasks": medians, "ratios": ratios}


def write_markdown(result: dict[str, Any], path: Path) -> str:
    cfg = result["config"]
    lines = [
        "# Table study: a ceiling for the offset placement",
        "",
        f"Command: `{cfg['command']}` ({cfg['studies']} studies in {cfg['minutes']:.1f} min; "
        f"code `{cfg['code_commit']}`). Learning rate and a second hyperparameter, "
        f"{cfg['n_seeds']} study seeds per task, at most {cfg['n_trials']} trials; the "
        f"first offsets drawn from {cfg['prior_offsets']} decades. In modes `setting` and "
        "`sweep` each trial's sweep is moved so that the prior's middle lands on its "
        "setting's best seed-mean rate (`setting`: the setting's median drop point is moved "
        "there, each sweep keeps its scatter; `sweep`: each sweep's own drop point is moved "
        "there); in mode `none` it is not moved. "
        "Plain base samplers and the unmoved offset placement: the recorded table study "
        f"(`{cfg['recorded']}`).",
        "",
        "Geometric mean over the tasks of median(method) / median(plain base):",
        "",
        "| method | vs | tasks | trials ratio | steps ratio | later than the base | "
        "trials ratio by split |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, r in result["summary"]["ratios"].items():
        split = ", ".join(f"{k} {v:.2f}" for k, v in r["trial_ratio_geomean_by_role"].items())
        label = name if "[" in name else f"{name} (recorded, unmoved)"
        lines.append(
            f"| {label} | {r['vs']} | {r['tasks']} | {r['trial_ratio_geomean']:.2f} | "
            f"{r['step_ratio_geomean']:.2f} | {r['tasks_later_than_base']} | {split} |"
        )
    shown = [""] + [f" [{m}]" for m in POOLS if any(r["mode"] == m for r in result["studies"])]
    columns = ["TPE", *(f"LR(TPE) offset{v}" for v in shown)]
    columns += ["GP", *(f"LR(GP) offset{v}" for v in shown)]
    lines += [
        "",
        "Median trials to the target per task:",
        "",
        "| task | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for task, row in result["summary"]["tasks"].items():
        cells = [f"{row[c]['median_trials']:g}" if c in row else "" for c in columns]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1, help="studies run at a time")
    parser.add_argument("--seeds", type=int, default=20, help="study seeds")
    parser.add_argument("--trials", type=int, default=100, help="trials per study (at most)")
    parser.add_argument("--tasks", default=None, help="comma-separated task names")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ceiling")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument(
        "--prior-decades",
        type=float,
        default=None,
        help="width of the interval the first offsets are drawn from, around the package "
        "prior's middle (default: the package's own, 1.5 decades)",
    )
    args = parser.parse_args(argv)

    from studies.tables.tasks import TASKS

    recorded_path = HERE / "results" / "results.json"
    recorded_all = json.loads(recorded_path.read_text())
    names = select(parser, "--tasks", [t.name for t in TASKS], args.tasks)
    modes = select(parser, "--modes", list(POOLS), args.modes)
    if args.prior_decades is not None and not 0 < args.prior_decades <= 3:
        parser.error(f"--prior-decades must be in (0, 3]; got {args.prior_decades}")
    from optuna_lrrange.core import _placement

    prior = (
        _placement.PRIOR_OFFSETS if args.prior_decades is None else set_prior(args.prior_decades)
    )
    tables_path = HERE / "results" / "tables.json"
    jobs = [
        (mode, args.prior_decades, task, "two", method, seed, args.trials, str(tables_path), False)
        for mode in modes
        for method in METHODS
        for task in names
        for seed in range(args.seeds)
    ]
    t0 = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            records = pool.map(_run, jobs, chunksize=4)
    else:
        records = [_run(j) for j in jobs]
    minutes = (time.perf_counter() - t0) / 60
    keep = ("TPE", "GP", *METHODS)
    recorded = {
        t: {m: v for m, v in recorded_all["summary"]["two"]["tasks"][t].items() if m in keep}
        for t in names
    }
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    command = "python -m studies.tables.ceiling"
    for flag, value, default in (
        ("--seeds", args.seeds, 20),
        ("--trials", args.trials, 100),
        ("--tasks", args.tasks, None),
        ("--out", args.out, HERE / "results" / "ceiling"),
        ("--modes", args.modes, ",".join(MODES)),
        ("--prior-decades", args.prior_decades, None),
    ):
        if value != default:
            command += f" {flag} {shlex.quote(str(value))}"
    if args.jobs > 1:
        command += f" --jobs {args.jobs}"
    result = {
        "config": {
            "command": command,
            "code_commit": commit or None,
            "recorded": recorded_all["config"]["command"]
            + f" at {recorded_all['config']['code_commit']}",
            "n_seeds": args.seeds,
            "n_trials": args.trials,
            "studies": len(jobs),
            "minutes": minutes,
            "prior_offsets": [round(x, 3) for x in prior],
        },
        "summary": summarise(records, recorded),
        "studies": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(result, indent=1))
    print(write_markdown(result, args.out / "ceiling.md"))


if __name__ == "__main__":
    main()
