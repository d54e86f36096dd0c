"""pandas views of every range-test sweep recorded in a study.

Two frames, both built from the ``lrrange:sweep:<i>`` user attributes of the study's trials
(so they work on a study loaded from any storage, in any later session):

* :func:`sweeps_dataframe`: tidy, long form; one row per step of every sweep.
* :func:`sweeps_summary`: one row per sweep: the suggestion, the band, the settings.

Both carry the trial's number, state, objective value(s) and parameters named as
``Study.trials_dataframe()`` names them (``value`` or ``values_0, values_1, ...``,
``params_<name>``), so they merge with it on ``number``.
"""

from __future__ import annotations

from collections.abc import Iterator
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from optuna_lrrange._records import read_trial_records
from optuna_lrrange.core import Suggestion, Sweep

if TYPE_CHECKING:
    import optuna
    import pandas as pd

__all__ = ["sweeps_dataframe", "sweeps_summary"]

#: The per-step columns of :func:`sweeps_dataframe`, after the trial columns.
STEP_COLUMNS = (
    "sweep",
    "kind",
    "step",
    "epoch",
    "iteration",
    "lr",
    "loss",
    "smoothed_loss",
    "loss_change",
)

#: The per-sweep columns of :func:`sweeps_summary`, after the trial columns.
SUMMARY_COLUMNS = (
    "sweep",
    "kind",
    "step",
    "epoch",
    "chosen_lr",
    "suggestion_lr",
    "band_low",
    "band_high",
    "method",
    "reason",
    "stop_reason",
    "n_steps",
    "final_lr",
    "min_loss",
    "start_lr",
    "end_lr",
    "num_iter",
    "mode",
    "diverge_factor",
    "smooth_beta",
    "placement",
    "anchor",
    "offset",
    "narrowed",
)


def _import_pandas() -> Any:
    try:
        import pandas
    except ImportError as e:
        raise ImportError(
            "optuna_lrrange.analysis needs pandas: `pip install optuna-lrrange[pandas]`."
        ) from e
    return pandas


def _value_columns(study: optuna.Study) -> list[str]:
    """The objective-value column names, as ``Study.trials_dataframe()`` names them."""
    names = study.metric_names
    if len(study.directions) == 1:
        return ["value"] if names is None else [f"value_{names[0]}"]
    if names is None:
        return [f"values_{i}" for i in range(len(study.directions))]
    return [f"values_{name}" for name in names]


def _records(
    study: optuna.Study, inherited: bool
) -> Iterator[tuple[optuna.trial.FrozenTrial, int, Sweep, Suggestion | None]]:
    """``(trial, sweep index, sweep, suggestion)`` for every readable record, in order.

    An unreadable record is skipped with a :class:`RecordWarning` naming its trial; a trial
    whose records need a newer optuna-lrrange is skipped whole, with the same warning.
    """
    for trial in study.get_trials(deepcopy=False):
        if not any(key.startswith("lrrange:sweep:") for key in trial.user_attrs):
            continue
        records = read_trial_records(trial, inherited=inherited)
        for index, (sweep, suggestion) in enumerate(records):
            yield trial, index, sweep, suggestion


def _trial_columns(
    study: optuna.Study, trials: list[optuna.trial.FrozenTrial]
) -> dict[str, list[Any]]:
    """``number``, ``state``, value(s) and ``params_<name>`` of each entry of ``trials``."""
    value_names = _value_columns(study)
    n_values = len(value_names)
    param_names = sorted({name for t in trials for name in t.params})
    columns: dict[str, list[Any]] = {
        "number": [t.number for t in trials],
        "state": [t.state.name for t in trials],
    }
    for i, name in enumerate(value_names):
        columns[name] = [
            math.nan if t.values is None or len(t.values) != n_values else t.values[i]
            for t in trials
        ]
    for name in param_names:
        columns[f"params_{name}"] = [t.params.get(name, math.nan) for t in trials]
    return columns


def _info_number(info: Any, key: str) -> float:
    value = info.get(key)
    return float(value) if isinstance(value, (int, float)) and value is not None else math.nan


