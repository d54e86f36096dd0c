"""One worker of a distributed study: ``python tests/_worker.py SPEC STUDY N_TRIALS [options]``.

It opens the storage named by SPEC (see ``_servers.open_storage``), loads the study and
runs N_TRIALS trials with ``LRRangeSampler`` over a cheap, real range test: a logistic
regression on scikit-learn's bundled breast-cancer data, trained with numpy by gradient
descent. Fault injection for the tests: ``--hang-in-sweep FILE`` writes FILE once the
sweep has begun and then hangs (the test kills it there); ``--hang-after-sweep FILE`` does
the same after the sweep is recorded, while "training"; ``--report FILE`` writes, after the
run (once ``--expect`` trials are complete), every complete trial's worker and number of
readable sweeps as this worker reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import optuna

sys.path.insert(0, os.path.dirname(__file__))

from _servers import open_storage  # noqa: E402

import optuna_lrrange  # noqa: E402
from optuna_lrrange.core import run_range_test  # noqa: E402


def load_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    return x, y.astype(float)


def loss_and_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    z = x @ w
    p = 1 / (1 + np.exp(-np.clip(z, -50, 50)))
    loss = float(np.mean(np.logaddexp(0, z) - y * z))
    return loss, x.T @ (p - y) / len(y)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("study")
    parser.add_argument("n_trials", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep-every", type=int, default=1)
    parser.add_argument("--hang-in-sweep")
    parser.add_argument("--hang-after-sweep")
    parser.add_argument("--worker-id", default="0")
    parser.add_argument("--report", help="after the run, write what this worker reads back")
    parser.add_argument("--expect", type=int, default=0, help="trials to wait for before --report")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = load_data()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", args.worker_id)
        scale = trial.suggest_float("scale", 0.5, 2.0)
        rng = np.random.default_rng(trial.number)
        w = rng.normal(0, 0.01, x.shape[1])

        def sweep_fn(config):
            state = {"w": w.copy(), "i": 0}

            def step(lr: float) -> float:
                if args.hang_in_sweep and state["i"] == 20:
                    open(args.hang_in_sweep, "w").close()
                    time.sleep(600)
                state["i"] += 1
                idx = rng.integers(0, len(y), 64)
                loss, grad = loss_and_grad(state["w"], scale * x[idx], y[idx])
                state["w"] -= lr * grad
                return loss

            return run_range_test(step, config)

        optuna_lrrange.attach(trial, sweep_fn=sweep_fn)
        lr = trial.suggest_float("lr", 1e-6, 1e2, log=True)
        if args.hang_after_sweep:
            open(args.hang_after_sweep, "w").close()
            time.sleep(600)
        for _ in range(50):
            _, grad = loss_and_grad(w, scale * x, y)
            w -= lr * grad
        return loss_and_grad(w, scale * x, y)[0]

    storage = open_storage(args.spec)
    sampler = optuna_lrrange.LRRangeSampler(
        optuna.samplers.RandomSampler(seed=args.seed), sweep_every=args.sweep_every
    )
    study = optuna.load_study(study_name=args.study, storage=storage, sampler=sampler)
    study.optimize(objective, n_trials=args.n_trials)
    if args.report:
        # Read every trial back through a storage of our own, the other workers' included.
        again = optuna.load_study(study_name=args.study, storage=open_storage(args.spec))
        deadline = time.monotonic() + 120
        complete = (optuna.trial.TrialState.COMPLETE,)
        while len(again.get_trials(deepcopy=False, states=complete)) < args.expect:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {args.expect} trials completed in time")
            time.sleep(0.2)
        seen = {
            t.number: [t.user_attrs.get("worker"), len(optuna_lrrange.get_sweeps(t))]
            for t in again.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE
        }
        with open(args.report, "w") as f:
            json.dump(seen, f)


if __name__ == "__main__":
    main()
