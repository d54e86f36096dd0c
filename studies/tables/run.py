"""The table study: how fast does each sampler reach a near-best configuration?

For every task of ``tasks.py`` an oracle table (``tables.py``) holds the validation loss of
every (setting, rate, training seed) on a log grid of rates. A study on a table runs the
real sampler code: each trial suggests the second hyperparameter (a categorical of its
three settings; fixed in the learning-rate-alone case), calls ``optuna_lrrange.attach``
with a ``sweep_fn`` that hands over a real range test of the model at that setting (from a
cached pool of sweeps per setting; a sweep with settings other than the pool's runs live
and is kept in memory), suggests the rate, and returns one training seed's loss read off
the table. Each study stops when it first evaluates a configuration within 5% of the
table's best, or after ``--trials`` trials.

Run ``python -m studies.tables.run`` (full) or ``--quick`` (a smoke run, < 60 s).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import functools
import json
import math
import multiprocessing
from pathlib import Path
import shlex
import time
from typing import Any

import numpy as np

from studies.tables.tables import (
    GRID,
    POOL_SEEDS,
    QUICK_GRID,
    QUICK_POOL_SEEDS,
    QUICK_TABLE_SEEDS,
    TABLE_SEEDS,
    Tables,
)

HERE = Path(__file__).resolve().parent

#: A study's target: a configuration whose seed-mean loss is within 5% of the table's best.
NEAR = 1.05
BASES = ("TPE", "GP", "Random")
#: Every method: a plain base sampler, or ``LRRangeSampler`` around it with a placement.
METHODS = (
    "TPE",
    "LR(TPE) band",
    "LR(TPE) offset",
    "GP",
    "LR(GP) band",
    "LR(GP) offset",
    "Random",
    "LR(Random) band",
    "LR(Random) offset",
)
CASES = ("two", "lr")
#: The quick run's tasks: the two cheapest to train.
QUICK_TASKS = ("cancer_mlp_plain_sgd_batch", "diabetes_mlp_sgd_width")
CASE_TITLES = {
    "two": "learning rate and a second hyperparameter",
    "lr": "learning rate alone (second hyperparameter fixed)",
}
COLORS = {"TPE": "tab:blue", "GP": "tab:green", "Random": "tab:gray"}


def base_of(method: str) -> str:
    return method.split("(")[1].split(")")[0] if method.startswith("LR(") else method


def placement_of(method: str) -> str | None:
    return method.split(" ")[1] if method.startswith("LR(") else None


def make_sampler(method: str, seed: int) -> Any:
    import optuna

    from optuna_lrrange import LRRangeSampler

    bases: dict[str, Callable[[], Any]] = {
        "TPE": lambda: optuna.samplers.TPESampler(seed=seed),
        "GP": lambda: optuna.samplers.GPSampler(seed=seed),
        "Random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    base = bases[base_of(method)]()
    placement = placement_of(method)
    if placement is None:
        return base
    return LRRangeSampler(base, placement=placement)


# --------------------------------------------------------------------------- the table


def interp(grid: Sequence[float], curve: Sequence[float], lr: float) -> float:
    """The curve at ``lr``: linear in log10(rate) between grid points, clipped at the ends."""
    return float(np.interp(math.log10(lr), np.log10(grid), curve))


@functools.cache
def _tables(path: str) -> Tables:
    return Tables(Path(path))


class Pool:
    """The sweeps a trial can get: the cached pool for the default settings, live runs
    (memoised in this process) for any other settings."""

    def __init__(self, tables: Tables, task: str) -> None:
        self.tables = tables
        self.task = task
        self.live: dict[tuple[int, int, Any], Any] = {}
        self.live_runs = 0

    def sweep(self, setting: int, seed: int, config: Any) -> Any:
        from optuna_lrrange.core import RangeTestConfig, Sweep
        from studies.tables.tasks import TASKS_BY_NAME, range_test

        if config == RangeTestConfig():
            raw = self.tables.sweep(self.task, setting, seed)
            losses = [math.nan if x is None else x for x in raw["losses"]]
            return Sweep(raw["lrs"], losses, raw["stop_reason"], config)
        key = (setting, seed, config)
        if key not in self.live:
            self.live_runs += 1
            self.live[key] = range_test(TASKS_BY_NAME[self.task], setting, seed, config)
        return self.live[key]


# --------------------------------------------------------------------------- one study


def _quiet() -> None:
    import logging
    import warnings

    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna.lrrange").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def run_study(
    job: tuple[str, str, str, int, int, str, bool], pool_factory: Callable[..., Pool] = Pool
) -> dict[str, Any]:
    """One study on one table, on in-memory storage; stops at the target.

    ``pool_factory(tables, task)`` makes the trials' sweep source (``ceiling.py`` hands in
    one whose sweeps are moved onto the table's best rates)."""
    import optuna

    import optuna_lrrange
    from studies.tables.tasks import TASKS_BY_NAME, train_steps

    _quiet()
    task_name, case, method, seed, n_trials, tables_path, quick = job
    task = TASKS_BY_NAME[task_name]
    tables = _tables(tables_path)
    grid = QUICK_GRID if quick else GRID
    seeds = QUICK_TABLE_SEEDS if quick else TABLE_SEEDS
    pool_seeds = QUICK_POOL_SEEDS if quick else POOL_SEEDS
    settings = task.settings if case == "two" else (task.fixed,)
    curves = {s: tables.curves(task_name, s, grid, seeds) for s in settings}
    best = min(float(c.mean(axis=0).min()) for c in curves.values())
    target = best * NEAR
    pool = pool_factory(tables, task_name)
    narrowed = placement_of(method) is not None
    steps = {s: train_steps(task, s) for s in settings}

    def objective(trial: optuna.Trial) -> float:
        if case == "two":
            setting = trial.suggest_categorical(task.second, list(task.settings))
        else:
            setting = task.fixed
        # Which training seed's run the trial gets, and which of the pool's sweeps: drawn
        # from (study seed, trial number) only, so every method sees the same draws.
        rng = np.random.default_rng([seed, trial.number])
        train_seed = int(rng.integers(len(seeds)))
        pool_seed = pool_seeds[int(rng.integers(len(pool_seeds)))]
        if narrowed:
            optuna_lrrange.attach(
                trial, sweep_fn=lambda config: pool.sweep(setting, pool_seed, config)
            )
        lr = trial.suggest_float("lr", grid[0], grid[-1], log=True)
        curve = curves[setting]
        trial.set_user_attr("config_loss", interp(grid, curve.mean(axis=0), lr))
        trial.set_user_attr("train_steps", steps[setting])
        return interp(grid, curve[train_seed], lr)

    def stop_at_target(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("config_loss", math.inf) <= target:
            study.stop()

    study = optuna.create_study(sampler=make_sampler(method, seed))
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, callbacks=[stop_at_target])
    wall = time.perf_counter() - start
    trials = []
    for t in sorted(study.trials, key=lambda t: t.number):
        sweeps = optuna_lrrange.get_sweeps(t)
        trials.append(
            {
                "setting": t.params.get(task.second, task.fixed),
                "lr": t.params["lr"],
                "value": t.value,
                "config_loss": t.user_attrs["config_loss"],
                "train_steps": t.user_attrs["train_steps"],
                "sweep_steps": sum(len(s.lrs) for s in sweeps),
                "sweep_span": [[min(s.lrs), max(s.lrs)] if len(s.lrs) else None for s in sweeps],
                "band": t.user_attrs.get("lrrange:band_used"),
                "reason": t.user_attrs.get("lrrange:reason"),
            }
        )
    reached = next((i for i, t in enumerate(trials) if t["config_loss"] <= target), None)
    upto = trials if reached is None else trials[: reached + 1]
    return {
        "task": task_name,
        "case": case,
        "method": method,
        "seed": seed,
        "n_trials": n_trials,
        "best": best,
        "target": target,
        "reached": reached is not None,
        # Not reached: n + 1 trials, and every step the study spent (a lower bound).
        "trials_to_target": n_trials + 1 if reached is None else reached + 1,
        "steps_to_target": sum(t["train_steps"] + t["sweep_steps"] for t in upto),
        "sweep_steps_to_target": sum(t["sweep_steps"] for t in upto),
        "sweep_steps": sum(t["sweep_steps"] for t in trials),
        "live_sweeps": pool.live_runs,
        "wall_seconds": wall,
        "trials": trials,
    }