def _check_inputs(study: Any, sma: int | None = None) -> None:
    import optuna

    if not isinstance(study, optuna.Study):
        raise TypeError(f"`study` must be an optuna.Study, but got {type(study).__name__}.")
    if sma is not None and (not isinstance(sma, int) or isinstance(sma, bool) or sma < 1):
        raise ValueError(f"`sma >= 1` must hold, but got sma={sma!r}.")


def sweeps_dataframe(
    study: optuna.Study, *, sma: int = 20, inherited: bool = False
) -> pd.DataFrame:
    """Every step of every range-test sweep in ``study``, as one tidy DataFrame.

    Args:
        study: The study, from any storage (``optuna.load_study(...)`` works).
        sma: Window of the simple moving average over the loss change per decade (the
            article's ``plot_loss_change(sma=20)``).
        inherited: Also include the sweeps a retried trial inherited from its failed
            earlier attempt (left out by default so that no sweep is counted twice).

    Returns:
        One row per step, with columns ``number``, ``state``, ``value`` (or ``values_0``,
        ``values_1``, ... for several objectives), ``params_<name>`` for every parameter
        of the study, then ``sweep`` (0 for the trial's first sweep, 1, 2, ... for the
        re-estimations after it), ``kind`` (``"trial"`` or ``"reestimate"``), ``step`` and
        ``epoch`` (where a re-estimation was taken, else NaN), ``iteration`` (the step
        within the sweep), ``lr``, ``loss`` (raw), ``smoothed_loss`` (the bias-corrected
        EMA of the sweep's own ``smooth_beta``) and ``loss_change`` (loss change per
        decade of lr, averaged over the last ``sma`` steps; NaN for the first ``sma``).
        A study without sweeps gives an empty frame with these columns.

    Unreadable records are skipped with a ``RecordWarning``; this function never raises on
    what it finds in storage.
    """
    pd = _import_pandas()
    _check_inputs(study, sma)
    trials: list[optuna.trial.FrozenTrial] = []
    lengths: list[int] = []
    per_sweep: dict[str, list[Any]] = {k: [] for k in ("sweep", "kind", "step", "epoch")}
    lrs: list[np.ndarray] = []
    losses: list[np.ndarray] = []
    smoothed: list[np.ndarray] = []
    changes: list[np.ndarray] = []
    for trial, index, sweep, _ in _records(study, inherited):
        trials.append(trial)
        lengths.append(len(sweep))
        per_sweep["sweep"].append(index)
        per_sweep["kind"].append(str(sweep.info.get("kind", "trial")))
        per_sweep["step"].append(_info_number(sweep.info, "step"))
        per_sweep["epoch"].append(_info_number(sweep.info, "epoch"))
        lr = np.asarray(sweep.lrs, dtype=float)
        loss = np.asarray(sweep.losses, dtype=float)
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(sweep.smoothed_losses())
        changes.append(_loss_change(lr, loss, sma))

    columns = _trial_columns(study, trials)
    columns.update(per_sweep)
    repeats = np.asarray(lengths, dtype=int)
    data: dict[str, Any] = {}
    for name, values in columns.items():
        if name in ("kind", "state") or name.startswith("params_"):
            data[name] = np.repeat(np.asarray(values, dtype=object), repeats)
        else:
            data[name] = np.repeat(np.asarray(values), repeats)
    data["iteration"] = np.concatenate([np.arange(n) for n in lengths]) if lengths else []
    for name, parts in (
        ("lr", lrs),
        ("loss", losses),
        ("smoothed_loss", smoothed),
        ("loss_change", changes),
    ):
        data[name] = np.concatenate(parts) if parts else np.empty(0)
    order = [c for c in columns if c not in per_sweep] + list(STEP_COLUMNS)
    frame = pd.DataFrame({name: data[name] for name in order}, columns=order)
    return _fix_dtypes(frame, int_columns=("number", "sweep", "iteration"))


def _loss_change(lr: np.ndarray, loss: np.ndarray, window: int) -> np.ndarray:
    """:func:`optuna_lrrange.core.loss_change`, but tolerant of what storage may hold."""
    from optuna_lrrange.core import loss_change

    with np.errstate(divide="ignore", invalid="ignore"):
        try:
            return loss_change(lr, loss, window)
        except ValueError:
            return np.full(lr.shape, math.nan)


