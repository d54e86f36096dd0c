"""The oracle-grid study: how good is each suggestion rule, measured against a dense grid?

For every task (see ``tasks.py``): train to a fixed budget at each rate of a dense grid
of constant learning rates with several seeds (the oracle), run several independent range
tests from fresh initialisations, let every rule in ``optuna_lrrange.core.RULES`` suggest
a rate from each, train the task at exactly that rate with the oracle's seeds, and score

    ratio = seed-mean validation loss at the suggestion / the oracle's best seed-mean loss.

A rule that gives no suggestion scores the worst seed-mean loss on the grid. The band
(``steepest_band``'s, which ``suggest`` attaches to every rule) is scored by whether it
holds a grid rate within 5% of the oracle best, and by its width in decades.

Rules may be tuned only on the ``design`` tasks; the ``held_out`` tasks are evaluated.

Run ``python -m studies.oracle.run`` (full, about 15-30 minutes on one core) or with
``--quick`` (a smoke run for CI, < 60 s). Training results are cached in
``results/cache.json`` (by task, rate rounded to 4 significant digits, and seed), so
changing a rule only trains the new rates.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
import csv
import json
import math
import multiprocessing
import os
from pathlib import Path
import statistics
import time
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

#: The oracle grid: 25 constant rates, log-spaced over 1e-5..3 (0.23 decades apart).
GRID = tuple(float(x) for x in np.geomspace(1e-5, 3.0, 25))
ORACLE_SEEDS = (0, 1, 2)
SWEEP_SEEDS = (1000, 1001, 1002, 1003, 1004, 1005)
#: "Near-optimal": a seed-mean validation loss within 5% of the oracle best.
NEAR = 1.05

QUICK_TASKS = ("breast_cancer_mlp_adamw", "diabetes_mlp_sgd")
QUICK_GRID = tuple(float(x) for x in np.geomspace(1e-5, 3.0, 10))
QUICK_ORACLE_SEEDS = (0,)
QUICK_SWEEP_SEEDS = (1000, 1001)

#: Shifts (decades below the steepest point) tried on the design tasks.
SHIFTS = tuple(round(x, 2) for x in np.arange(-1.0, 2.01, 0.05))
#: Drop levels and band widths (decades) tried for ``descent_band`` on the design tasks.
DROPS = (0.3, 0.5, 0.7, 0.9)
BAND_WIDTHS = (1.0, 1.25, 1.5)
PLACEMENTS = tuple(round(x, 2) for x in np.arange(-2.0, 1.01, 0.05))

OPTIMIZERS = {
    "_sgd": "SGD+momentum",
    "_plain_sgd": "SGD",
    "_adam": "Adam",
    "_adamw": "AdamW",
    "_rmsprop": "RMSprop",
}


def rate_key(lr: float) -> str:
    return f"{lr:.4e}"


# ---------------------------------------------------------------------------------------
# Training with a cache


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _train_job(job: tuple[str, str, int]) -> tuple[str, str, int, float | None, float]:
    from studies.oracle.tasks import TASKS_BY_NAME, train

    name, key, seed = job
    final, init = train(TASKS_BY_NAME[name], float(key), seed)
    return name, key, seed, (final if math.isfinite(final) else None), init


class Cache:
    """Validation losses by ``task|rate|seed`` (``[final or None, initial]``) and sweeps."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = json.loads(path.read_text()) if path.exists() else {}
        self.runs: dict[str, list[float | None]] = raw.get("runs", {})
        self.sweeps: dict[str, dict[str, Any]] = raw.get("sweeps", {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"runs": self.runs, "sweeps": self.sweeps}, sort_keys=True))
        os.replace(tmp, self.path)

    @staticmethod
    def key(task: str, lr_key: str, seed: int) -> str:
        return f"{task}|{lr_key}|{seed}"

    def ensure(self, jobs: Iterable[tuple[str, float, int]], n_jobs: int) -> None:
        """Trains every ``(task, lr, seed)`` not cached yet."""
        todo = sorted(
            {
                (task, rate_key(lr), seed)
                for task, lr, seed in jobs
                if self.key(task, rate_key(lr), seed) not in self.runs
            }
        )
        if not todo:
            return
        t0 = time.time()
        print(f"  training {len(todo)} runs ...", flush=True)
        if n_jobs > 1:
            with multiprocessing.get_context("spawn").Pool(n_jobs, _init_worker) as pool:
                results = pool.imap_unordered(_train_job, todo, chunksize=4)
                for i, (task, key, seed, final, init) in enumerate(results):
                    self.runs[self.key(task, key, seed)] = [final, init]
                    if i % 50 == 49:
                        self.save()
        else:
            _init_worker()
            for i, job in enumerate(todo):
                task, key, seed, final, init = _train_job(job)
                self.runs[self.key(task, key, seed)] = [final, init]
                if i % 50 == 49:
                    self.save()
        self.save()
        print(f"  ... {time.time() - t0:.0f} s", flush=True)

    def loss(self, task: str, lr: float, seeds: Sequence[int]) -> float:
        """Seed-mean validation loss, a diverged run scored as its loss at initialisation."""
        values = []
        for seed in seeds:
            final, init = self.runs[self.key(task, rate_key(lr), seed)]
            assert init is not None
            values.append(init if final is None or final > init else final)
        return float(np.mean(values))

    def seed_losses(self, task: str, lr: float, seeds: Sequence[int]) -> list[float]:
        out = []
        for seed in seeds:
            final, init = self.runs[self.key(task, rate_key(lr), seed)]
            assert init is not None
            out.append(init if final is None or final > init else final)
        return out


