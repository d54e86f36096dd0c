"""How much of "within 5% of the best loss any method found" is the training seed's luck?

The head-to-head target is 5% above the single best trial of every study of a task. A
trial's validation loss depends on its hyperparameters and on its seed (initialisation,
dropout masks, data order). This study takes the best trials of each task (over the main
and the long run, every method), recovers their hyperparameters by replaying their studies
(seeded samplers and objectives: the replayed value must equal the recorded one, bit for
bit), and trains each configuration again under fresh seeds that no study used.

If the best configurations reach the target under only a few of the fresh seeds, the target
is set by seed luck as much as by the hyperparameters a sampler chooses, and "trials until a
study first reaches it" measures mostly how many near-best trials a study runs.

Run ``python -m studies.head_to_head.noise`` (about 10 minutes on one core; ``--quick`` for a
smoke run) after the main and the long run: it reads their ``studies.jsonl`` files and writes
``results/noise/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import math
from pathlib import Path
import time
from typing import Any

import numpy as np

from studies.head_to_head.run import HERE, _quiet, read_studies, run_study, summarise

#: Fresh study seeds for the reseeded trainings; the studies used seeds 0-9.
FRESH_SEEDS = range(1000, 1020)
#: Tolerances over the best loss found for the second table; the issue's is 1.05. All are
#: reported, whichever way they fall.
TOLERANCES = (1.05, 1.10, 1.20, 1.50)


def load_runs(results: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The main run's and the long run's studies, as recorded."""
    return read_studies(results / "studies.jsonl"), read_studies(
        results / "long" / "studies.jsonl"
    )


def best_trials(studies: Sequence[dict[str, Any]], task: str, k: int) -> list[dict[str, Any]]:
    """The ``k`` best trials of ``task`` with distinct values (the same trial appears in a
    main-run study and in its long-run continuation), best first."""
    rows = {}
    for s in studies:
        if s["task"] != task:
            continue
        for t in s["trials"]:
            if t["value"] is not None and t["value"] not in rows:
                rows[t["value"]] = {
                    "method": s["method"],
                    "seed": s["seed"],
                    "number": t["number"],
                    "value": t["value"],
                    "lr": t["lr"],
                }
    return [rows[v] for v in sorted(rows)[:k]]