def _fix_dtypes(frame: pd.DataFrame, int_columns: tuple[str, ...]) -> pd.DataFrame:
    params = [c for c in frame.columns if c.startswith("params_")]
    if params:
        frame[params] = frame[params].infer_objects()
    for name in int_columns:
        if name in frame.columns:
            frame[name] = frame[name].astype("int64")
    for name in frame.columns:
        if name in ("lr", "loss", "smoothed_loss", "loss_change", "step", "epoch"):
            frame[name] = frame[name].astype("float64")
    return frame


def sweeps_summary(study: optuna.Study, *, inherited: bool = False) -> pd.DataFrame:
    """One row per range-test sweep in ``study``: what was found and how it was run.

    Args:
        study: The study, from any storage.
        inherited: Also include the sweeps a retried trial inherited from its failed
            earlier attempt.

    Returns:
        Columns ``number``, ``state``, ``value`` (or ``values_<i>``), ``params_<name>``,
        then ``sweep``, ``kind``, ``step``, ``epoch``, ``chosen_lr`` (the rate the run
        continued at, for a re-estimation), ``suggestion_lr``, ``band_low``,
        ``band_high``, ``method`` and ``reason`` (of the recorded suggestion; ``reason``
        says why there is no band), ``stop_reason``, ``n_steps``, ``final_lr`` (the last
        rate tried), ``min_loss`` (the lowest raw loss), the settings ``start_lr``,
        ``end_lr``, ``num_iter``, ``mode``, ``diverge_factor``, ``smooth_beta`` (what the
        sweep spanned), and ``placement`` (``"offset"`` when the sampler's offset
        placement placed the rate from this sweep, else ``None``), ``anchor`` and
        ``offset`` (the rate is ``anchor * 10 ** offset`` within the range; NaN when no
        anchor was used) and ``narrowed`` (the sweep spanned less than the configured
        range, around the anchors earlier sweeps found).

    Unreadable records are skipped with a ``RecordWarning``.
    """
    pd = _import_pandas()
    _check_inputs(study)
    trials: list[optuna.trial.FrozenTrial] = []
    rows: dict[str, list[Any]] = {k: [] for k in SUMMARY_COLUMNS}
    for trial, index, sweep, suggestion in _records(study, inherited):
        trials.append(trial)
        band = None if suggestion is None else suggestion.band
        losses = np.asarray(sweep.losses, dtype=float)
        finite = losses[np.isfinite(losses)]
        config = sweep.config
        row = {
            "sweep": index,
            "kind": str(sweep.info.get("kind", "trial")),
            "step": _info_number(sweep.info, "step"),
            "epoch": _info_number(sweep.info, "epoch"),
            "chosen_lr": _info_number(sweep.info, "chosen_lr"),
            "suggestion_lr": math.nan
            if suggestion is None or suggestion.lr is None
            else float(suggestion.lr),
            "band_low": math.nan if band is None else float(band[0]),
            "band_high": math.nan if band is None else float(band[1]),
            "method": None if suggestion is None else suggestion.method,
            "reason": None if suggestion is None else suggestion.reason,
            "stop_reason": sweep.stop_reason,
            "n_steps": len(sweep),
            "final_lr": sweep.lrs[-1] if len(sweep) else math.nan,
            "min_loss": float(finite.min()) if finite.size else math.nan,
            "start_lr": config.start_lr,
            "end_lr": config.end_lr,
            "num_iter": config.num_iter,
            "mode": config.mode,
            "diverge_factor": config.diverge_factor,
            "smooth_beta": config.smooth_beta,
            "placement": sweep.info.get("placement"),
            "anchor": _info_number(sweep.info, "anchor"),
            "offset": _info_number(sweep.info, "offset"),
            "narrowed": bool(sweep.info.get("narrowed", False)),
        }
        for key, value in row.items():
            rows[key].append(value)
    columns = _trial_columns(study, trials)
    columns.update(rows)
    frame = pd.DataFrame(columns, columns=list(columns))
    return _fix_dtypes(frame, int_columns=("number", "sweep", "n_steps", "num_iter"))
