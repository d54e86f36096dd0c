"""Analyse a finished study with pandas: every sweep, band and chosen rate as a DataFrame.

``optuna_lrrange.sweeps_summary(study)`` has one row per sweep (band, suggestion, why the
sweep stopped, its settings); ``optuna_lrrange.sweeps_dataframe(study)`` one row per step
(lr, raw and smoothed loss, loss change). Both carry the trial's number, value and
parameters, and merge with ``study.trials_dataframe()`` on ``number``.

Run on a study of your own:
      python examples/analyse_study.py --storage sqlite:///studies/demo/demo.db --study demo
Without ``--storage`` it first runs a small study of its own (in memory) to analyse.
Fast: OPTUNA_LRRANGE_FAST=1 python examples/analyse_study.py
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import optuna
import pandas as pd

import optuna_lrrange

FAST = os.environ.get("OPTUNA_LRRANGE_FAST") == "1"


def small_study() -> optuna.Study:
    """A few trials of the quickstart objective, to have something to analyse."""
    import quickstart  # examples/quickstart.py, next to this file

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=0)),
    )
    study.optimize(quickstart.objective, n_trials=4 if FAST else 15)
    return study


def analyse(study: optuna.Study) -> pd.DataFrame:
    summary = optuna_lrrange.sweeps_summary(study)
    steps = optuna_lrrange.sweeps_dataframe(study)
    print(f"{len(summary)} sweeps ({len(steps)} steps) in {summary['number'].nunique()} trials")
    print("\nwhy the sweeps stopped:")
    print(summary["stop_reason"].value_counts().to_string())

    # Where inside its band did each trial's learning rate fall? 0 = low edge, 1 = high edge.
    first = summary[summary["sweep"] == 0].copy()
    lr_column = "params_lr"
    if lr_column in first.columns:
        log_lr = np.log10(first[lr_column])
        low, high = np.log10(first["band_low"]), np.log10(first["band_high"])
        first["position_in_band"] = (log_lr - low) / (high - low)
        first["band_decades"] = high - low
    value = "value" if "value" in first.columns else first.columns[2]
    columns = [
        "number",
        value,
        lr_column,
        "band_low",
        "band_high",
        "position_in_band",
        "stop_reason",
        "n_steps",
    ]
    table = first[[c for c in columns if c in first.columns]].sort_values(value, ascending=False)
    print("\nfirst sweep of each trial, best first:")
    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 120):
        print(table.to_string(index=False))

    # The steepest descent of each sweep, read from the long frame.
    steepest = steps.dropna(subset=["loss_change"]).loc[
        lambda d: d.groupby(["number", "sweep"])["loss_change"].idxmin()
    ]
    print("\nlr of the steepest loss change per trial (SMA 20):")
    print(steepest[["number", "sweep", "lr", "loss_change"]].to_string(index=False))

    if "position_in_band" in first.columns and first["position_in_band"].notna().sum() > 2:
        corr = first[[value, "position_in_band"]].corr(method="spearman").iloc[0, 1]
        if not math.isnan(corr):
            print(f"\nSpearman correlation of {value} with position in band: {corr:+.2f}")
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="storage URL of a finished study")
    parser.add_argument("--study", default=None, help="study name (default: the only one)")
    parser.add_argument("--csv", default=None, help="also write the summary to this CSV file")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    if args.storage is None:
        study = small_study()
    else:
        study = optuna.load_study(study_name=args.study, storage=args.storage)
    first = analyse(study)
    if args.csv:
        first.to_csv(args.csv, index=False)
        print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    main()