# --------------------------------------------------------------------------- analysis


def geomean(xs: Sequence[float]) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def against_base(per_task: dict[str, Any], method: str) -> dict[str, Any] | None:
    """``method``'s medians against its plain base sampler's, over the tasks of
    ``per_task`` that hold both (``None`` if none does)."""
    base = base_of(method)
    pairs = [(r[method], r[base]) for r in per_task.values() if method in r and base in r]
    if not pairs:
        return None
    t_ratios = [a["median_trials"] / b["median_trials"] for a, b in pairs]
    s_ratios = [a["median_steps"] / b["median_steps"] for a, b in pairs]
    return {
        "vs": base,
        "tasks": len(pairs),
        "trial_ratio_geomean": geomean(t_ratios),
        "step_ratio_geomean": geomean(s_ratios),
        "trial_ratios": t_ratios,
        "step_ratios": s_ratios,
        "tasks_later_than_base": sum(x > 1 for x in t_ratios),
    }


def select(
    parser: argparse.ArgumentParser, flag: str, names: list[str], wanted: str | None
) -> list[str]:
    """The entries of ``names`` that ``flag`` (``wanted``, comma-separated) names, in
    their order; all of them when it is not given. An unknown name is a parser error."""
    if not wanted:
        return names
    unknown = sorted(set(wanted.split(",")) - set(names))
    if unknown:
        parser.error(f"{flag} must name entries among {names}; got unknown {unknown}")
    return [n for n in names if n in wanted.split(",")]


