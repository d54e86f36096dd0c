"""The head-to-head study: does narrowing the learning rate make Optuna find better models faster?

Five samplers tune the same objectives (``tasks.py``) with the same study seeds:

    LR(TPE)     LRRangeSampler(TPESampler(seed=s))
    TPE         TPESampler(seed=s)
    Random      RandomSampler(seed=s)
    LR(Random)  LRRangeSampler(RandomSampler(seed=s))
    LR(GP)      LRRangeSampler(GPSampler(seed=s))

Every study suggests the learning rate on ``[1e-6, 1]`` (log); the LRRangeSampler runs the
package's default range test (1e-7..10, 100 steps, the default rule's band) on the trial's
own model and samples inside the band. Each study runs in one process on in-memory
storage (the sweeps are written and read back through the storage all the same).

Measured per task: the best validation loss after n trials (median and interquartile range
over seeds); trials and training steps (sweep steps included) until a study first comes
within 5% of the best loss any method found on the task; the wall-time share of sweeps.

A second, small part runs LR(TPE) and TPE (and LR(TPE) with ``sweep_every=2``) with two
worker processes sharing one journal file per study, to show the sweeps and bands travel
between workers through the storage.

Run ``python -m studies.head_to_head.run`` (full; ``--jobs 2`` runs two studies at a time)
or ``--quick`` (a smoke run for CI, < 60 s, written to ``results/quick/``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import json
import math
import multiprocessing
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent

METHODS = ("LR(TPE)", "TPE", "Random", "LR(Random)", "LR(GP)")
#: "Reached the target": a best loss within 5% of the best any method found on the task.
NEAR = 1.05
#: Exceptions a trial may end with and the study carry on: the learning rate's suggestion
#: raises ValueError when a sweep's band collapses to a single point and TPE samples nan
#: from the zero-width distribution (a package bug, reported in the README). Such a trial
#: is recorded as failed and counts as a trial spent.
FAILURES = (ValueError,)
COLORS = {
    "LR(TPE)": "tab:red",
    "TPE": "tab:blue",
    "Random": "tab:gray",
    "LR(Random)": "tab:orange",
    "LR(GP)": "tab:green",
}


# --------------------------------------------------------------------------- one study


def _quiet() -> None:
    import logging

    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # A sweep whose band misses the range is logged as a warning per trial; it is recorded
    # on the trial (lrrange:reason) and counted in the results instead.
    logging.getLogger("optuna.lrrange").setLevel(logging.ERROR)


def make_sampler(
    method: str, seed: int, sweep_every: int = 1, placement: str = "band"
) -> tuple[Any, bool]:
    """``(sampler, narrowed)`` for a method name; ``placement`` is the LR methods'."""
    import optuna

    from optuna_lrrange import LRRangeSampler

    base: dict[str, Callable[[], Any]] = {
        "TPE": lambda: optuna.samplers.TPESampler(seed=seed),
        "Random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "GP": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    if method.startswith("LR(") and method.endswith(")"):
        inner = base[method[3:-1]]()
        # The main, long and parallel runs were measured with the band placement (the
        # default then); ``--placement offset`` reruns the long run with the offset.
        sampler = LRRangeSampler(
            inner, start_lr=1e-7, end_lr=10.0, sweep_every=sweep_every, placement=placement
        )
        return sampler, True
    return base[method](), False


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Per-trial numbers read back from the study's storage."""
    from optuna.trial import TrialState

    from optuna_lrrange import get_sweeps

    out = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL):
            continue
        complete = t.state == TrialState.COMPLETE
        sweeps = get_sweeps(t)
        band = t.user_attrs.get("lrrange:band_used")
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                # A failed trial (see FAILURES) has no value; it counts as a trial spent.
                "value": float(t.value) if complete else None,
                "lr": float(t.params["lr"]) if "lr" in t.params else None,
                "params": dict(t.params),
                "train_steps": int(t.user_attrs.get("train_steps", 0)),
                "sweep_steps": sum(len(s.lrs) for s in sweeps),
                "sweep_seconds": sum(float(s.info["seconds"]) for s in sweeps),
                "diverged": bool(t.user_attrs.get("diverged", False)),
                "band": None if band is None else [float(band[0]), float(band[1])],
                "reason": t.user_attrs.get("lrrange:reason"),
                "source": t.user_attrs.get("lrrange:source"),
                "anchor": t.user_attrs.get("lrrange:anchor"),
                "offset": t.user_attrs.get("lrrange:offset"),
                "worker": t.user_attrs.get("worker"),
            }
        )
    return out