def replay(task_name: str, trial: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a recorded trial, from its study run again up to that trial."""
    again = run_study((task_name, trial["method"], trial["seed"], trial["number"] + 1))
    replayed = again["trials"][trial["number"]]
    if replayed["value"] != trial["value"]:
        raise RuntimeError(
            f"replaying {task_name} {trial['method']} seed {trial['seed']} trial "
            f"{trial['number']} must give the recorded value {trial['value']!r}; "
            f"got {replayed['value']!r}"
        )
    return replayed["params"]


def retrain(task_name: str, params: dict[str, Any], seed: int, number: int) -> tuple[float, bool]:
    """The objective's value for fixed hyperparameters, seeded as trial ``number`` of a study
    with seed ``seed``, and whether the run diverged (it then scores its initial loss)."""
    import optuna

    from studies.head_to_head.tasks import TASKS_BY_NAME, make_objective

    trial = optuna.trial.FixedTrial(params, number=number)
    value = float(make_objective(TASKS_BY_NAME[task_name], seed, narrow=False)(trial))
    return value, bool(trial.user_attrs["diverged"])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    tasks = list(report["tasks"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 4.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        r = report["tasks"][task]
        for i, c in enumerate(r["configs"], 1):
            vals = np.asarray(c["reseeded"])
            jitter = np.linspace(-0.15, 0.15, len(vals))
            ax.scatter(i + jitter, vals, s=12, color="tab:gray", alpha=0.8, zorder=2)
            ax.hlines(np.median(vals), i - 0.3, i + 0.3, color="k", lw=1.5, zorder=3)
            ax.scatter([i], [c["value"]], marker="*", s=120, color="tab:red", zorder=4)
        ax.axhline(r["target"], color="k", ls="--", lw=0.8)
        for method, style in (("LR(TPE)", "tab:red"), ("TPE", "tab:blue")):
            ax.axhline(r["median_best_long"][method], color=style, ls=":", lw=1.2)
        ax.set_xticks(range(1, len(r["configs"]) + 1))
        ax.set_xlabel("k-th best trial of the task")
        ax.set_ylabel("validation loss (log scale)")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], marker="*", ls="", color="tab:red", ms=10, label="recorded trial"),
        plt.Line2D([], [], marker="o", ls="", color="tab:gray", ms=4, label="fresh seeds"),
        plt.Line2D([], [], color="k", lw=1.5, label="median, fresh seeds"),
        plt.Line2D([], [], color="k", ls="--", lw=0.8, label="target (best x 1.05)"),
        plt.Line2D([], [], color="tab:red", ls=":", label="LR(TPE), median best at 150"),
        plt.Line2D([], [], color="tab:blue", ls=":", label="TPE, median best at 150"),
    ]
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles))
    fig.suptitle(
        f"The best trials' hyperparameters trained again under {report['n_fresh']} fresh seeds",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(report: dict[str, Any], path: Path) -> str:
    lines = [
        "# How much of the target is the training seed's luck?",
        "",
        f"Produced by `{report['command']}` in {report['minutes']:.1f} min. For each task, the "
        f"{report['k']} best trials of the main and the long run (every method) were replayed "
        "(the replayed value equals the recorded one in every case, and so does a retraining of "
        "the replayed hyperparameters outside the study with the trial's own seed) and their "
        "hyperparameters "
        f"trained again under {report['n_fresh']} fresh seeds (study seeds "
        f"{report['fresh_seeds'][0]}-{report['fresh_seeds'][-1]}; initialisation, dropout, "
        "data order). Target: 1.05 x the best trial of both runs.",
        "",
        "| task | k | recorded trial (method, seed, trial) | recorded loss | fresh seeds: "
        "median [min, max] | fresh seeds reaching the target | diverged |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for task, r in report["tasks"].items():
        for i, c in enumerate(r["configs"], 1):
            v = np.asarray(c["reseeded"])
            lines.append(
                f"| {task if i == 1 else ''} | {i} | {c['method']}, {c['seed']}, {c['number']} "
                f"| {c['value']:.4f} | {np.median(v):.4f} [{v.min():.4f}, {v.max():.4f}] "
                f"| {c['hits']}/{len(v)} | {c['diverged']} |"
            )
    lines += [
        "",
        "| task | target | fresh seeds reaching it, all best configurations | median best "
        "after 150 trials: LR(TPE), TPE | seed spread of the best configuration "
        "(IQR / median) |",
        "|---|---:|---:|---|---:|",
    ]
    for task, r in report["tasks"].items():
        hits = sum(c["hits"] for c in r["configs"])
        n = sum(len(c["reseeded"]) for c in r["configs"])
        v = np.asarray(r["configs"][0]["reseeded"])
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        mb = r["median_best_long"]
        lines.append(
            f"| {task} | {r['target']:.4f} | {hits}/{n} ({hits / n:.0%}) | "
            f"{mb['LR(TPE)']:.4f}, {mb['TPE']:.4f} | {(q3 - q1) / med:.1%} |"
        )
    lines += [
        "",
        "## The long run's ratios at other tolerances",
        "",
        "The same measure as the issue's (median over 10 seeds of the trials and steps until "
        "a study's best is within the tolerance of the best any study found; a study that "
        "never gets there counts as 151 trials and all its steps; `>=` marks a median that "
        "involves such a study, a lower bound) "
        "on the long run's LR(TPE) and TPE studies (150 trials), for looser tolerances. "
        "Goal: trials <= 0.33, steps <= 0.50.",
        "",
        "| task | tolerance | seeds reaching it: LR(TPE), TPE | trials: LR(TPE), TPE | "
        "trial ratio | steps: LR(TPE), TPE | step ratio |",
        "|---|---:|---|---|---:|---|---:|",
    ]
    for task, rows in report["tolerances"].items():
        for i, r in enumerate(rows):

            def fmt(m: dict[str, Any], key: str) -> str:
                # A lower bound when the median involves a study that never got there.
                censored = m["reached"] * 2 <= len(m["seeds"])
                value = f"{m[key]:,.0f}" if "steps" in key else f"{m[key]:.1f}".removesuffix(".0")
                return (">= " if censored else "") + value

            a, b = r["LR(TPE)"], r["TPE"]
            lines.append(
                f"| {task if i == 0 else ''} | {r['near']:.2f} | {a['reached']}, {b['reached']} "
                f"| {fmt(a, 'median_trials_to_target')}, {fmt(b, 'median_trials_to_target')} "
                f"| {r['trial_ratio']:.2f} "
                f"| {fmt(a, 'median_steps_to_target')}, {fmt(b, 'median_steps_to_target')} "
                f"| {r['step_ratio']:.2f} |"
            )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def at_tolerances(
    main_run: Sequence[dict[str, Any]], long_run: Sequence[dict[str, Any]], tasks: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The long run's trial and step ratios (LR(TPE) / TPE) at each of ``TOLERANCES``."""
    keys = ("seeds", "reached", "median_trials_to_target", "median_steps_to_target")
    out: dict[str, list[dict[str, Any]]] = {task: [] for task in tasks}
    for near in TOLERANCES:
        at = summarise(long_run, tasks, len(long_run[0]["trials"]), main_run, near=near)
        for task in tasks:
            rows = at[task]["methods"]
            check = at[task]["target_check"]
            out[task].append(
                {
                    "near": near,
                    "trial_ratio": check["trial_ratio"],
                    "step_ratio": check["step_ratio"],
                    **{m: {key: rows[m][key] for key in keys} for m in ("LR(TPE)", "TPE")},
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 trial, 2 seeds")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only recompute the tolerance table and redraw from the folder's noise.json",
    )
    args = parser.parse_args(argv)
    _quiet()
    k, fresh = (1, list(FRESH_SEEDS)[:2]) if args.quick else (5, list(FRESH_SEEDS))
    out = args.out or args.results / ("noise_quick" if args.quick else "noise")
    out.mkdir(parents=True, exist_ok=True)

    main_run, long_run = load_runs(args.results)
    tasks = list(dict.fromkeys(s["task"] for s in main_run))
    if args.replot:
        report = json.loads((out / "noise.json").read_text())
    else:
        report = measure(main_run, long_run, tasks, k, fresh)
        report["command"] = "python -m studies.head_to_head.noise" + (
            " --quick" if args.quick else ""
        )
    report["tolerances"] = at_tolerances(main_run, long_run, tasks)
    (out / "noise.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "noise.png")
    print(write_markdown(report, out / "noise.md"))


def measure(
    main_run: Sequence[dict[str, Any]],
    long_run: Sequence[dict[str, Any]],
    tasks: Sequence[str],
    k: int,
    fresh: Sequence[int],
) -> dict[str, Any]:
    """Replays each task's ``k`` best trials and retrains them under the ``fresh`` seeds."""
    long_summary = summarise(long_run, tasks, len(long_run[0]["trials"]), main_run)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"k": k, "n_fresh": len(fresh), "fresh_seeds": list(fresh)}
    report["tasks"] = {}
    for task in tasks:
        target = long_summary[task]["target"]
        configs = []
        for trial in best_trials([*main_run, *long_run], task, k):
            params = replay(task, trial)
            # The same hyperparameters and seeds outside the study give the same value: what
            # changes below is the seed only.
            same, _ = retrain(task, params, trial["seed"], trial["number"])
            if same != trial["value"]:
                raise RuntimeError(f"retraining {trial} outside its study gave {same!r}")
            runs = [retrain(task, params, seed, 0) for seed in fresh]
            values = [v for v, _ in runs]
            assert all(math.isfinite(v) for v in values)
            configs.append(
                {
                    **trial,
                    "params": params,
                    "reseeded": values,
                    "diverged": sum(d for _, d in runs),
                    "hits": sum(v <= target for v in values),
                }
            )
            print(
                f"{time.perf_counter() - t0:6.0f}s {task} {trial['method']} seed {trial['seed']} "
                f"trial {trial['number']}: {trial['value']:.4f}; fresh median "
                f"{np.median(values):.4f}, {configs[-1]['hits']}/{len(values)} reach target",
                flush=True,
            )
        report["tasks"][task] = {
            "target": target,
            "median_best_long": {
                m: long_summary[task]["methods"][m]["final_best_q"][1] for m in ("LR(TPE)", "TPE")
            },
            "configs": configs,
        }
    report["minutes"] = (time.perf_counter() - t0) / 60
    return report


if __name__ == "__main__":
    main()