def _compare(per_task: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Over the tasks of ``per_task``: each LR method against its plain base sampler, and
    the offset placement against the band, per base sampler."""
    ratios: dict[str, Any] = {}
    for method in METHODS:
        if method != base_of(method):
            against = against_base(per_task, method)
            if against is not None:
                ratios[method] = against
    # The new placement against the old one, same base: trials, steps and sweep steps
    # to the target (medians per task, geometric mean over tasks).
    placements: dict[str, Any] = {}
    for base in BASES:
        new, old = f"LR({base}) offset", f"LR({base}) band"
        pairs = [(r[new], r[old]) for r in per_task.values() if new in r and old in r]
        if not pairs:
            continue
        ratio = {
            key: [a[key] / b[key] for a, b in pairs]
            for key in ("median_trials", "median_steps", "median_sweep_steps_to_target")
        }
        placements[base] = {
            "tasks": len(pairs),
            "trial_ratio_geomean": geomean(ratio["median_trials"]),
            "step_ratio_geomean": geomean(ratio["median_steps"]),
            "sweep_step_ratio_geomean": geomean(ratio["median_sweep_steps_to_target"]),
            "sweep_steps_total": [
                sum(b["median_sweep_steps_to_target"] for _, b in pairs),
                sum(a["median_sweep_steps_to_target"] for a, _ in pairs),
            ],
            "tasks_later": sum(x > 1 for x in ratio["median_trials"]),
            "tasks_earlier": sum(x < 1 for x in ratio["median_trials"]),
        }
    return ratios, placements


def summarise(
    studies: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    roles: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Per case, task and method: medians to target; per case: ratios vs the plain base,
    over all tasks and (when both kinds are present) over the design and held-out ones.
    ``roles``: each task's role, by default the one in ``tasks.py``."""
    from studies.tables.tasks import TASKS_BY_NAME

    if roles is None:
        roles = {t: TASKS_BY_NAME[t].role for t in tasks}
    out: dict[str, Any] = {}
    for case in CASES:
        per_task: dict[str, Any] = {}
        for task in tasks:
            rows: dict[str, Any] = {}
            for method in METHODS:
                ss = [
                    s
                    for s in studies
                    if (s["task"], s["case"], s["method"]) == (task, case, method)
                ]
                if not ss:
                    continue
                rows[method] = {
                    "studies": len(ss),
                    "trials_to_target": [s["trials_to_target"] for s in ss],
                    "steps_to_target": [s["steps_to_target"] for s in ss],
                    "reached": sum(s["reached"] for s in ss),
                    "median_trials": float(np.median([s["trials_to_target"] for s in ss])),
                    "median_steps": float(np.median([s["steps_to_target"] for s in ss])),
                    "median_sweep_steps_to_target": float(
                        np.median([s["sweep_steps_to_target"] for s in ss])
                    ),
                    "median_sweep_steps": float(np.median([s["sweep_steps"] for s in ss])),
                    "mean_sweep_steps_per_trial": float(
                        np.mean([s["sweep_steps"] / len(s["trials"]) for s in ss])
                    ),
                    "n_trials": ss[0]["n_trials"],
                }
            if rows:
                per_task[task] = rows
        if not per_task:
            continue
        ratios, placements = _compare(per_task)
        by_role = {}
        for role in dict.fromkeys(roles[t] for t in per_task):
            mine = {t: r for t, r in per_task.items() if roles[t] == role}
            if mine and len(mine) < len(per_task):
                by_role[role] = dict(zip(("ratios", "placements"), _compare(mine), strict=True))
        out[case] = {
            "tasks": per_task,
            "ratios": ratios,
            "placements": placements,
            "by_role": by_role,
        }
    return out


# --------------------------------------------------------------------------- suggestions


def fastai_minimum_div10(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``minimum`` as fastai computes it, with no descent check (it never
    declines): the rate of the lowest EMA-smoothed loss, first 10% and last 5 steps
    dropped, divided by 10. Non-finite losses end what is read."""
    from optuna_lrrange.core import ema

    lr, loss = np.asarray(lrs, float), np.asarray(losses, float)
    bad = np.flatnonzero(~np.isfinite(loss))
    n = int(bad[0]) if bad.size else loss.size
    lr, loss = lr[:n], loss[:n]
    start, end = n // 10, max(n // 10 + 1, n - 5)
    smooth = ema(loss)[start:end]
    return float(lr[start:end][int(np.argmin(smooth))] / 10)


def point_suggestions(
    tables: Tables,
    tasks: Sequence[str],
    grid: Sequence[float],
    seeds: Sequence[int],
    pool_seeds: Sequence[int],
) -> dict[str, Any]:
    """Every pool sweep of every setting: the default rule's and fastai's suggestions, scored
    as seed-mean table loss at the rate / the setting's best (a rate outside the grid is
    read at the grid's edge; a declined sweep scores the setting's worst seed-mean loss)."""
    from optuna_lrrange.core import suggest
    from studies.tables.tasks import TASKS_BY_NAME

    rules = (
        "default",
        "descent_band",
        "minimum_div10",
        "valley",
        "steepest",
        "fastai_minimum_div10",
    )
    cases = []
    for task in tasks:
        for setting in TASKS_BY_NAME[task].settings:
            mean = tables.curves(task, setting, grid, seeds).mean(axis=0)
            best, worst = float(mean.min()), float(mean.max())
            for seed in pool_seeds:
                raw = tables.sweep(task, setting, seed)
                losses = [math.nan if x is None else x for x in raw["losses"]]
                case: dict[str, Any] = {"task": task, "setting": setting, "sweep_seed": seed}
                for rule in rules:
                    if rule == "fastai_minimum_div10":
                        lr: float | None = fastai_minimum_div10(raw["lrs"], losses)
                        reason = None
                    else:
                        s = suggest(raw["lrs"], losses, None if rule == "default" else rule)
                        lr, reason = s.lr, s.reason
                    ratio = (worst if lr is None else interp(grid, mean, lr)) / best
                    case[rule] = {"lr": lr, "ratio": ratio, "reason": reason}
                fastai_near = [
                    r
                    for r in ("fastai_minimum_div10", "minimum_div10", "valley", "steepest")
                    if case[r]["lr"] is not None and case[r]["ratio"] <= NEAR
                ]
                case["fastai_near"] = bool(fastai_near)
                case["false_decline"] = case["default"]["lr"] is None and bool(fastai_near)
                case["edge_fallback"] = case["default"]["lr"] is not None and (
                    case["descent_band"]["lr"] is None
                )
                cases.append(case)
    summary: dict[str, Any] = {}
    for rule in rules:
        ratios = [c[rule]["ratio"] for c in cases]
        summary[rule] = {
            "geomean_ratio": geomean(ratios),
            "median_ratio": float(np.median(ratios)),
            "within_5pct": float(np.mean([r <= NEAR for r in ratios])),
            "declined": sum(c[rule]["lr"] is None for c in cases),
        }
    return {
        "cases": cases,
        "summary": summary,
        "false_declines": sum(c["false_decline"] for c in cases),
        "false_declines_descent_band": sum(
            c["fastai_near"] and c["descent_band"]["lr"] is None for c in cases
        ),
        "edge_fallbacks": sum(c["edge_fallback"] for c in cases),
        "n": len(cases),
    }


# --------------------------------------------------------------------------- output


def _fmt_median(m: dict[str, Any], key: str) -> str:
    n = m["studies"]
    value = f"{m[key]:,.1f}" if key == "median_trials" else f"{m[key]:,.0f}"
    if m["reached"] * 2 < n:
        return f">{m['n_trials']} (n.r.)" if key == "median_trials" else f">= {value}"
    if m["reached"] * 2 == n:
        return f">= {value}"
    return value


def _comparison_tables(
    label: str, ratios: dict[str, Any], placements: dict[str, Any]
) -> list[str]:
    lines = []
    if ratios:
        lines += [
            f"Geometric mean over {label} of median(method) / median(plain base):",
            "",
            "| method | vs | tasks | trials ratio | steps ratio | tasks later than the base |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for method, r in ratios.items():
            lines.append(
                f"| {method} | {r['vs']} | {r['tasks']} | {r['trial_ratio_geomean']:.2f} | "
                f"{r['step_ratio_geomean']:.2f} | {r['tasks_later_than_base']} |"
            )
        lines.append("")
    if placements:
        lines += [
            f"Placement `offset` against `band`, same base sampler, {label} (geometric mean "
            "of median(offset) / median(band); sweep steps to target: the sum over the tasks "
            "of the medians, band -> offset):",
            "",
            "| base | tasks | trials ratio | steps ratio | sweep steps ratio | sweep steps "
            "to target, summed | tasks earlier / later |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for base, p in placements.items():
            old, new = p["sweep_steps_total"]
            lines.append(
                f"| {base} | {p['tasks']} | {p['trial_ratio_geomean']:.2f} | "
                f"{p['step_ratio_geomean']:.2f} | {p['sweep_step_ratio_geomean']:.2f} | "
                f"{old:,.0f} -> {new:,.0f} | {p['tasks_earlier']} / {p['tasks_later']} |"
            )
        lines.append("")
    return lines


def write_markdown(result: dict[str, Any], path: Path) -> str:
    from studies.tables.tasks import TASKS_BY_NAME

    cfg = result["config"]
    lines = [
        "# Table study: trials and steps to a near-best configuration",
        "",
        f"Command: `{cfg['command']}` ({cfg['studies_run']} studies run in "
        f"{cfg['total_minutes']:.1f} min, {cfg['studies_reused']} reused from `studies.jsonl`; "
        f"{cfg['study_minutes_summed']:.1f} min of study time summed over all, each study "
        f"single-process and seeded). {cfg['n_seeds']} study "
        f"seeds per task, method and case; at most {cfg['n_trials']} trials per study (a "
        f"study that never reaches the target counts as {cfg['n_trials'] + 1} trials and all "
        "its steps, a lower bound; 'n.r.' marks a median that is such a study, '>=' one that "
        "averages it with a study that reached it). Target: a configuration whose seed-mean "
        "table loss is within 5% of the table's best. Steps: training steps plus recorded "
        "sweep steps. Placement `band`: the sampler's behaviour before the change "
        "(`sample_independent` inside the sweep's band); `offset`: the learned relative "
        f"placement. {cfg['placement_note']} Code: commit `{cfg['code_commit']}` (the run's "
        "checkout; uncommitted changes not included).",
        "",
    ]
    for case in CASES:
        block = result["summary"].get(case)
        if block is None:
            continue
        lines += [f"## {CASE_TITLES[case]}", ""]
        groups = [("all tasks", block)] + [
            (f"{role.replace('_', '-')} tasks only", sub) for role, sub in block["by_role"].items()
        ]
        for label, group in groups:
            lines += _comparison_tables(label, group["ratios"], group["placements"])
        for task, rows in block["tasks"].items():
            t = TASKS_BY_NAME[task]
            lines += [
                f"### {task} ({t.role})",
                "",
                t.description + ".",
                "",
                "| method | reached | trials to target | steps to target | sweep steps to "
                "target | sweep steps per trial (mean) |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for method, m in rows.items():
                lines.append(
                    f"| {method} | {m['reached']}/{m['studies']} | "
                    f"{_fmt_median(m, 'median_trials')} | {_fmt_median(m, 'median_steps')} | "
                    f"{m['median_sweep_steps_to_target']:,.0f} | "
                    f"{m['mean_sweep_steps_per_trial']:.0f} |"
                )
            lines.append("")
    for role, ps in result["suggestions"].items():
        lines += [
            f"## Point suggestion (`suggest()`), {role} tasks ({ps['n']} sweeps)",
            "",
            "Ratio: seed-mean table loss at the suggested rate / the setting's best; a "
            "declined sweep scores the setting's worst seed-mean loss. "
            "`fastai_minimum_div10` is fastai's minimum/10 as fastai computes it (no "
            "descent check, never declines); the others are `optuna_lrrange.core` rules.",
            "",
            "| rule | geo-mean ratio | median | within 5% | declined |",
            "|---|---:|---:|---:|---:|",
        ]
        for rule, s in ps["summary"].items():
            lines.append(
                f"| {rule} | {s['geomean_ratio']:.3f} | {s['median_ratio']:.3f} | "
                f"{100 * s['within_5pct']:.0f}% | {s['declined']} |"
            )
        lines += [
            "",
            f"False declines (no rate where a fastai rule finds one within 5% of the "
            f"best): {ps['false_declines']} of {ps['n']} for the default suggestion, "
            f"{ps['false_declines_descent_band']} for `descent_band` alone (the default "
            f"before the edge fallback). The default suggestion read "
            f"{ps['edge_fallbacks']} sweeps by their edge (`edge_div10`), where "
            "`descent_band` declined.",
            "",
        ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from studies.tables.tasks import TASKS_BY_NAME

    cases = [c for c in CASES if c in result["summary"]]
    n_tasks = max(len(result["summary"][c]["tasks"]) for c in cases)
    # One panel per row, as wide as the tasks need: the names are read at an angle below.
    fig, axes = plt.subplots(
        len(cases), 1, figsize=(max(10.0, 0.8 * n_tasks), 5.5 * len(cases)), squeeze=False
    )
    for ax, case in zip(axes[:, 0], cases, strict=True):
        block = result["summary"][case]["tasks"]
        tasks = list(block)
        methods = [m for m in METHODS if any(m in block[t] for t in tasks)]
        width = 0.8 / max(1, len(methods))
        for i, method in enumerate(methods):
            ys = [
                block[t][method]["median_trials"] if method in block[t] else np.nan for t in tasks
            ]
            hatch = {None: "", "band": "//", "offset": ""}[placement_of(method)]
            alpha = {None: 0.35, "band": 0.6, "offset": 1.0}[placement_of(method)]
            ax.bar(
                np.arange(len(tasks)) + (i - (len(methods) - 1) / 2) * width,
                ys,
                width,
                color=COLORS[base_of(method)],
                alpha=alpha,
                hatch=hatch,
                edgecolor="k",
                linewidth=0.4,
                label=method,
            )
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(tasks)))
        roles = {t: TASKS_BY_NAME[t].role for t in tasks}
        ax.set_xticklabels(
            [
                t + (f" ({roles[t].replace('_', '-')})" if roles[t] != "design" else "")
                for t in tasks
            ],
            fontsize=7,
            rotation=35,
            ha="right",
        )
        ax.set_ylabel("trials to target (median over study seeds)")
        ax.set_title(CASE_TITLES[case], fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=9, loc="lower center")
    fig.suptitle(
        "Trials to a configuration within 5% of the table's best (lower is better; "
        f"censored at {result['config']['n_trials'] + 1})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 60 s)")
    parser.add_argument("--jobs", type=int, default=1, help="studies run at a time")
    parser.add_argument("--seeds", type=int, default=None, help="study seeds (default 20)")
    parser.add_argument("--trials", type=int, default=None, help="trials per study (at most)")
    parser.add_argument("--tasks", default=None, help="comma-separated task names")
    parser.add_argument("--methods", default=None, help="comma-separated methods")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)

    from studies.tables.tasks import TASKS

    names = select(parser, "--tasks", [t.name for t in TASKS], args.tasks)
    methods = select(parser, "--methods", list(METHODS), args.methods)
    if args.quick:
        names = list(QUICK_TASKS) if not args.tasks else names
        methods = [m for m in methods if base_of(m) != "GP"]
        n_seeds, n_trials = args.seeds or 2, args.trials or 8
        out = args.out or HERE / "results" / "quick"
        grid, seeds, pool_seeds = QUICK_GRID, QUICK_TABLE_SEEDS, QUICK_POOL_SEEDS
    else:
        n_seeds, n_trials = args.seeds or 20, args.trials or 100
        out = args.out or HERE / "results"
        grid, seeds, pool_seeds = GRID, TABLE_SEEDS, POOL_SEEDS
    out.mkdir(parents=True, exist_ok=True)
    # The full tables are a committed result shared by every run; a quick run trains its
    # small ones into its own folder.
    tables_path = out / "tables.json" if args.quick else HERE / "results" / "tables.json"
    tables = Tables(tables_path)
    tables.ensure(names, grid, seeds, pool_seeds, args.jobs)

    t0 = time.perf_counter()
    jobs = [
        (task, case, method, seed, n_trials, str(tables_path), args.quick)
        for method in methods
        for case in CASES
        for task in names
        for seed in range(n_seeds)
    ]
    cache_path = out / "studies.jsonl"
    done: dict[tuple[Any, ...], dict[str, Any]] = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            rec = json.loads(line)
            done[(rec["task"], rec["case"], rec["method"], rec["seed"], rec["n_trials"])] = rec
    studies = [done[j[:5]] for j in jobs if j[:5] in done]
    todo = [j for j in jobs if j[:5] not in done]
    print(f"{len(studies)} studies reused from {cache_path}, {len(todo)} to run", flush=True)

    def keep(rec: dict[str, Any], i: int) -> None:
        studies.append(rec)
        with cache_path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if i % 20 == 0 or i == len(todo):
            print(
                f"[{i}/{len(todo)} {time.perf_counter() - t0:5.0f}s] {rec['task']} "
                f"{rec['case']} {rec['method']} seed {rec['seed']}: "
                f"{rec['trials_to_target']} trials",
                flush=True,
            )

    if args.jobs > 1 and todo:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for i, rec in enumerate(pool.imap_unordered(run_study, todo), 1):
                keep(rec, i)
    else:
        for i, job in enumerate(todo, 1):
            keep(run_study(job), i)
    total = time.perf_counter() - t0

    from studies.tables.tasks import TASKS_BY_NAME

    roles = sorted({TASKS_BY_NAME[n].role for n in names})
    suggestions = {
        role: point_suggestions(
            tables, [n for n in names if TASKS_BY_NAME[n].role == role], grid, seeds, pool_seeds
        )
        for role in roles
    }
    command = "python -m studies.tables.run" + (" --quick" if args.quick else "")
    for flag, value in (
        ("--seeds", args.seeds),
        ("--trials", args.trials),
        ("--tasks", args.tasks),
        ("--methods", args.methods),
        ("--out", args.out),
    ):
        if value is not None:
            command += f" {flag} {shlex.quote(str(value))}"
    if args.jobs > 1:
        command += f" --jobs {args.jobs}"
    import subprocess

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    ).stdout.strip()
    config = {
        "command": command,
        "code_commit": commit or None,
        "n_seeds": n_seeds,
        "n_trials": n_trials,
        "methods": methods,
        "tasks": {n: TASKS_BY_NAME[n].role for n in names},
        "grid": list(grid),
        "table_seeds": list(seeds),
        "pool_seeds": list(pool_seeds),
        "near": NEAR,
        "total_minutes": total / 60,
        "studies_run": len(todo),
        "studies_reused": len(jobs) - len(todo),
        "study_minutes_summed": sum(s["wall_seconds"] for s in studies) / 60,
        "placement_note": "Both placements measured.",
    }
    studies.sort(
        key=lambda s: (names.index(s["task"]), s["case"], METHODS.index(s["method"]), s["seed"])
    )
    result = {
        "config": config,
        "summary": summarise(studies, names),
        "suggestions": suggestions,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    text = write_markdown(result, out / "results.md")
    plot(result, out / "trials_to_target.png")
    print(text)
    print(f"wrote {out} in {total / 60:.1f} min")


if __name__ == "__main__":
    main()