#: The plain samplers: their studies are the same whatever the LR methods' placement.
BASES = ("TPE", "Random", "GP")


def _placement(study: dict[str, Any]) -> str:
    """The placement a study's LR sampler used (records before the option: the band)."""
    return "-" if study["method"] in BASES else study.get("placement", "band")


def read_studies(path: Path) -> list[dict[str, Any]]:
    """The records of a ``studies.jsonl`` file, one study (or result) per line."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_study(job: tuple[Any, ...]) -> dict[str, Any]:
    """One single-process study on in-memory storage: ``(task, method, seed, n_trials)``,
    and the LR methods' placement as a fifth item (``"band"`` without one)."""
    import optuna

    from studies.head_to_head.tasks import TASKS_BY_NAME, make_objective

    _quiet()
    task_name, method, seed, n_trials = job[:4]
    placement = job[4] if len(job) > 4 else "band"
    task = TASKS_BY_NAME[task_name]
    task.data()  # load (and cache) the data outside the timed part
    sampler, narrow = make_sampler(method, seed, placement=placement)
    study = optuna.create_study(sampler=sampler)
    start = time.perf_counter()
    study.optimize(make_objective(task, seed, narrow), n_trials=n_trials, catch=FAILURES)
    wall = time.perf_counter() - start
    return {
        "task": task_name,
        "method": method,
        "seed": seed,
        "placement": placement,
        "wall_seconds": wall,
        "trials": trial_records(study),
    }


# --------------------------------------------------------------------------- analysis


def best_so_far(trials: Sequence[dict[str, Any]]) -> list[float]:
    """The best loss after each trial (``inf`` until a trial completes)."""
    values = [math.inf if t["value"] is None else t["value"] for t in trials]
    return [float(v) for v in np.minimum.accumulate(values)]


def cumulative_steps(trials: Sequence[dict[str, Any]]) -> list[int]:
    return [int(v) for v in np.cumsum([t["train_steps"] + t["sweep_steps"] for t in trials])]


def to_target(study: dict[str, Any], target: float, n_trials: int) -> dict[str, Any]:
    """Trials and steps until the best loss first reaches ``target``.

    Not reached: ``n_trials + 1`` trials, and the study's total steps (a lower bound).
    """
    trials = study["trials"]
    best, steps = best_so_far(trials), cumulative_steps(trials)
    for i, b in enumerate(best):
        if b <= target:
            return {"reached": True, "trials": i + 1, "steps": steps[i]}
    return {"reached": False, "trials": n_trials + 1, "steps": steps[-1] if steps else 0}