def ensure_sweeps(cache: Cache, task_names: Sequence[str], seeds: Sequence[int]) -> None:
    from studies.oracle.tasks import TASKS_BY_NAME, range_test

    _init_worker()
    changed = False
    for name in task_names:
        for seed in seeds:
            key = f"{name}|{seed}"
            if key not in cache.sweeps:
                sweep = range_test(TASKS_BY_NAME[name], seed)
                cache.sweeps[key] = {
                    "lrs": list(sweep.lrs),
                    "losses": [x if math.isfinite(x) else None for x in sweep.losses],
                    "stop_reason": sweep.stop_reason,
                }
                changed = True
    if changed:
        cache.save()


def sweep_arrays(cache: Cache, task: str, seed: int) -> tuple[list[float], list[float]]:
    raw = cache.sweeps[f"{task}|{seed}"]
    return raw["lrs"], [math.nan if x is None else x for x in raw["losses"]]


# ---------------------------------------------------------------------------------------
# Analysis


def geomean(xs: Sequence[float]) -> float:
    return float(math.exp(statistics.fmean(math.log(x) for x in xs)))


def interp_loss(grid: Sequence[float], curve: Sequence[float], lr: float) -> float:
    """The seed-mean curve read at ``lr`` (linear in log lr; clamped beyond the grid ends,
    except that a rate above the grid scores the worst grid value)."""
    x = np.log10(grid)
    if lr > grid[-1]:
        return float(np.max(curve))
    return float(np.interp(math.log10(lr), x, curve))


def draw_in(
    grid: Sequence[float], curve: Sequence[float], low: float, high: float, n: int = 101
) -> tuple[float, float]:
    """What a rate drawn log-uniformly from ``[low, high]`` scores, read off the seed-mean
    grid curve: the geometric mean of loss / best over ``n`` evenly spaced log-rates, and
    the share of them within 5% of the best. A sampler that draws inside a band (Random
    does, TPE does at first) gets about this."""
    best = float(np.min(curve))
    ratios = [
        interp_loss(grid, curve, float(lr)) / best
        for lr in np.logspace(math.log10(low), math.log10(high), n)
    ]
    return geomean(ratios), float(np.mean([r <= NEAR for r in ratios]))


def refined_optimum(grid: Sequence[float], curve: Sequence[float]) -> float:
    """log10 of the oracle best refined by a parabola through the argmin and its neighbours."""
    i = int(np.argmin(curve))
    x = np.log10(grid)
    if i == 0 or i == len(grid) - 1:
        return float(x[i])
    y0, y1, y2 = curve[i - 1], curve[i], curve[i + 1]
    denom = y0 - 2 * y1 + y2
    if denom <= 0:
        return float(x[i])
    h = x[i + 1] - x[i]
    return float(x[i] + h * 0.5 * (y0 - y2) / denom)


