"""The configuration each study would hand its user, retrained under fresh seeds.

The head-to-head target compares single training runs, and the noise study shows that on two
of the three tasks the best single run is a lucky seed. This study compares what a user
actually takes away from a study: its incumbent (the best trial so far) as a configuration.
For every study of the long run (LR(TPE) and TPE, 3 tasks, 10 seeds, 150 trials) it replays
the study to recover each trial's hyperparameters (the replayed values must equal the
recorded ones), takes the incumbent after n trials for each n in ``CHECKPOINTS``, and trains
that configuration again under ``FRESH`` seeds that no study used. A configuration's loss is
the median of those runs.

Reported per task and checkpoint: the median over study seeds of the incumbent's
configuration loss for both samplers, and in how many paired seeds LR(TPE)'s is lower. The
issue's measure, redone on configurations: the target is 5% above the lowest configuration
loss of any incumbent of either sampler, and a study's "trials to target" is the first
checkpoint whose incumbent is within it (checkpoint resolution; never: 151).

Run ``python -m studies.head_to_head.retrained --jobs 2`` (about 35 minutes on 2 cores) after
the long run; ``--quick`` is a smoke run. Finished studies are cached in
``results/retrained/studies.jsonl``; a rerun reuses them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import math
import multiprocessing
from pathlib import Path
import time
from typing import Any

import numpy as np

from studies.head_to_head.run import COLORS, HERE, NEAR, read_studies, run_study

#: Numbers of trials after which the incumbent is retrained.
CHECKPOINTS = (10, 20, 30, 50, 75, 100, 150)
#: Fresh study seeds for the retrainings (the studies used 0-9, the noise study 1000-1019).
FRESH = tuple(range(2000, 2010))
METHODS = ("LR(TPE)", "TPE")


def incumbents(values: Sequence[float | None], checkpoints: Sequence[int]) -> dict[int, int]:
    """The trial number with the lowest value among the first n trials, for each n (the
    first such trial on ties; failed trials, ``None``, never count)."""
    out = {}
    best, best_i = math.inf, -1
    for i, v in enumerate(values):
        if v is not None and v < best:
            best, best_i = v, i
        if i + 1 in checkpoints and best_i >= 0:
            out[i + 1] = best_i
    return out


def run_one(
    job: tuple[str, str, int, list[float | None], tuple[int, ...], tuple[int, ...], str],
) -> dict[str, Any]:
    """Replays one study, then retrains its incumbents under the fresh seeds."""
    from studies.head_to_head.noise import retrain

    task_name, method, seed, recorded, checkpoints, fresh, placement = job
    at = incumbents(recorded, checkpoints)
    last = max(at.values())
    trials = run_study((task_name, method, seed, last + 1, placement))["trials"]
    replayed = [t["value"] for t in trials]
    if replayed != recorded[: last + 1]:
        first = next(i for i, (x, y) in enumerate(zip(replayed, recorded, strict=False)) if x != y)
        raise RuntimeError(
            f"replaying {task_name} {method} seed {seed} must repeat its recorded values; "
            f"trial {first} gave {replayed[first]!r}, recorded {recorded[first]!r}"
        )
    configs: dict[int, dict[str, Any]] = {}
    for number in sorted(set(at.values())):
        params = trials[number]["params"]
        runs = [retrain(task_name, params, s, 0) for s in fresh]
        configs[number] = {
            "params": params,
            "value": recorded[number],
            "retrained": [v for v, _ in runs],
            "diverged": sum(d for _, d in runs),
            "config_loss": float(np.median([v for v, _ in runs])),
        }
    return {
        "task": task_name,
        "method": method,
        "seed": seed,
        "placement": placement,
        "incumbent_at": {str(n): i for n, i in at.items()},
        "configs": {str(i): c for i, c in configs.items()},
    }


def summarise(records: Sequence[dict[str, Any]], checkpoints: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task in dict.fromkeys(r["task"] for r in records):
        mine = [r for r in records if r["task"] == task]

        def curve(r: dict[str, Any]) -> list[float]:
            return [
                r["configs"][str(r["incumbent_at"][str(n)])]["config_loss"] for n in checkpoints
            ]

        best = min(min(curve(r)) for r in mine)
        target = best * NEAR
        rows: dict[str, Any] = {}
        for method in METHODS:
            rs = sorted((r for r in mine if r["method"] == method), key=lambda r: r["seed"])
            curves = np.array([curve(r) for r in rs])
            first = [
                next(
                    (n for n, c in zip(checkpoints, cv, strict=True) if c <= target),
                    max(checkpoints) + 1,
                )
                for cv in curves
            ]
            rows[method] = {
                "seeds": [r["seed"] for r in rs],
                "median": np.median(curves, axis=0).tolist(),
                "q25": np.percentile(curves, 25, axis=0).tolist(),
                "q75": np.percentile(curves, 75, axis=0).tolist(),
                "curves": curves.tolist(),
                "first_checkpoint_within_target": first,
                "reached": sum(f <= max(checkpoints) for f in first),
                "median_first": float(np.median(first)),
            }
        a, b = np.array(rows["LR(TPE)"]["curves"]), np.array(rows["TPE"]["curves"])
        out[task] = {
            "best_config_loss": best,
            "target": target,
            "methods": rows,
            "lower_in": (a < b).sum(axis=0).tolist(),
            "higher_in": (a > b).sum(axis=0).tolist(),
        }
    return out


def plot(summary: dict[str, Any], checkpoints: Sequence[int], n_fresh: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        s = summary[task]
        for method in METHODS:
            m = s["methods"][method]
            ax.plot(checkpoints, m["median"], "o-", color=COLORS[method], label=method, lw=1.8)
            ax.fill_between(checkpoints, m["q25"], m["q75"], color=COLORS[method], alpha=0.15)
        ax.axhline(s["target"], color="k", ls="--", lw=0.8, label="target (best x 1.05)")
        ax.set_xscale("log")
        ax.set_xticks(checkpoints)
        ax.set_xticklabels([str(n) for n in checkpoints])
        ax.set_xlabel("trials")
        ax.set_ylabel(f"incumbent retrained: median of {n_fresh} seeds")
        ax.set_title(task, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(
        "The configuration a study would hand its user after n trials, trained again under "
        "fresh seeds (median and IQR over 10 study seeds)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(summary: dict[str, Any], config: dict[str, Any], path: Path) -> str:
    cps = config["checkpoints"]
    lines = [
        "# The incumbent configurations, retrained under fresh seeds",
        "",
        f"Produced by `{config['command']}` in {config['minutes']:.1f} min. Studies: the long "
        f"run's LR(TPE) and TPE studies ({config['n_trials']} trials, seeds "
        f"{config['seeds'][0]}-{config['seeds'][-1]}), replayed (every replayed value equals "
        "the recorded one). Each incumbent (best trial after n trials) is trained again under "
        f"{len(config['fresh'])} fresh seeds ({config['fresh'][0]}-{config['fresh'][-1]}); its "
        "configuration loss is the median of those runs.",
        "",
        "Configuration loss of the incumbent, median over study seeds (LR(TPE) lower than TPE "
        "in k of the paired seeds):",
        "",
        "| task | method | " + " | ".join(f"n = {n}" for n in cps) + " |",
        "|---|---|" + "---:|" * len(cps),
    ]
    for task, s in summary.items():
        for method in METHODS:
            m = s["methods"][method]
            lines.append(
                f"| {task if method == METHODS[0] else ''} | {method} | "
                + " | ".join(f"{v:.4f}" for v in m["median"])
                + " |"
            )
        lines.append(
            "| | LR(TPE) lower in | "
            + " | ".join(f"{k}/{len(config['seeds'])}" for k in s["lower_in"])
            + " |"
        )
    lines += [
        "",
        "The issue's measure on configurations: target = 1.05 x the lowest configuration loss "
        "of any incumbent of either sampler; trials to target = the first checkpoint whose "
        f"incumbent is within it ({max(cps) + 1} if none), median over seeds; ratio goal "
        "<= 0.33.",
        "",
        "| task | best configuration loss / target | seeds reaching it: LR(TPE), TPE | "
        "first checkpoint within target, median: LR(TPE), TPE | ratio |",
        "|---|---|---|---|---:|",
    ]
    for task, s in summary.items():
        a, b = s["methods"]["LR(TPE)"], s["methods"]["TPE"]
        lines.append(
            f"| {task} | {s['best_config_loss']:.4f} / {s['target']:.4f} | {a['reached']}, "
            f"{b['reached']} | {a['median_first']:g}, {b['median_first']:g} | "
            f"{a['median_first'] / b['median_first']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 seed, 2 retrainings")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    long_run = read_studies(args.results / "long" / "studies.jsonl")
    if args.quick:
        checkpoints, fresh, seeds = (5, 10), FRESH[:2], [0]
        long_run = [{**s, "trials": s["trials"][:10]} for s in long_run if s["seed"] == 0]
    else:
        checkpoints, fresh, seeds = CHECKPOINTS, FRESH, sorted({s["seed"] for s in long_run})
    out = args.out or args.results / ("retrained_quick" if args.quick else "retrained")
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "studies.jsonl"
    done = {}
    if cache.exists():
        for r in read_studies(cache):
            done[(r["task"], r["method"], r["seed"])] = r
    jobs = [
        (
            s["task"],
            s["method"],
            s["seed"],
            [t["value"] for t in s["trials"]],
            checkpoints,
            fresh,
            s.get("placement", "band"),
        )
        for s in long_run
        if s["method"] in METHODS
        and s["seed"] in seeds
        and (s["task"], s["method"], s["seed"]) not in done
    ]
    records = list(done.values())
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for i, r in enumerate(pool.imap_unordered(run_one, jobs), 1):
            records.append(r)
            with cache.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(
                f"[{i}/{len(jobs)} {time.perf_counter() - t0:5.0f}s] {r['task']} {r['method']} "
                f"seed {r['seed']}: {len(r['configs'])} incumbents retrained",
                flush=True,
            )
    tasks = list(dict.fromkeys(s["task"] for s in long_run))
    records.sort(key=lambda r: (tasks.index(r["task"]), METHODS.index(r["method"]), r["seed"]))
    summary = summarise(records, checkpoints)
    config = {
        "command": "python -m studies.head_to_head.retrained"
        + (" --quick" if args.quick else "")
        + (f" --results {args.results}" if args.results != HERE / "results" else "")
        + (f" --jobs {args.jobs}" if args.jobs > 1 else ""),
        "checkpoints": list(checkpoints),
        "fresh": list(fresh),
        "seeds": seeds,
        "n_trials": len(long_run[0]["trials"]),
        "minutes": (time.perf_counter() - t0) / 60,
    }
    (out / "results.json").write_text(json.dumps({"config": config, "summary": summary}, indent=1))
    plot(summary, checkpoints, len(fresh), out / "retrained.png")
    print(write_markdown(summary, config, out / "results.md"))


if __name__ == "__main__":
    main()