def _q(values: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(values, dtype=float)
    return float(np.percentile(a, 25)), float(np.median(a)), float(np.percentile(a, 75))


def summarise(
    studies: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    n_trials: int,
    reference: Sequence[dict[str, Any]] = (),
    near: float = NEAR,
) -> dict[str, Any]:
    """Per task and method: the numbers of the tables. The target is ``near`` times (5%
    above) the best loss any study found, in ``studies`` or in ``reference`` (other studies
    of the same tasks that count only towards that best, such as the main run's for the
    long run)."""
    out: dict[str, Any] = {}
    for task in tasks:
        mine = [s for s in studies if s["task"] == task]
        pool = mine + [s for s in reference if s["task"] == task]
        best = min(t["value"] for s in pool for t in s["trials"] if t["value"] is not None)
        target = best * near
        rows: dict[str, Any] = {}
        for method in METHODS:
            ss = sorted((s for s in mine if s["method"] == method), key=lambda s: s["seed"])
            if not ss:
                continue
            hits = [to_target(s, target, n_trials) for s in ss]
            finals = [best_so_far(s["trials"])[-1] for s in ss]
            all_trials = [t for s in ss for t in s["trials"]]
            done = [t for t in all_trials if t["state"] == "COMPLETE"]
            shares = [sum(t["sweep_seconds"] for t in s["trials"]) / s["wall_seconds"] for s in ss]
            reasons = [t["reason"] for t in all_trials if t["reason"]]
            rows[method] = {
                "seeds": [s["seed"] for s in ss],
                "reached": sum(h["reached"] for h in hits),
                "trials_to_target": [h["trials"] for h in hits],
                "steps_to_target": [h["steps"] for h in hits],
                "median_trials_to_target": float(np.median([h["trials"] for h in hits])),
                "median_steps_to_target": float(np.median([h["steps"] for h in hits])),
                "final_best": finals,
                "final_best_q": _q(finals),
                "sweep_time_share_median": float(np.median(shares)),
                "wall_seconds_median": float(np.median([s["wall_seconds"] for s in ss])),
                "steps_per_study_median": float(
                    np.median([cumulative_steps(s["trials"])[-1] for s in ss])
                ),
                "failed_share": 1 - len(done) / len(all_trials),
                "diverged_share": sum(t["diverged"] for t in done) / max(1, len(done)),
                "band_fallback_share": len(reasons) / len(all_trials),
                "band_fallback_reasons": _reason_counts(reasons),
            }
        verdict = None
        if "LR(TPE)" in rows and "TPE" in rows:
            a, b = rows["LR(TPE)"], rows["TPE"]
            trial_ratio = a["median_trials_to_target"] / b["median_trials_to_target"]
            step_ratio = a["median_steps_to_target"] / b["median_steps_to_target"]
            pairs = list(zip(a["final_best"], b["final_best"], strict=True))
            verdict = {
                # Same seed, best after n trials: LR(TPE) lower / higher / equal than TPE.
                "final_best_wins": sum(x < y for x, y in pairs),
                "final_best_losses": sum(x > y for x, y in pairs),
                "trial_ratio": trial_ratio,
                "step_ratio": step_ratio,
                "met": trial_ratio <= 1 / 3 and step_ratio <= 1 / 2,
            }
        out[task] = {"best": best, "target": target, "methods": rows, "target_check": verdict}
    return out


def _reason_counts(reasons: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in reasons:
        key = r.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


# --------------------------------------------------------------------------- plots


def plot_curves(
    studies: Sequence[dict[str, Any]], summary: dict[str, Any], n_trials: int, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    tasks = list(summary)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.4 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        mine = [s for s in studies if s["task"] == task]
        target, best = summary[task]["target"], summary[task]["best"]
        max_steps = max(cumulative_steps(s["trials"])[-1] for s in mine)
        grid = np.linspace(0, max_steps, 200)
        tops = []
        for method in METHODS:
            ss = [s for s in mine if s["method"] == method]
            if not ss:
                continue
            curves = np.array([best_so_far(s["trials"]) for s in ss])
            curves[~np.isfinite(curves)] = np.nan
            x = np.arange(1, curves.shape[1] + 1)
            lo, med, hi = np.nanpercentile(curves, [25, 50, 75], axis=0)
            # The y-axis starts at the medians of trial ~n/2.5 (after TPE's 10 random trials).
            tops.append(med[min(max(2, (2 * len(med)) // 5), len(med) - 1)])
            ax = axes[row, 0]
            z = 3 if method == "LR(TPE)" else 2  # the method in question on top
            ax.step(x, med, where="post", color=COLORS[method], label=method, lw=1.8, zorder=z)
            ax.fill_between(x, lo, hi, step="post", color=COLORS[method], alpha=0.15)
            # Against steps: a study's best at each point of the step grid (nan before trial 1).
            by_steps = []
            for s in ss:
                cs, bs = (
                    np.array(cumulative_steps(s["trials"])),
                    np.array(best_so_far(s["trials"])),
                )
                idx = np.searchsorted(cs, grid, side="right") - 1
                by_steps.append(np.where(idx >= 0, bs[np.clip(idx, 0, None)], np.nan))
            arr = np.array(by_steps)
            arr[~np.isfinite(arr)] = np.nan
            ok = ~np.isnan(arr).any(axis=0)
            lo_s, med_s, hi_s = np.percentile(arr[:, ok], [25, 50, 75], axis=0)
            ax = axes[row, 1]
            ax.plot(grid[ok], med_s, color=COLORS[method], label=method, lw=1.8, zorder=z)
            ax.fill_between(grid[ok], lo_s, hi_s, color=COLORS[method], alpha=0.15)
        top = float(np.nanmax(tops)) if tops else None
        if top is not None:
            top += 0.5 * (top - best)
        for col in range(2):
            ax = axes[row, col]
            ax.axhline(target, color="k", ls="--", lw=0.8, label="target (best x 1.05)")
            if top is not None and np.isfinite(top):
                ax.set_ylim(best - 0.05 * (top - best), top)
            ax.grid(alpha=0.3)
            ax.set_ylabel("best validation loss")
        axes[row, 0].set_title(f"{task}: best after n trials", fontsize=10)
        axes[row, 1].set_title(f"{task}: best after n steps (sweeps counted)", fontsize=10)
        axes[row, 0].set_xlabel("trial")
        axes[row, 1].set_xlabel("training steps (sweep steps included)")
        axes[row, 0].set_xlim(1, n_trials)
        axes[row, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.suptitle(
        "Median and interquartile range over study seeds "
        f"({len({s['seed'] for s in studies})} seeds, learning rate on [1e-6, 1])",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- parallel


def _parallel_worker(args: tuple[str, str, str, int, int, int, int]) -> None:
    import optuna

    from studies.head_to_head.tasks import TASKS_BY_NAME, make_objective

    _quiet()
    journal, task_name, method, seed, worker, n_trials, sweep_every = args
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    sampler, narrow = make_sampler(method, seed * 10 + worker, sweep_every)
    study = optuna.load_study(study_name="h2h", storage=storage, sampler=sampler)
    objective = make_objective(TASKS_BY_NAME[task_name], seed, narrow)

    def tagged(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        return objective(trial)

    study.optimize(tagged, n_trials=n_trials, catch=FAILURES)


def run_parallel(
    task_name: str,
    variants: Sequence[tuple[str, str, int]],
    seeds: Sequence[int],
    n_trials: int,
    workers: int,
    target: float | None,
) -> list[dict[str, Any]]:
    """Each study: ``workers`` processes, one journal file, ``n_trials`` trials in all."""
    import optuna

    from studies.head_to_head.tasks import TASKS_BY_NAME

    TASKS_BY_NAME[task_name].data()
    ctx = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, method, sweep_every in variants:
            for seed in seeds:
                journal = os.path.join(
                    tmp, f"{label}-{seed}.log".replace("(", "").replace(")", "")
                )
                storage = optuna.storages.JournalStorage(
                    optuna.storages.journal.JournalFileBackend(journal)
                )
                optuna.create_study(study_name="h2h", storage=storage)
                per_worker = [
                    n_trials // workers + (w < n_trials % workers) for w in range(workers)
                ]
                args = [
                    (journal, task_name, method, seed, w, per_worker[w], sweep_every)
                    for w in range(workers)
                ]
                start = time.perf_counter()
                procs = [ctx.Process(target=_parallel_worker, args=(a,)) for a in args]
                for p in procs:
                    p.start()
                for p in procs:
                    p.join()
                wall = time.perf_counter() - start
                study = optuna.load_study(study_name="h2h", storage=storage)
                trials = trial_records(study)
                worker_of = {t["number"]: t["worker"] for t in trials}
                swept = [t for t in trials if t["sweep_steps"] > 0]
                reused = [
                    t for t in trials if t["source"] is not None and t["source"] != t["number"]
                ]
                cross = [t for t in reused if worker_of.get(t["source"]) != t["worker"]]
                best = [b for b in best_so_far(trials) if math.isfinite(b)]
                hit = to_target({"trials": trials}, target, n_trials) if target else None
                rows.append(
                    {
                        "variant": label,
                        "seed": seed,
                        "exit_codes": [p.exitcode for p in procs],
                        "complete_trials": sum(t["state"] == "COMPLETE" for t in trials),
                        "failed_trials": sum(t["state"] == "FAIL" for t in trials),
                        "trials_per_worker": [
                            sum(t["worker"] == w for t in trials) for w in range(workers)
                        ],
                        "trials_with_own_sweep": len(swept),
                        "trials_reusing_band": len(reused),
                        "reused_from_other_worker": len(cross),
                        "best": best[-1] if best else None,
                        "trials_to_target": None if hit is None else hit["trials"],
                        "steps_to_target": None if hit is None else hit["steps"],
                        "reached": None if hit is None else hit["reached"],
                        "wall_seconds": wall,
                    }
                )
                print(f"  parallel {label} seed {seed}: {rows[-1]}", flush=True)
    return rows


# --------------------------------------------------------------------------- reports


def _fmt_hits(m: dict[str, Any], n_seeds: int, n_trials: int) -> tuple[str, str]:
    trials = f"{m['median_trials_to_target']:.1f}"
    steps = f"{m['median_steps_to_target']:,.0f}"
    if m["reached"] * 2 < n_seeds:  # the median is a "not reached" study
        trials, steps = f">{n_trials} (n.r.)", f">= {steps}"
    elif m["reached"] * 2 == n_seeds:  # the mean of a reached and a "not reached" study
        trials, steps = f">= {trials}", f">= {steps}"
    return trials, steps


def write_markdown(
    summary: dict[str, Any],
    parallel: Sequence[dict[str, Any]],
    config: dict[str, Any],
    path: Path,
) -> str:
    from studies.head_to_head.tasks import TASKS_BY_NAME

    n_trials, n_seeds = config["n_trials"], len(config["seeds"])
    lines = [
        "# Head-to-head: LRRangeSampler vs plain samplers",
        "",
        f"{n_seeds} study seeds ({config['seeds'][0]}..{config['seeds'][-1]}), "
        f"{n_trials} trials per study, learning rate on [1e-6, 1] (log) for every method; "
        "range test 1e-7..10, 100 steps, default band. Run: "
        f"`{config['command']}`, {config['total_minutes']:.1f} min wall.",
        "",
        "Target: best validation loss within 5% of the best any method found on the task. "
        f"Trials/steps to target: median over seeds; a study that never reaches it counts "
        f"as {n_trials + 1} trials and as all the steps it spent (a lower bound); "
        "'n.r.' marks a median that is such a study, '>=' one that averages such a study "
        "with one that reached it (both lower bounds). Steps count training steps plus sweep "
        "steps. Sweep share: recorded sweep seconds / study wall time (median).",
        "",
    ]
    if config.get("target_also_from"):
        files = config["target_also_from"]
        files = [files] if isinstance(files, str) else files
        labels = {
            "results/studies.jsonl": "the main run, all five methods",
            "results/long/studies.jsonl": "the long run",
        }
        lines += [
            "The best loss (and so the target) also counts every study in "
            + " and ".join(f"`{f}` ({labels.get(f, 'another run')})" for f in files)
            + ". The first trials of each study here repeat the shorter study of the same "
            f"task, method and seed there: {config['repeats_main_run']}.",
            "",
        ]
    for task, s in summary.items():
        lines += [
            f"## {task}",
            "",
            TASKS_BY_NAME[task].description + ".",
            f"Best loss found by any method: {s['best']:.4f}; target <= {s['target']:.4f}.",
            "",
            "| method | reached | trials to target | steps to target | best after "
            f"{n_trials} trials: median [IQR] | sweep share of wall time | diverged trials "
            "| band fallbacks | failed trials |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, m in s["methods"].items():
            trials, steps = _fmt_hits(m, n_seeds, n_trials)
            q = m["final_best_q"]
            share = (
                f"{100 * m['sweep_time_share_median']:.0f}%" if method.startswith("LR") else "-"
            )
            fb = f"{100 * m['band_fallback_share']:.0f}%" if method.startswith("LR") else "-"
            lines.append(
                f"| {method} | {m['reached']}/{n_seeds} | {trials} | {steps} | "
                f"{q[1]:.4f} [{q[0]:.4f}, {q[2]:.4f}] | {share} | "
                f"{100 * m['diverged_share']:.0f}% | {fb} | {100 * m['failed_share']:.0f}% |"
            )
        v = s["target_check"]
        if v is not None:
            lines += [
                "",
                f"LR(TPE) / TPE: {v['trial_ratio']:.2f} of the trials (goal <= 0.33), "
                f"{v['step_ratio']:.2f} of the steps (goal <= 0.50): "
                f"**{'met' if v['met'] else 'not met'}**. Best after {n_trials} trials, same "
                f"seed: LR(TPE) lower in {v['final_best_wins']}/{n_seeds} seeds, higher in "
                f"{v['final_best_losses']}.",
            ]
        lines.append("")
    if parallel:
        lines += [
            "## Two workers, one journal file per study",
            "",
            f"Task {config['parallel_task']}, {config['parallel_trials']} trials per study "
            "shared by 2 worker processes (sampler seed = 10 x study seed + worker), "
            f"{len(config['parallel_seeds'])} study seeds. Target as above.",
            "",
            "| variant | reached | trials to target (median) | steps to target (median) | "
            "best: median [IQR] | lower than TPE (paired seeds) | own sweeps per study | "
            "bands reused per study (from the other worker) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        by_variant: dict[str, list[dict[str, Any]]] = {}
        for r in parallel:
            by_variant.setdefault(r["variant"], []).append(r)
        plain = {r["seed"]: r["best"] for r in by_variant.get("TPE", [])}
        n_par = config["parallel_trials"]
        for variant, rows in by_variant.items():
            q = _q([r["best"] for r in rows])
            reached = sum(bool(r["reached"]) for r in rows)
            trials = f"{np.median([r['trials_to_target'] for r in rows]):.1f}"
            steps = f"{np.median([r['steps_to_target'] for r in rows]):,.0f}"
            if reached * 2 < len(rows):
                trials, steps = f">{n_par} (n.r.)", f">= {steps}"
            wins = (
                "-"
                if variant == "TPE"
                else f"{sum(r['best'] < plain[r['seed']] for r in rows)}/{len(rows)}"
            )
            lines.append(
                f"| {variant} | {reached}/{len(rows)} | {trials} | {steps} | "
                f"{q[1]:.4f} [{q[0]:.4f}, {q[2]:.4f}] | {wins} | "
                f"{np.median([r['trials_with_own_sweep'] for r in rows]):.0f} | "
                f"{np.median([r['trials_reusing_band'] for r in rows]):.0f} "
                f"({np.median([r['reused_from_other_worker'] for r in rows]):.0f}) |"
            )
        lines += [
            "",
            "Per study:",
            "",
            "| variant | seed | exit codes | complete (failed) trials, per worker | own sweeps | "
            "bands reused (from the other worker) | best | trials to target | wall s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in parallel:
            lines.append(
                f"| {r['variant']} | {r['seed']} | {r['exit_codes']} | {r['complete_trials']} "
                f"({r['failed_trials']}) "
                f"{tuple(r['trials_per_worker'])} | {r['trials_with_own_sweep']} | "
                f"{r['trials_reusing_band']} ({r['reused_from_other_worker']}) | "
                f"{r['best']:.4f} | {r['trials_to_target']}"
                f"{'' if r['reached'] else ' (n.r.)'} | {r['wall_seconds']:.1f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    path.write_text(text)
    return text


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run for CI (< 60 s)")
    parser.add_argument("--jobs", type=int, default=1, help="studies run at a time")
    parser.add_argument("--seeds", type=int, default=None, help="number of study seeds")
    parser.add_argument("--trials", type=int, default=None, help="trials per study")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--long",
        action="store_true",
        help="LR(TPE) and TPE only, 150 trials per study, into results/long/",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated task names (default: every task in tasks.py)",
    )
    parser.add_argument(
        "--placement",
        choices=("band", "offset"),
        default="band",
        help="the LR methods' placement (the recorded main, long and parallel runs: band); "
        "with --long and offset, the results go to results/offset/long/",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only redraw the plot and rewrite results.md from the folder's results.json",
    )
    args = parser.parse_args(argv)

    from studies.head_to_head.tasks import TASKS

    tasks = [t.name for t in TASKS]
    if args.tasks:
        unknown = sorted(set(args.tasks.split(",")) - set(tasks))
        if unknown:
            parser.error(f"--tasks must name tasks among {tasks}; got unknown {unknown}")
        tasks = [t for t in tasks if t in args.tasks.split(",")]
    methods = METHODS
    reference: list[dict[str, Any]] = []
    reference_files: list[str] = []
    if args.long:
        # Uncensored trials to target: the main run's TPE studies mostly end before they
        # reach it. The target still counts every study of the main run (all methods).
        methods = ("LR(TPE)", "TPE")
        seeds, n_trials = list(range(args.seeds or 10)), args.trials or 150
        par_variants, par_seeds, par_trials = [], [], 0
        out = args.out or HERE / "results" / (
            "long" if args.placement == "band" else "offset/long"
        )
        # A run longer than the long run also counts the long run's studies (its trials are
        # the first 150 of this run's; their values must repeat).
        for path in (
            HERE / "results" / "studies.jsonl",
            HERE / "results" / "long" / "studies.jsonl",
        ):
            if path.parent.resolve() == out.resolve() or not path.exists():
                continue
            reference += read_studies(path)
            reference_files.append(str(path.relative_to(HERE)))
    elif args.quick:
        seeds, n_trials = list(range(args.seeds or 1)), args.trials or 5
        par_variants = [("TPE", "TPE", 1), ("LR(TPE)", "LR(TPE)", 1)]
        par_seeds, par_trials = [0], 4
        out = args.out or HERE / "results" / "quick"
    else:
        seeds, n_trials = list(range(args.seeds or 10)), args.trials or 50
        par_variants = [
            ("TPE", "TPE", 1),
            ("LR(TPE)", "LR(TPE)", 1),
            ("LR(TPE) sweep_every=2", "LR(TPE)", 2),
        ]
        par_seeds, par_trials = list(range(10)), 40
        out = args.out or HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    par_task = "mnist1d_mlp_adam" if not args.quick else "digits_mlp_sgd"
    if args.replot:
        saved = json.loads((out / "results.json").read_text())
        config = saved["config"]
        studies = read_studies(out / "studies.jsonl")
        tasks = [t for t in tasks if any(s["task"] == t for s in studies)]
        studies.sort(key=lambda s: (tasks.index(s["task"]), METHODS.index(s["method"]), s["seed"]))
        summary = summarise(studies, tasks, config["n_trials"], reference)
        saved["summary"] = summary
        (out / "results.json").write_text(json.dumps(saved, indent=1))
        plot_curves(studies, summary, config["n_trials"], out / "best_vs_trials.png")
        print(write_markdown(summary, saved["parallel"], config, out / "results.md"))
        return

    t0 = time.perf_counter()
    # Slow methods first, so the last studies to finish are short ones.
    place = args.placement
    jobs = [(t, m, s, n_trials, place) for m in reversed(methods) for t in tasks for s in seeds]
    # Every finished study is appended to studies.jsonl at once; a rerun reuses them.
    cache_path = out / "studies.jsonl"
    done: dict[tuple[str, str, int, int, str], dict[str, Any]] = {}
    if cache_path.exists():
        for rec in read_studies(cache_path):
            # A plain sampler's study does not depend on the placement.
            placement = args.placement if rec["method"] in BASES else _placement(rec)
            done[(rec["task"], rec["method"], rec["seed"], len(rec["trials"]), placement)] = rec
    studies = [done[j] for j in jobs if j in done]
    jobs = [j for j in jobs if j not in done]
    if studies:
        print(f"reusing {len(studies)} finished studies from {cache_path}", flush=True)

    def keep(res: dict[str, Any]) -> None:
        studies.append(res)
        with cache_path.open("a") as f:
            f.write(json.dumps(res) + "\n")

    if args.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            for i, res in enumerate(pool.imap_unordered(run_study, jobs), 1):
                keep(res)
                _progress(i, len(jobs), res, t0)
    else:
        for i, job in enumerate(jobs, 1):
            keep(run_study(job))
            _progress(i, len(jobs), studies[-1], t0)
    studies.sort(key=lambda s: (tasks.index(s["task"]), METHODS.index(s["method"]), s["seed"]))
    summary = summarise(studies, tasks, n_trials, reference)
    repeats = None
    if reference:
        # Seeded samplers and objectives: a longer study starts as the shorter one did.
        mine = {(s["task"], s["method"], s["seed"], _placement(s)): s["trials"] for s in studies}
        pairs = [
            (r["trials"], mine[key])
            for r in reference
            if (key := (r["task"], r["method"], r["seed"], _placement(r))) in mine
        ]
        same = sum([t["value"] for t in a] == [t["value"] for t in b[: len(a)]] for a, b in pairs)
        repeats = f"identical values in {same} of {len(pairs)} studies"

    parallel: list[dict[str, Any]] = []
    if par_variants:
        print("parallel part ...", flush=True)
        parallel = run_parallel(
            par_task, par_variants, par_seeds, par_trials, 2, summary[par_task]["target"]
        )
    total = time.perf_counter() - t0

    command = "python -m studies.head_to_head.run" + (
        " --quick" if args.quick else " --long" if args.long else ""
    )
    for flag, value in (
        ("--seeds", args.seeds),
        ("--trials", args.trials),
        ("--tasks", args.tasks),
    ):
        if value is not None:
            command += f" {flag} {value}"
    if args.placement != "band":
        command += f" --placement {args.placement}"
    if args.out is not None:
        command += f" --out {args.out}"
    if args.jobs > 1:
        command += f" --jobs {args.jobs}"
    config = {
        "command": command,
        "seeds": seeds,
        "n_trials": n_trials,
        "methods": list(methods),
        "placement": args.placement,
        "target_also_from": reference_files or None,
        "repeats_main_run": repeats,
        "lr_range": [1e-6, 1.0],
        "range_test": {"start_lr": 1e-7, "end_lr": 10.0, "num_iter": 100},
        "near": NEAR,
        "parallel_task": par_task,
        "parallel_trials": par_trials,
        "parallel_seeds": par_seeds,
        "total_minutes": total / 60,
        "torch_threads": 1,
        "cpu_count": os.cpu_count(),
    }
    (out / "results.json").write_text(
        json.dumps({"config": config, "summary": summary, "parallel": parallel}, indent=1)
    )
    plot_curves(studies, summary, n_trials, out / "best_vs_trials.png")
    text = write_markdown(summary, parallel, config, out / "results.md")
    print(text)
    print(f"wrote {out} in {total / 60:.1f} min")


def _progress(i: int, n: int, res: dict[str, Any], t0: float) -> None:
    best = min((t["value"] for t in res["trials"] if t["value"] is not None), default=math.inf)
    print(
        f"[{i}/{n} {time.perf_counter() - t0:6.0f}s] {res['task']} {res['method']} "
        f"seed {res['seed']}: best {best:.4f} ({res['wall_seconds']:.1f}s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