def summarise(ratios: Sequence[float], fails: int = 0) -> dict[str, float]:
    return {
        "n": len(ratios),
        "geomean": geomean(ratios),
        "median": float(np.median(ratios)),
        "worst": float(np.max(ratios)),
        "within_5pct": float(np.mean([r <= NEAR for r in ratios])),
        "failed": fails,
    }


def _draw_summary(draws: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Over sweeps: the geometric mean of the bands' draw scores and the mean share of
    near-optimal rates in them (see :func:`draw_in`)."""
    return {
        "draw_geomean": geomean([g for g, _ in draws]),
        "draw_share_near": float(np.mean([share for _, share in draws])),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a < 60 s smoke run for CI")
    parser.add_argument("--jobs", type=int, default=1, help="training processes (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)

    import optuna_lrrange as ol
    from optuna_lrrange.core import BAND_RULES, RULES
    from studies.oracle.tasks import TASKS

    if args.quick:
        tasks = [t for t in TASKS if t.name in QUICK_TASKS]
        grid, seeds, sweep_seeds = QUICK_GRID, QUICK_ORACLE_SEEDS, QUICK_SWEEP_SEEDS
        out = args.out or HERE / "results" / "quick"
    else:
        tasks = list(TASKS)
        grid, seeds, sweep_seeds = GRID, ORACLE_SEEDS, SWEEP_SEEDS
        out = args.out or HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(out / "cache.json")
    names = [t.name for t in tasks]
    rules = list(RULES)
    t_start = time.time()

    print("1/4 the oracle grid", flush=True)
    cache.ensure(((t, lr, s) for t in names for lr in grid for s in seeds), args.jobs)

    print("2/4 range tests", flush=True)
    ensure_sweeps(cache, names, sweep_seeds)

    print("3/4 training at every suggestion", flush=True)
    suggestions: dict[tuple[str, int, str], Any] = {}
    for t in names:
        for s in sweep_seeds:
            lrs, losses = sweep_arrays(cache, t, s)
            for rule in rules:
                suggestions[t, s, rule] = ol.suggest(lrs, losses, method=rule)
    cache.ensure(
        (
            (t, sug.lr, seed)
            for (t, _, _), sug in suggestions.items()
            if sug.lr is not None
            for seed in seeds
        ),
        args.jobs,
    )

    print("4/4 tables and plots", flush=True)
    per_task: dict[str, dict[str, Any]] = {}
    cases: list[dict[str, Any]] = []
    for task in tasks:
        t = task.name
        curve = [cache.loss(t, lr, seeds) for lr in grid]
        i_best = int(np.argmin(curve))
        best, worst = curve[i_best], float(np.max(curve))
        near = [lr for lr, c in zip(grid, curve, strict=True) if c <= NEAR * best]
        log_opt = refined_optimum(grid, curve)
        per_task[t] = {
            "role": task.role,
            "description": task.description,
            "optimizer": OPTIMIZERS[task.optimizer.__name__],
            "epochs": task.epochs,
            "grid": list(grid),
            "curve": curve,
            "seed_curves": [
                [cache.seed_losses(t, lr, seeds)[k] for lr in grid] for k in range(len(seeds))
            ],
            "oracle_lr": grid[i_best],
            "oracle_lr_refined": 10**log_opt,
            "best": best,
            "worst": worst,
            "near_rates": near,
            "whole_range_draw": draw_in(grid, curve, grid[0], grid[-1]),
        }
        for s in sweep_seeds:
            lrs, losses = sweep_arrays(cache, t, s)
            steep = ol.suggest(lrs, losses, method="steepest_band").lr
            for rule in rules:
                sug = suggestions[t, s, rule]
                band = sug.band
                loss = worst if sug.lr is None else cache.loss(t, sug.lr, seeds)
                cases.append(
                    {
                        "task": t,
                        "role": task.role,
                        "sweep_seed": s,
                        "stop_reason": cache.sweeps[f"{t}|{s}"]["stop_reason"],
                        "sweep_steps": len(lrs),
                        "rule": rule,
                        "lr": sug.lr,
                        "reason": sug.reason,
                        "loss": loss,
                        "ratio": loss / best,
                        "band_low": None if band is None else band[0],
                        "band_high": None if band is None else band[1],
                        "band_has_near": band is not None
                        and any(band[0] <= lr <= band[1] for lr in near),
                        "band_decades": None if band is None else math.log10(band[1] / band[0]),
                        "band_draw": None if band is None else draw_in(grid, curve, *band),
                        "steepest_lr": steep,
                        "shift_decades": None
                        if steep is None
                        else math.log10(steep) - math.log10(grid[i_best]),
                        "shift_refined": None if steep is None else math.log10(steep) - log_opt,
                    }
                )

    # Per rule and role.
    table: dict[str, dict[str, dict[str, float]]] = {}
    for role in ("design", "held_out"):
        table[role] = {}
        for rule in rules:
            rows = [c for c in cases if c["role"] == role and c["rule"] == rule]
            if rows:
                fails = sum(c["lr"] is None for c in rows)
                table[role][rule] = summarise([c["ratio"] for c in rows], fails)
    per_task_rule = {
        t: {
            rule: geomean([c["ratio"] for c in cases if c["task"] == t and c["rule"] == rule])
            for rule in rules
        }
        for t in names
    }
    # Each band rule's own band (one per sweep).
    bands: dict[str, dict[str, dict[str, float]]] = {}
    for role in ("design", "held_out"):
        bands[role] = {}
        for band_rule in BAND_RULES:
            rows = [c for c in cases if c["role"] == role and c["rule"] == band_rule]
            if not rows:
                continue
            widths = [c["band_decades"] for c in rows if c["band_decades"] is not None]
            bands[role][band_rule] = {
                "n": len(rows),
                "has_near": float(np.mean([c["band_has_near"] for c in rows])),
                "no_band": sum(c["band_decades"] is None for c in rows),
                "median_decades": float(np.median(widths)) if widths else math.nan,
                "max_decades": float(np.max(widths)) if widths else math.nan,
                # A sweep without a band leaves the whole range to the sampler.
                **_draw_summary(
                    [c["band_draw"] or per_task[c["task"]]["whole_range_draw"] for c in rows]
                ),
            }
        sweeps = [c for c in cases if c["role"] == role and c["rule"] == rules[0]]
        if sweeps:
            whole = math.log10(grid[-1] / grid[0])
            bands[role]["whole grid range (no narrowing)"] = {
                "n": len(sweeps),
                "has_near": 1.0,
                "no_band": 0,
                "median_decades": whole,
                "max_decades": whole,
                **_draw_summary([per_task[c["task"]]["whole_range_draw"] for c in sweeps]),
            }
    band_rows = [c for c in cases if c["rule"] == "steepest_band"]
    # Shift of the oracle best below the sweep's steepest point.
    shifts = {}
    for t in names:
        rows = [c for c in band_rows if c["task"] == t and c["shift_decades"] is not None]
        shifts[t] = {
            "role": per_task[t]["role"],
            "optimizer": per_task[t]["optimizer"],
            "epochs": per_task[t]["epochs"],
            "oracle_lr": per_task[t]["oracle_lr"],
            "oracle_lr_refined": per_task[t]["oracle_lr_refined"],
            "sweeps_with_a_steepest_point": len(rows),
        }
        if rows:  # none when no sweep of the task descends
            shifts[t].update(
                {
                    "steepest_median": float(np.median([c["steepest_lr"] for c in rows])),
                    "shift_median": float(np.median([c["shift_decades"] for c in rows])),
                    "shift_refined_median": float(np.median([c["shift_refined"] for c in rows])),
                    "shift_min": float(np.min([c["shift_refined"] for c in rows])),
                    "shift_max": float(np.max([c["shift_refined"] for c in rows])),
                }
            )
    # Tuning on the design tasks only, read off the seed-mean grid curve (no training):
    # each base rule's rate x 10**-shift, and the band's settings.
    design = [t for t in names if per_task[t]["role"] == "design"]
    tuning = tune_on_design(cache, per_task, design, sweep_seeds, grid)
    hindsight = hindsight_floor(cache, per_task, sweep_seeds, grid)

    result = {
        "settings": {
            "quick": args.quick,
            "grid": list(grid),
            "oracle_seeds": list(seeds),
            "sweep_seeds": list(sweep_seeds),
            "near": NEAR,
            "range_test": ol.RangeTestConfig().to_dict(),
            "default_method": ol.core.DEFAULT_METHOD,
            "diverged_run_scored_as": "the validation loss at initialisation (same seed)",
            "failed_suggestion_scored_as": "the worst seed-mean loss on the grid",
        },
        "rules": table,
        "per_task_rule_geomean": per_task_rule,
        "band": bands,
        "shift": shifts,
        "tuning_design_only": tuning,
        "hindsight_floor": hindsight,
        "tasks": per_task,
    }
    (out / "results.json").write_text(json.dumps(result, indent=1))
    with open(out / "cases.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(cases[0]))
        writer.writeheader()
        writer.writerows(cases)
    md = render_markdown(result, tasks, rules)
    (out / "results.md").write_text(md)
    print(md)
    if not args.no_plots:
        plot(result, cases, rules, out)
    print(f"done in {time.time() - t_start:.0f} s; results in {out}")


#: Base rates the shifted-rule family is built on (each a function of a sweep).
def _bases() -> dict[str, Any]:
    from optuna_lrrange import core

    return {
        "steepest_band point": lambda x, y: core.steepest_band(x, y).lr,
        "robust_steepest (unshifted)": lambda x, y: (
            core.RULES["robust_steepest"](x, y, shift_decades=0.0).lr
        ),
        "sma_derivative": lambda x, y: core.sma_derivative(x, y).lr,
        "steepest": lambda x, y: core.steepest(x, y).lr,
        "valley": lambda x, y: core.valley(x, y).lr,
        "minimum (EMA)": lambda x, y: (
            None if (lr := core.minimum_div10(x, y).lr) is None else lr * 10
        ),
        **{
            f"descent_band drop point ({q:.0%} of the drop)": (
                lambda x, y, q=q: core.descent_band(x, y, drop=q, shift_decades=0.0).lr
            )
            for q in DROPS
        },
    }


def tune_on_design(
    cache: Cache,
    per_task: dict[str, dict[str, Any]],
    design: Sequence[str],
    sweep_seeds: Sequence[int],
    grid: Sequence[float],
) -> dict[str, Any]:
    """Shift curves per base rule and band settings, on the design tasks only."""
    from optuna_lrrange import core

    families: dict[str, list[dict[str, float]]] = {}
    for name, base in _bases().items():
        rows = []
        base_lrs = {(t, s): base(*sweep_arrays(cache, t, s)) for t in design for s in sweep_seeds}
        for shift in SHIFTS:
            ratios = []
            for (t, _), lr in base_lrs.items():
                pt = per_task[t]
                if lr is None:
                    ratios.append(pt["worst"] / pt["best"])
                else:
                    ratios.append(interp_loss(grid, pt["curve"], lr * 10**-shift) / pt["best"])
            if ratios:
                rows.append({"shift": shift, **summarise(ratios)})
        families[name] = rows
    band_rows = []
    for frac in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        for max_decades in (1.0, 1.25, 1.5):
            has, widths = [], []
            for t in design:
                near = per_task[t]["near_rates"]
                for s in sweep_seeds:
                    b = core.steepest_band(
                        *sweep_arrays(cache, t, s), frac=frac, max_decades=max_decades
                    ).band
                    has.append(b is not None and any(b[0] <= lr <= b[1] for lr in near))
                    if b is not None:
                        widths.append(math.log10(b[1] / b[0]))
            if has:
                band_rows.append(
                    {
                        "frac": frac,
                        "max_decades": max_decades,
                        "has_near": float(np.mean(has)),
                        "median_decades": float(np.median(widths)) if widths else math.nan,
                    }
                )
    # descent_band: where to put a band of a given width around the drop point (drop 0.7).
    points = {}
    for t in design:
        for s in sweep_seeds:
            lr = core.descent_band(*sweep_arrays(cache, t, s), shift_decades=0.0).lr
            if lr is not None:
                points[t, s] = math.log10(lr)
    placement_rows = []
    for width in BAND_WIDTHS:
        cover = {}
        for low in PLACEMENTS:
            has = []
            for (t, _), p in points.items():
                near = np.log10(per_task[t]["near_rates"])
                has.append(
                    bool(np.any((near >= p + low - 1e-9) & (near <= p + low + width + 1e-9)))
                )
            cover[low] = float(np.mean(has)) if has else math.nan
        if cover:
            top = max(cover.values())
            lows = [low for low, c in cover.items() if c == top]
            placement_rows.append(
                {"width": width, "has_near": top, "low_min": min(lows), "low_max": max(lows)}
            )
    return {
        "design_tasks": list(design),
        "shift_families": families,
        "band": band_rows,
        "descent_band_placement": placement_rows,
    }


def hindsight_floor(
    cache: Cache,
    per_task: dict[str, dict[str, Any]],
    sweep_seeds: Sequence[int],
    grid: Sequence[float],
) -> dict[str, dict[str, float]]:
    """How well ``descent_band``'s drop point could do if each task's best shift below it
    were known (chosen per task in hindsight, read off the grid curve): what is left is the
    sweep-to-sweep scatter, which no fixed rule can remove."""
    from optuna_lrrange import core

    out: dict[str, dict[str, float]] = {}
    by_role: dict[str, list[float]] = {}
    for t, pt in per_task.items():
        points = [
            core.descent_band(*sweep_arrays(cache, t, s), shift_decades=0.0).lr
            for s in sweep_seeds
        ]
        best_ratios: list[float] | None = None
        for shift in SHIFTS:
            ratios = [
                (pt["worst"] if p is None else interp_loss(grid, pt["curve"], p * 10**-shift))
                / pt["best"]
                for p in points
            ]
            if best_ratios is None or geomean(ratios) < geomean(best_ratios):
                best_ratios = ratios
        by_role.setdefault(pt["role"], []).extend(best_ratios or [])
    for role, ratios in by_role.items():
        out[role] = summarise(ratios)
    return out


def render_markdown(result: dict[str, Any], tasks: Sequence[Any], rules: Sequence[str]) -> str:
    st = result["settings"]
    lines = [
        "# Oracle-grid study: results",
        "",
        f"Grid: {len(st['grid'])} rates, {st['grid'][0]:.0e}..{st['grid'][-1]:g}; oracle seeds "
        f"{st['oracle_seeds']}; range tests from seeds {st['sweep_seeds']}; "
        f"default method `{st['default_method']}`."
        + (" **Quick run: not the study's results.**" if st["quick"] else ""),
        "",
        "Ratio = seed-mean validation loss at the suggestion / oracle best (grid argmin). "
        "Diverged runs score their loss at initialisation; a failed suggestion scores the worst "
        "grid value.",
        "",
    ]
    for role, title in (("held_out", "Held-out tasks"), ("design", "Design tasks")):
        if not result["rules"].get(role):
            continue
        lines += [
            f"## {title}",
            "",
            "| rule | cases | geo-mean ratio | median | worst | within 5% | failed |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        ranked = sorted(result["rules"][role].items(), key=lambda kv: kv[1]["geomean"])
        for rule, r in ranked:
            lines.append(
                f"| `{rule}` | {r['n']} | {r['geomean']:.3f} | {r['median']:.3f} | "
                f"{r['worst']:.2f} | {100 * r['within_5pct']:.0f}% | {r['failed']} |"
            )
        lines += [
            "",
            "| band | sweeps | holds a near-optimal grid rate | no band | median width | "
            "max width | a log-uniform draw from it: geo-mean ratio | share within 5% |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for band_rule, b in result["band"][role].items():
            name = band_rule if band_rule.startswith("whole") else f"`{band_rule}`"
            lines.append(
                f"| {name} | {b['n']} | {100 * b['has_near']:.0f}% | {b['no_band']} | "
                f"{b['median_decades']:.2f} | {b['max_decades']:.2f} | "
                f"{b['draw_geomean']:.3f} | {100 * b['draw_share_near']:.0f}% |"
            )
        lines += [
            "",
            "A log-uniform draw: 101 evenly spaced log-rates across the band, read off the "
            "seed-mean grid curve (no training); a sweep without a band counts as the whole "
            "range. The last row is the same over the whole grid range (per task), what a "
            "sampler gets without narrowing.",
        ]
        floor = result["hindsight_floor"].get(role)
        if floor:
            lines += [
                "",
                "Hindsight floor: `descent_band`'s drop point shifted by each task's own best "
                f"shift (chosen per task after the fact) scores {floor['geomean']:.3f} "
                f"(median {floor['median']:.3f}, within 5%: {100 * floor['within_5pct']:.0f}%): "
                "the sweep-to-sweep scatter alone costs that much.",
            ]
        lines.append("")
    lines += [
        "## Per task (geo-mean ratio per rule)",
        "",
        "| task | role | oracle lr | best loss | " + " | ".join(f"`{r}`" for r in rules) + " |",
        "|---|---|---:|---:|" + "---:|" * len(rules),
    ]
    for task in tasks:
        pt = result["tasks"][task.name]
        per = result["per_task_rule_geomean"][task.name]
        lines.append(
            f"| {task.name} | {pt['role']} | {pt['oracle_lr']:.2e} | {pt['best']:.4f} | "
            + " | ".join(f"{per[r]:.3f}" for r in rules)
            + " |"
        )
    lines += [
        "",
        "## Where the oracle best sits relative to the sweep's steepest point",
        "",
        "Shift = log10(steepest point of the sweep) - log10(oracle best), in decades "
        "(positive: the best constant rate is below the steepest point). 'Refined' uses a "
        "parabola through the grid minimum; min/max over the sweeps.",
        "",
        "| task | role | optimizer | epochs | oracle lr | steepest (median) | shift | "
        "shift refined | min | max |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t, s in result["shift"].items():
        if "shift_median" not in s:
            lines.append(
                f"| {t} | {s['role']} | {s['optimizer']} | {s['epochs']} | {s['oracle_lr']:.2e} | "
                "no sweep descends | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {t} | {s['role']} | {s['optimizer']} | {s['epochs']} | {s['oracle_lr']:.2e} | "
            f"{s['steepest_median']:.2e} | {s['shift_median']:+.2f} | "
            f"{s['shift_refined_median']:+.2f} | {s['shift_min']:+.2f} | {s['shift_max']:+.2f} |"
        )
    tu = result["tuning_design_only"]
    if tu["design_tasks"]:
        lines += [
            "",
            "## Tuning on the design tasks only",
            "",
            f"Design tasks: {', '.join(tu['design_tasks'])}. Each base rule's rate x "
            "10**-shift, read off the seed-mean grid curve (interpolated in log lr; no "
            "training):",
            "",
            "| base rule | ratio at shift 0 | best shift | geo-mean there | within 5% there |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, rows in tu["shift_families"].items():
            if not rows:
                continue
            zero = min(rows, key=lambda r: abs(r["shift"]))
            best = min(rows, key=lambda r: (r["geomean"], -r["within_5pct"]))
            lines.append(
                f"| {name} | {zero['geomean']:.3f} | {best['shift']:+.2f} | "
                f"{best['geomean']:.3f} | {100 * best['within_5pct']:.0f}% |"
            )
        lines += [
            "",
            "Band settings (`frac`, `max_decades`) on the design tasks:",
            "",
            "| frac | max decades | holds a near-optimal rate | median width |",
            "|---:|---:|---:|---:|",
        ]
        for r in tu["band"]:
            lines.append(
                f"| {r['frac']} | {r['max_decades']} | {100 * r['has_near']:.0f}% | "
                f"{r['median_decades']:.2f} |"
            )
        lines += [
            "",
            "`descent_band`'s band on the design tasks: for each width, the largest share of "
            "sweeps whose band holds a near-optimal rate, and the placements of its low edge "
            "(decades from the drop point at 70% of the drop) that reach it:",
            "",
            "| width (decades) | holds a near-optimal rate | low edge from | to |",
            "|---:|---:|---:|---:|",
        ]
        for r in tu["descent_band_placement"]:
            lines.append(
                f"| {r['width']} | {100 * r['has_near']:.0f}% | {r['low_min']:+.2f} | "
                f"{r['low_max']:+.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(
    result: dict[str, Any], cases: list[dict[str, Any]], rules: Sequence[str], out: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(result["tasks"])
    ncol = 2
    nrow = math.ceil(len(tasks) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(13, 3.6 * nrow), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "ovs^Dpx*"
    for ax, t in zip(axes.flat, tasks, strict=False):
        pt = result["tasks"][t]
        grid = np.asarray(pt["grid"])
        for sc in pt["seed_curves"]:
            ax.plot(grid, sc, color="0.75", lw=0.8)
        ax.plot(grid, pt["curve"], color="k", lw=1.8, label="oracle (seed mean)")
        ax.axhline(NEAR * pt["best"], color="k", ls=":", lw=0.8, label="best + 5%")
        ax.plot([pt["oracle_lr"]], [pt["best"]], "k*", ms=12)
        ymin, ymax = pt["best"] * 0.9, pt["worst"] * 1.05
        rows = [c for c in cases if c["task"] == t]
        for k, rule in enumerate(rules):
            rr = [c for c in rows if c["rule"] == rule and c["lr"] is not None]
            ax.scatter(
                [c["lr"] for c in rr],
                [c["loss"] for c in rr],
                s=28,
                marker=markers[k % len(markers)],
                color=colors[k % len(colors)],
                label=rule,
                zorder=3,
                alpha=0.85,
            )
        level = 0
        for band_rule, color in (("steepest_band", "tab:green"), ("descent_band", "tab:purple")):
            band_rows = [c for c in rows if c["rule"] == band_rule and c["band_low"] is not None]
            for j, c in enumerate(band_rows):
                y = ymin + (ymax - ymin) * (0.03 + 0.022 * level)
                level += 1
                ax.plot(
                    [c["band_low"], c["band_high"]],
                    [y, y],
                    color=color,
                    lw=2.5,
                    alpha=0.7,
                    label=f"{band_rule} band (per sweep)" if j == 0 else None,
                )
        ax.set_xscale("log")
        ax.set_ylim(ymin, ymax)
        ax.set_title(f"{t} [{pt['role']}]", fontsize=10)
        ax.set_xlabel("constant learning rate")
        ax.set_ylabel("validation loss")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out / "oracle_curves.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9.5, 4))
    for i, t in enumerate(tasks):
        rows = [
            c
            for c in cases
            if c["task"] == t and c["rule"] == rules[0] and c["shift_refined"] is not None
        ]
        color = "tab:blue" if "SGD" in result["tasks"][t]["optimizer"] else "tab:orange"
        ax.scatter([c["shift_refined"] for c in rows], [i] * len(rows), color=color, alpha=0.7)
    ax.set_yticks(range(len(tasks)))
    ax.set_yticklabels([f"{t} ({result['tasks'][t]['role']})" for t in tasks], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(
        "log10(steepest point) - log10(oracle best)  [decades; blue SGD, orange adaptive]"
    )
    ax.set_title("How far the best constant rate sits below the sweep's steepest point")
    fig.tight_layout()
    fig.savefig(out / "shift.png", dpi=80)
    plt.close(fig)

    tu = result["tuning_design_only"]
    if tu["design_tasks"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, rows in tu["shift_families"].items():
            ax.plot([r["shift"] for r in rows], [r["geomean"] for r in rows], "-", label=name)
        ax.set_xlabel("shift below the base rule's rate (decades)")
        ax.set_ylabel("geo-mean ratio, design tasks")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set_title("Tuning on the design tasks only (grid-interpolated)")
        fig.tight_layout()
        fig.savefig(out / "tuning.png", dpi=80)
        plt.close(fig)


if __name__ == "__main__":
    main()
