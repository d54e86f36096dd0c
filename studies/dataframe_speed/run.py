"""How fast is ``sweeps_dataframe`` on a big study? (target: under 1 s)

Builds an SQLite study of 1,000 complete trials, each with one 100-step sweep record (as
the sampler writes it: one JSON-string user attribute plus the summary keys), then times,
each in a fresh Python process (so no cache is warm), the first call of:

* ``optuna_lrrange.sweeps_dataframe(study)``  (100,000 rows),
* ``optuna_lrrange.sweeps_summary(study)``    (1,000 rows),
* ``study.trials_dataframe()``                (1,000 rows; Optuna's own, for scale).

Each is timed after ``optuna.load_study`` (the call alone) and from before it (load +
call); imports are excluded. Median of ``--repeats`` fresh processes.

Usage::

    python studies/dataframe_speed/run.py [--trials 1000] [--repeats 3] [--out results.md]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import datetime
import json
import math
import os
from pathlib import Path
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = Path(__file__).resolve().parent

TIMER = """
import sys, time, json
import optuna, pandas, optuna_lrrange, optuna_lrrange.analysis
optuna.logging.set_verbosity(optuna.logging.WARNING)
url, what = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
study = optuna.load_study(study_name="bench", storage=url)
t1 = time.perf_counter()
if what == "sweeps_dataframe":
    frame = optuna_lrrange.sweeps_dataframe(study)
elif what == "sweeps_summary":
    frame = optuna_lrrange.sweeps_summary(study)
else:
    frame = study.trials_dataframe()
t2 = time.perf_counter()
print(json.dumps({"call": t2 - t1, "load_and_call": t2 - t0, "rows": len(frame)}))
"""


def build(url: str, n_trials: int, num_iter: int) -> None:
    """An SQLite study of ``n_trials`` complete trials, each with one sweep record."""
    import numpy as np
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from optuna_lrrange import run_range_test
    from optuna_lrrange._records import (
        BAND_KEY,
        SCHEMA_KEY,
        SCHEMA_VERSION,
        SUGGESTION_KEY,
        encode,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name="bench")
    storage = study._storage
    rng = np.random.default_rng(0)
    now = datetime.datetime.now()
    for number in range(n_trials):
        best = 10 ** rng.uniform(-4, -1)
        state = {"loss": 2.3}

        def step(lr: float, best: float = best, state: dict = state) -> float:
            r = lr / best
            state["loss"] = state["loss"] * (1 - 0.05 * min(r, 1.0)) + 0.5 * max(r - 30, 0)
            return state["loss"] * (1 + 0.01 * float(rng.standard_normal()))

        # A full-length record: no divergence stop, all num_iter steps stored.
        sweep = run_range_test(
            step, start_lr=1e-6, end_lr=1.0, num_iter=num_iter, diverge_factor=1e9
        )
        info = {"kind": "trial", "trial_number": number, "trial_id": number + 1}
        sweep = replace(sweep, info=info)
        suggestion = sweep.suggest()
        (record,) = encode(sweep, suggestion)  # a 100-step record is one value
        lr = float(10 ** rng.uniform(-5, 0))
        trial = optuna.trial.FrozenTrial(
            number=number,
            state=optuna.trial.TrialState.COMPLETE,
            value=abs(math.log10(lr / best)),
            datetime_start=now,
            datetime_complete=now,
            params={"lr": lr, "width": int(rng.integers(8, 257))},
            distributions={
                "lr": FloatDistribution(1e-5, 1.0, log=True),
                "width": IntDistribution(8, 256),
            },
            user_attrs={
                "lrrange:sweep:0": record,
                BAND_KEY: None if suggestion.band is None else list(suggestion.band),
                SUGGESTION_KEY: suggestion.lr,
                SCHEMA_KEY: SCHEMA_VERSION,
            },
            system_attrs={},
            intermediate_values={},
            trial_id=number,
        )
        storage.create_new_trial(study._study_id, template_trial=trial)


def time_fresh(url: str, what: str, repeats: int) -> dict[str, float]:
    """Median timings of ``what`` over ``repeats`` fresh processes."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", TIMER, url, what], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "call": statistics.median(r["call"] for r in runs),
        "load_and_call": statistics.median(r["load_and_call"] for r in runs),
        "rows": runs[0]["rows"],
        "all_calls": [round(r["call"], 3) for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--num-iter", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results.md"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        url = f"sqlite:///{db}"
        start = time.perf_counter()
        build(url, args.trials, args.num_iter)
        build_s = time.perf_counter() - start
        size_mb = os.path.getsize(db) / 1e6
        results = {
            what: time_fresh(url, what, args.repeats)
            for what in ("sweeps_dataframe", "sweeps_summary", "trials_dataframe")
        }

    lines = [
        "# sweeps_dataframe speed",
        "",
        f"Command: `python studies/dataframe_speed/run.py --trials {args.trials} "
        f"--num-iter {args.num_iter} --repeats {args.repeats}`",
        "",
        f"Study: SQLite, {args.trials} complete trials, each with one {args.num_iter}-step "
        f"sweep record ({size_mb:.1f} MB file, built in {build_s:.1f} s).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; optuna {_version('optuna')}, pandas "
        f"{_version('pandas')}. Median of {args.repeats} fresh processes; imports excluded.",
        "",
        "| call | rows | call alone (s) | load_study + call (s) | each run, call alone (s) |",
        "|---|---:|---:|---:|---|",
    ]
    for what, r in results.items():
        lines.append(
            f"| `{what}` | {r['rows']:,} | {r['call']:.3f} | {r['load_and_call']:.3f} | "
            f"{', '.join(str(v) for v in r['all_calls'])} |"
        )
    target = results["sweeps_dataframe"]["call"]
    lines += [
        "",
        f"Target under 1 s for `sweeps_dataframe`: {'met' if target < 1 else 'NOT met'} "
        f"({target:.3f} s; {target / results['trials_dataframe']['call']:.2f}x the time of "
        "`trials_dataframe` on the same study).",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
