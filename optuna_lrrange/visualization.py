"""matplotlib plots of range-test sweeps: data objects first, drawing second.

Each plot comes in two layers, as in ``optuna.visualization.matplotlib``: a ``get_*_info``
function turns a study, a trial or a :class:`~optuna_lrrange.Sweep` into a frozen dataclass
of plain numbers (numpy only, no matplotlib), and ``plot_*`` draws it. Every ``plot_*``
takes ``ax=None`` and returns the ``Axes`` it drew on; when ``ax`` is ``None`` it draws on a
new ``matplotlib.figure.Figure`` (no pyplot, so no global state is touched: save it with
``ax.figure.savefig(path)``). Nothing here calls ``plt.show()`` or changes matplotlib's
style.

Plots:
    :func:`plot_sweep`        one sweep: raw and smoothed loss against lr, band and
                              suggestion marked.
    :func:`plot_loss_change`  the article's loss-change plot: loss change per decade of lr,
                              smoothed by a simple moving average.
    :func:`plot_sweeps`       every trial's sweep overlaid, coloured by objective value,
                              with the rate each trial sampled marked on its curve.
    :func:`plot_bands`        band and chosen rate of every sweep over trial number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from optuna_lrrange._records import read_trial_records
from optuna_lrrange.core import Suggestion, Sweep
from optuna_lrrange.core._smoothing import loss_change as _loss_change

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "BandEntry",
    "BandsPlotInfo",
    "LossChangePlotInfo",
    "OverlayLine",
    "OverlayPlotInfo",
    "SweepPlotInfo",
    "get_bands_plot_info",
    "get_loss_change_plot_info",
    "get_sweep_plot_info",
    "get_sweeps_plot_info",
    "plot_bands",
    "plot_loss_change",
    "plot_sweep",
    "plot_sweeps",
]

SweepSource = Any  # Sweep | optuna.Study | optuna.trial.FrozenTrial


def _import_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(
            "optuna_lrrange.visualization needs matplotlib: `pip install optuna-lrrange[plots]`."
        ) from e
    return matplotlib


def _new_axes(ax: Axes | None, figsize: tuple[float, float] = (7.0, 4.5)) -> Axes:
    _import_matplotlib()
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained").add_subplot()


def _fmt(lr: float) -> str:
    return f"{lr:.3g}"


# --------------------------------------------------------------------------- sources


def _has_records(trial: FrozenTrial) -> bool:
    return any(key.startswith("lrrange:sweep:") for key in trial.user_attrs)


def _pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        for t in trials:
            if t.number == number:
                return t
        raise ValueError(
            f"`trial` must be the number of a trial of the study (0..{len(trials) - 1}), "
            f"but got {number}."
        )
    with_sweeps = [t for t in trials if _has_records(t)]
    if not with_sweeps:
        raise ValueError(
            f"the study {study.study_name!r} must hold at least one sweep record, but it holds "
            "none."
        )
    if len(study.directions) == 1:
        complete = [t for t in with_sweeps if t.value is not None]
        if complete:
            sign = 1.0 if study.direction.name == "MINIMIZE" else -1.0
            return min(complete, key=lambda t: sign * float(t.value))  # type: ignore[arg-type]
    return with_sweeps[-1]


@dataclass(frozen=True)
class _Resolved:
    sweep: Sweep
    suggestion: Suggestion | None
    title: str
    trial: FrozenTrial | None
    position: int


def _resolve(source: SweepSource, trial: int | None, index: int) -> _Resolved:
    """The sweep that ``source`` (a Sweep, FrozenTrial or Study) and ``trial``, ``index`` name."""
    import optuna

    if isinstance(source, Sweep):
        if trial is not None:
            raise ValueError(f"`trial` must be None when `source` is a Sweep, but got {trial}.")
        return _Resolved(source, None, "Learning-rate range test", None, 0)
    picked = ""
    if isinstance(source, optuna.Study):
        frozen = _pick_trial(source, trial)
        if trial is None:
            best = len(source.directions) == 1 and frozen.value is not None
            picked = " (best)" if best else " (last with a sweep)"
    elif isinstance(source, optuna.trial.FrozenTrial):
        frozen = source
    else:
        raise TypeError(
            "`source` must be a Sweep, an optuna.Study or a FrozenTrial, but got "
            f"{type(source).__name__}."
        )
    records = read_trial_records(frozen)
    if not records:
        raise ValueError(f"trial {frozen.number} must hold a sweep record, but it holds none.")
    if not -len(records) <= index < len(records):
        raise ValueError(
            f"`-{len(records)} <= index < {len(records)}` must hold for trial "
            f"{frozen.number}, but got index={index}."
        )
    sweep, suggestion = records[index]
    position = index % len(records)
    kind = sweep.info.get("kind", "trial")
    title = f"Trial {frozen.number}{picked}, sweep {position} ({kind})"
    if "step" in sweep.info:
        title += f" at step {sweep.info['step']}"
    return _Resolved(sweep, suggestion, title, frozen, position)


def _chosen_lr(resolved: _Resolved, param_name: str) -> float | None:
    """The rate the trial went on with after this sweep, if known."""
    if resolved.trial is None:
        return None
    value: Any = None
    if resolved.position == 0:
        value = resolved.trial.params.get(param_name)
    if value is None:
        value = resolved.sweep.info.get("chosen_lr")
    return float(value) if isinstance(value, (int, float)) else None


# --------------------------------------------------------------------------- (1) one sweep


@dataclass(frozen=True)
class SweepPlotInfo:
    """What :func:`plot_sweep` draws.

    Attributes:
        lrs: The rates of the sweep.
        losses: The raw losses.
        smoothed: The bias-corrected EMA of the losses.
        suggestion_lr: The suggested rate, or ``None``.
        band: ``(low, high)`` of the steepest-descent band, or ``None``.
        method: The rule that made the suggestion.
        reason: Why there is no suggestion, or ``None``.
        stop_reason: Why the sweep ended.
        chosen_lr: The rate the trial went on with (its ``param_name`` parameter after the
            first sweep, ``info["chosen_lr"]`` after a re-estimation), or ``None``.
        y_lim: The y range worth showing: the descent, not the divergence tail.
        title: The plot's title.
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion_lr: float | None
    band: tuple[float, float] | None
    method: str | None
    reason: str | None
    stop_reason: str
    chosen_lr: float | None
    y_lim: tuple[float, float] | None
    title: str


def _y_lim(curves: Sequence[np.ndarray], starts: Sequence[float]) -> tuple[float, float] | None:
    """From the lowest point to a little above the starting losses (the tail is cut off)."""
    finite = [c[np.isfinite(c)] for c in curves]
    finite = [c for c in finite if c.size]
    start = np.asarray([s for s in starts if math.isfinite(s)], dtype=float)
    if not finite or not start.size:
        return None
    low = float(min(c.min() for c in finite))
    high = float(min(max(c.max() for c in finite), start.max() + 0.25 * abs(start.max() - low)))
    if not high > low:
        return None
    pad = 0.05 * (high - low)
    return (low - pad, high + pad)


def get_sweep_plot_info(
    source: SweepSource,
    *,
    trial: int | None = None,
    index: int = 0,
    method: str | None = None,
    param_name: str = "lr",
) -> SweepPlotInfo:
    """The data of :func:`plot_sweep` (see there for the arguments)."""
    resolved = _resolve(source, trial, index)
    sweep, suggestion = resolved.sweep, resolved.suggestion
    if method is not None or suggestion is None:
        suggestion = sweep.suggest(method)
    smoothed = sweep.smoothed_losses()
    losses = np.asarray(sweep.losses, dtype=float)
    y_lim = _y_lim([losses, smoothed], [float(smoothed[0])] if smoothed.size else [])
    return SweepPlotInfo(
        lrs=sweep.lrs,
        losses=sweep.losses,
        smoothed=tuple(float(v) for v in smoothed),
        suggestion_lr=suggestion.lr,
        band=suggestion.band,
        method=suggestion.method,
        reason=suggestion.reason,
        stop_reason=sweep.stop_reason,
        chosen_lr=_chosen_lr(resolved, param_name),
        y_lim=y_lim,
        title=resolved.title,
    )


def plot_sweep(
    source: SweepSource,
    *,
    trial: int | None = None,
    index: int = 0,
    method: str | None = None,
    param_name: str = "lr",
    ax: Axes | None = None,
) -> Axes:
    """Loss against learning rate for one sweep: raw and smoothed, band and suggestion.

    Args:
        source: A :class:`~optuna_lrrange.Sweep`, a ``FrozenTrial`` with sweep records, or
            a study (then ``trial`` picks the trial; by default the best trial that has a
            sweep, or the last one for multi-objective studies).
        trial: The trial number, when ``source`` is a study.
        index: Which of the trial's sweeps (0: the one before the rate was sampled; 1, 2,
            ...: re-estimations; negative counts from the end).
        method: A suggestion rule to apply; by default the recorded suggestion is shown
            (for a bare Sweep, the default rule).
        param_name: The learning-rate parameter, whose value is marked on the curve.
        ax: The Axes to draw on; a new Figure is made when ``None``.

    Returns:
        The Axes drawn on.
    """
    info = get_sweep_plot_info(
        source, trial=trial, index=index, method=method, param_name=param_name
    )
    return _draw_sweep(info, _new_axes(ax))


def _draw_sweep(info: SweepPlotInfo, ax: Axes) -> Axes:
    ax.plot(info.lrs, info.losses, color="C0", alpha=0.35, linewidth=1, label="raw loss")
    ax.plot(info.lrs, info.smoothed, color="C0", linewidth=2, label="smoothed loss (EMA)")
    if info.band is not None:
        ax.axvspan(
            *info.band,
            color="C2",
            alpha=0.18,
            label=f"band [{_fmt(info.band[0])}, {_fmt(info.band[1])}]",
        )
    if info.suggestion_lr is not None:
        ax.axvline(
            info.suggestion_lr,
            color="C3",
            linestyle="--",
            label=f"suggestion {_fmt(info.suggestion_lr)} ({info.method})",
        )
    if info.chosen_lr is not None and info.lrs and info.lrs[0] <= info.chosen_lr <= info.lrs[-1]:
        y = float(np.interp(np.log10(info.chosen_lr), np.log10(info.lrs), info.smoothed))
        ax.plot(
            [info.chosen_lr],
            [y],
            "o",
            color="black",
            markersize=7,
            label=f"rate the trial used {_fmt(info.chosen_lr)}",
        )
    ax.set_xscale("log")
    if info.y_lim is not None:
        ax.set_ylim(*info.y_lim)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    subtitle = f"{len(info.lrs)} steps, stopped: {info.stop_reason}"
    if info.reason is not None:
        subtitle += f"; no band: {info.reason}"
    ax.set_title(f"{info.title}\n{subtitle}", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return ax


# --------------------------------------------------------------------------- (2) loss change


@dataclass(frozen=True)
class LossChangePlotInfo:
    """What :func:`plot_loss_change` draws.

    Attributes:
        lrs: The rates shown (after skipping).
        loss_change: The SMA-smoothed loss change per decade at each of ``lrs``.
        sma: The moving-average window.
        min_lr: The rate of the lowest loss change shown (the article's pick), or ``None``.
        min_value: The lowest loss change shown, or ``None``.
        band: The steepest-descent band (as recorded, or of the default rule for a bare
            Sweep), or ``None``.
        y_lim: The y range, or ``None`` for matplotlib's choice.
        title: The plot's title.
    """

    lrs: tuple[float, ...]
    loss_change: tuple[float, ...]
    sma: int
    min_lr: float | None
    min_value: float | None
    band: tuple[float, float] | None
    y_lim: tuple[float, float] | None
    title: str


def get_loss_change_plot_info(
    source: SweepSource,
    *,
    trial: int | None = None,
    index: int = 0,
    sma: int = 20,
    n_skip_start: int = 10,
    n_skip_end: int = 5,
    y_lim: tuple[float, float] | None = None,
) -> LossChangePlotInfo:
    """The data of :func:`plot_loss_change` (see there for the arguments)."""
    for name, value, least in (("sma", sma, 1), ("n_skip_start", n_skip_start, 0)):
        if not isinstance(value, int) or value < least:
            raise ValueError(f"`{name} >= {least}` must hold, but got {name}={value!r}.")
    if not isinstance(n_skip_end, int) or n_skip_end < 0:
        raise ValueError(f"`n_skip_end >= 0` must hold, but got n_skip_end={n_skip_end!r}.")
    if y_lim is not None and not (len(y_lim) == 2 and y_lim[0] < y_lim[1]):
        raise ValueError(f"`y_lim[0] < y_lim[1]` must hold, but got y_lim={y_lim!r}.")
    resolved = _resolve(source, trial, index)
    sweep, title = resolved.sweep, resolved.title
    n = len(sweep)
    if n_skip_start + n_skip_end >= n:
        raise ValueError(
            f"`n_skip_start + n_skip_end < len(sweep)` must hold, but got "
            f"({n_skip_start} + {n_skip_end}, {n})."
        )
    with np.errstate(invalid="ignore"):
        change = _loss_change(sweep.lrs, sweep.losses, sma)
    end = n - n_skip_end
    lrs = np.asarray(sweep.lrs)[n_skip_start:end]
    shown = change[n_skip_start:end]
    finite = np.flatnonzero(np.isfinite(shown))
    min_lr = min_value = None
    if finite.size:
        i = int(finite[np.argmin(shown[finite])])
        min_lr, min_value = float(lrs[i]), float(shown[i])
    return LossChangePlotInfo(
        lrs=tuple(float(v) for v in lrs),
        loss_change=tuple(float(v) for v in shown),
        sma=sma,
        min_lr=min_lr,
        min_value=min_value,
        band=(resolved.suggestion or sweep.suggest()).band,
        y_lim=None if y_lim is None else (float(y_lim[0]), float(y_lim[1])),
        title=title,
    )


def plot_loss_change(
    source: SweepSource,
    *,
    trial: int | None = None,
    index: int = 0,
    sma: int = 20,
    n_skip_start: int = 10,
    n_skip_end: int = 5,
    y_lim: tuple[float, float] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """The article's loss-change plot: d loss per decade of lr, smoothed by an SMA.

    Smith's section 3.3 reads the best rate where the loss falls fastest; this is that
    curve (``plot_loss_change(sma=20, n_skip_beginning=10, n_skip_end=5)`` of the article's
    Keras code), with the loss change taken per decade of learning rate so that its scale
    does not depend on the number of steps. Its minimum is marked.

    Args:
        source: A Sweep, a FrozenTrial or a study, as for :func:`plot_sweep`.
        trial: The trial number, when ``source`` is a study.
        index: Which of the trial's sweeps.
        sma: The moving-average window, in steps.
        n_skip_start: Steps left out at the start.
        n_skip_end: Steps left out at the end (the divergence).
        y_lim: The y range; matplotlib's choice when ``None``.
        ax: The Axes to draw on; a new Figure is made when ``None``.

    Returns:
        The Axes drawn on.
    """
    info = get_loss_change_plot_info(
        source,
        trial=trial,
        index=index,
        sma=sma,
        n_skip_start=n_skip_start,
        n_skip_end=n_skip_end,
        y_lim=y_lim,
    )
    return _draw_loss_change(info, _new_axes(ax))


def _draw_loss_change(info: LossChangePlotInfo, ax: Axes) -> Axes:
    ax.plot(info.lrs, info.loss_change, color="C0", linewidth=2, label=f"SMA over {info.sma}")
    if info.band is not None:
        ax.axvspan(
            *info.band,
            color="C2",
            alpha=0.18,
            label=f"band [{_fmt(info.band[0])}, {_fmt(info.band[1])}]",
        )
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    if info.min_lr is not None and info.min_value is not None:
        ax.axvline(info.min_lr, color="C3", linestyle="--", linewidth=1)
        ax.plot(
            [info.min_lr],
            [info.min_value],
            "o",
            color="C3",
            label=f"steepest descent at lr={_fmt(info.min_lr)}",
        )
    ax.set_xscale("log")
    if info.y_lim is not None:
        ax.set_ylim(*info.y_lim)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss change per decade of lr")
    ax.set_title(f"{info.title}\nrate of loss change", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    return ax


# --------------------------------------------------------------------------- (3) overlay


@dataclass(frozen=True)
class OverlayLine:
    """One trial's sweep in :func:`plot_sweeps`.

    Attributes:
        number: The trial number.
        lrs: The rates of the sweep.
        smoothed: The smoothed losses.
        value: The trial's target value, or ``None`` (not complete).
        chosen_lr: The rate the trial used (its ``param_name`` parameter), or ``None``.
        chosen_loss: The smoothed loss of the sweep at ``chosen_lr`` (interpolated in
            log-lr), or ``None`` when ``chosen_lr`` lies outside the sweep.
        band: The recorded band, or ``None``.
    """

    number: int
    lrs: tuple[float, ...]
    smoothed: tuple[float, ...]
    value: float | None
    chosen_lr: float | None
    chosen_loss: float | None
    band: tuple[float, float] | None


@dataclass(frozen=True)
class OverlayPlotInfo:
    """What :func:`plot_sweeps` draws.

    Attributes:
        lines: One entry per trial with a sweep, worst value first (best drawn last).
        target_name: The colour bar's label.
        reverse_colors: Whether low values get the bright end of the colour map (so that
            the best trials are the darkest for a minimised target).
        y_lim: The y range worth showing.
    """

    lines: tuple[OverlayLine, ...]
    target_name: str
    reverse_colors: bool
    y_lim: tuple[float, float] | None


def _target(
    study: optuna.Study, target: Callable[[FrozenTrial], float] | None
) -> Callable[[FrozenTrial], float | None]:
    if target is not None:
        return target
    if len(study.directions) > 1:
        raise ValueError(
            "`target` must be given for a multi-objective study (for example "
            "`target=lambda t: t.values[0]`), but got None."
        )
    return lambda t: t.value


def get_sweeps_plot_info(
    study: optuna.Study,
    *,
    param_name: str = "lr",
    target: Callable[[FrozenTrial], float] | None = None,
    target_name: str = "Objective Value",
) -> OverlayPlotInfo:
    """The data of :func:`plot_sweeps` (see there for the arguments)."""
    value_of = _target(study, target)
    lines: list[OverlayLine] = []
    for t in study.get_trials(deepcopy=False):
        if not _has_records(t):
            continue
        records = read_trial_records(t)
        if not records:
            continue
        sweep, suggestion = records[0]
        smoothed = sweep.smoothed_losses()
        chosen = t.params.get(param_name)
        chosen_lr = float(chosen) if isinstance(chosen, (int, float)) else None
        chosen_loss = None
        if chosen_lr is not None and len(sweep) and sweep.lrs[0] <= chosen_lr <= sweep.lrs[-1]:
            log_lrs = np.log10(np.asarray(sweep.lrs))
            chosen_loss = float(np.interp(math.log10(chosen_lr), log_lrs, smoothed))
            if not math.isfinite(chosen_loss):
                chosen_loss = None
        raw_value = value_of(t) if t.state.is_finished() else None
        value = None
        if raw_value is not None and math.isfinite(float(raw_value)):
            value = float(raw_value)
        lines.append(
            OverlayLine(
                number=t.number,
                lrs=sweep.lrs,
                smoothed=tuple(float(v) for v in smoothed),
                value=value,
                chosen_lr=chosen_lr,
                chosen_loss=chosen_loss,
                band=None if suggestion is None else suggestion.band,
            )
        )
    maximize = len(study.directions) == 1 and study.direction.name == "MAXIMIZE"
    if target is not None:
        maximize = False

    def badness(line: OverlayLine) -> float:
        if line.value is None:
            return math.inf
        return -line.value if maximize else line.value

    lines.sort(key=badness, reverse=True)
    curves = [np.asarray(line.smoothed) for line in lines]
    starts = [c[0] for c in curves if c.size]
    return OverlayPlotInfo(
        lines=tuple(lines),
        target_name=target_name,
        reverse_colors=maximize,
        y_lim=_y_lim(curves, starts),
    )


def plot_sweeps(
    study: optuna.Study,
    *,
    param_name: str = "lr",
    target: Callable[[FrozenTrial], float] | None = None,
    target_name: str = "Objective Value",
    cmap: str = "viridis",
    ax: Axes | None = None,
) -> Axes:
    """Every trial's first sweep overlaid, coloured by the trial's objective value.

    Each curve is a trial's smoothed range test; the dot on it is the rate the trial then
    sampled, so the plot shows where the good trials sat inside their bands. The best
    trials are drawn last (on top) and darkest; trials without a value are grey.

    Args:
        study: The study.
        param_name: The learning-rate parameter's name.
        target: What colours a trial; required for multi-objective studies. By default the
            objective value.
        target_name: The colour bar's label.
        cmap: A matplotlib colour map name.
        ax: The Axes to draw on; a new Figure is made when ``None``.

    Returns:
        The Axes drawn on.
    """
    info = get_sweeps_plot_info(
        study, param_name=param_name, target=target, target_name=target_name
    )
    return _draw_sweeps(info, _new_axes(ax, (7.5, 4.5)), cmap)


def _draw_sweeps(info: OverlayPlotInfo, ax: Axes, cmap: str) -> Axes:
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable
    from matplotlib.lines import Line2D

    values = [line.value for line in info.lines if line.value is not None]
    colormap = mpl.colormaps[cmap]
    if info.reverse_colors:
        colormap = colormap.reversed()
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    norm = mpl.colors.Normalize(vmin=low, vmax=high)
    any_grey = False
    color: Any
    for line in info.lines:
        if line.value is None:
            color, width, alpha, any_grey = "0.6", 1.0, 0.6, True
        else:
            color, width, alpha = colormap(norm(line.value)), 1.5, 0.9
        ax.plot(line.lrs, line.smoothed, color=color, linewidth=width, alpha=alpha)
        if line.chosen_lr is not None and line.chosen_loss is not None:
            ax.plot(
                [line.chosen_lr],
                [line.chosen_loss],
                "o",
                color=color,
                markeredgecolor="black",
                markersize=6,
            )
    ax.set_xscale("log")
    if info.y_lim is not None:
        ax.set_ylim(*info.y_lim)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("smoothed training loss")
    ax.set_title(f"Range tests of {len(info.lines)} trials", fontsize="medium")
    ax.grid(True, which="major", alpha=0.3)
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            color="0.8",
            markeredgecolor="black",
            label="learning rate the trial sampled",
        ),
    ]
    if any_grey:
        handles.append(Line2D([], [], color="0.6", label="trial without a value"))
    ax.legend(handles=handles, loc="lower left", fontsize="small")
    mappable = ScalarMappable(norm=norm, cmap=colormap)
    ax.figure.colorbar(mappable, ax=ax, label=info.target_name)
    return ax


# --------------------------------------------------------------------------- (4) bands


@dataclass(frozen=True)
class BandEntry:
    """One sweep in :func:`plot_bands`.

    Attributes:
        number: The trial number.
        sweep: The sweep's index within its trial (0: before sampling; 1, ...: re-estimates).
        kind: ``"trial"`` or ``"reestimate"``.
        x: Where it is drawn: the trial number, re-estimations spread to the right of it.
        band: The recorded band, or ``None``.
        chosen_lr: The rate used after the sweep (the sampled parameter for the first
            sweep, ``info["chosen_lr"]`` for a re-estimation), or ``None``.
        reason: Why there is no band, or ``None``.
        anchor: The anchor the rate was placed from (``placement="offset"``: the rate is
            ``anchor * 10 ** offset`` within the range), or ``None``.
    """

    number: int
    sweep: int
    kind: str
    x: float
    band: tuple[float, float] | None
    chosen_lr: float | None
    reason: str | None
    anchor: float | None = None


@dataclass(frozen=True)
class BandsPlotInfo:
    """What :func:`plot_bands` draws.

    Attributes:
        entries: One per sweep, in trial and sweep order.
        search_range: ``(low, high)`` of the learning-rate distribution, or ``None``.
        best_number: The best trial's number (single objective), or ``None``.
        param_name: The learning-rate parameter's name.
    """

    entries: tuple[BandEntry, ...]
    search_range: tuple[float, float] | None
    best_number: int | None
    param_name: str


def get_bands_plot_info(study: optuna.Study, *, param_name: str = "lr") -> BandsPlotInfo:
    """The data of :func:`plot_bands` (see there for the arguments)."""
    from optuna.distributions import FloatDistribution, IntDistribution

    entries: list[BandEntry] = []
    search_range = None
    for t in study.get_trials(deepcopy=False):
        dist = t.distributions.get(param_name)
        if search_range is None and isinstance(dist, (FloatDistribution, IntDistribution)):
            search_range = (float(dist.low), float(dist.high))
        if not _has_records(t):
            continue
        records = read_trial_records(t)
        for i, (sweep, suggestion) in enumerate(records):
            kind = str(sweep.info.get("kind", "trial"))
            chosen: Any = t.params.get(param_name) if i == 0 else None
            if kind == "reestimate" or chosen is None:
                chosen = sweep.info.get("chosen_lr", chosen)
            anchor = sweep.info.get("anchor") if kind == "trial" else None
            entries.append(
                BandEntry(
                    number=t.number,
                    sweep=i,
                    kind=kind,
                    x=t.number + (0.7 * i / len(records) if i else 0.0),
                    band=None if suggestion is None else suggestion.band,
                    chosen_lr=float(chosen) if isinstance(chosen, (int, float)) else None,
                    reason=None if suggestion is None else suggestion.reason,
                    anchor=float(anchor) if isinstance(anchor, (int, float)) else None,
                )
            )
    best = None
    if len(study.directions) == 1:
        try:
            best = study.best_trial.number
        except ValueError:
            best = None
    return BandsPlotInfo(
        entries=tuple(entries), search_range=search_range, best_number=best, param_name=param_name
    )


def plot_bands(study: optuna.Study, *, param_name: str = "lr", ax: Axes | None = None) -> Axes:
    """Band and chosen learning rate of every sweep, over trial number.

    Each sweep's band is a vertical bar, the rate the trial then used a dot inside it (the
    re-estimations of a trial sit just to its right, in another colour); a cross marks a
    sweep without a band (the full range was used). Dotted lines show the search range. With
    ``LRRangeSampler(placement="offset")`` a black tick marks the anchor each rate was placed
    from (the sweep's drop point): the rate's distance from it is the trial's offset.

    Args:
        study: The study.
        param_name: The learning-rate parameter's name.
        ax: The Axes to draw on; a new Figure is made when ``None``.

    Returns:
        The Axes drawn on.
    """
    info = get_bands_plot_info(study, param_name=param_name)
    return _draw_bands(info, _new_axes(ax, (7.5, 4.5)))


def _chosen_points(entries: Iterable[BandEntry]) -> tuple[list[float], list[float]]:
    """``(x, chosen_lr)`` of the entries that have a chosen rate."""
    xs: list[float] = []
    ys: list[float] = []
    for e in entries:
        if e.chosen_lr is not None:
            xs.append(e.x)
            ys.append(e.chosen_lr)
    return xs, ys


def _draw_bands(info: BandsPlotInfo, ax: Axes) -> Axes:
    from matplotlib.ticker import MaxNLocator

    styles = {"trial": ("C0", "o", "first sweep"), "reestimate": ("C1", "D", "re-estimate")}
    for kind, (color, marker, label) in styles.items():
        banded = [e for e in info.entries if e.kind == kind and e.band is not None]
        if banded:
            ax.vlines(
                [e.x for e in banded],
                [e.band[0] for e in banded],  # type: ignore[index]
                [e.band[1] for e in banded],  # type: ignore[index]
                color=color,
                alpha=0.35,
                linewidth=7,
                label=f"band ({label})",
            )
        xs, ys = _chosen_points(e for e in info.entries if e.kind == kind)
        if xs:
            ax.plot(
                xs,
                ys,
                marker,
                color=color,
                markeredgecolor="black",
                markersize=5,
                linestyle="",
                label=f"chosen {info.param_name} ({label})",
            )
    anchored = [(e.x, e.anchor) for e in info.entries if e.anchor is not None]
    if anchored:
        ax.plot(
            [x for x, _ in anchored],
            [a for _, a in anchored],
            "_",
            color="black",
            markersize=12,
            linestyle="",
            label="anchor (rate = anchor x 10**offset)",
        )
    xs, ys = _chosen_points(e for e in info.entries if e.band is None)
    if xs:
        ax.plot(
            xs,
            ys,
            "x",
            color="C3",
            markersize=8,
            linestyle="",
            label="no band: full range used",
        )
    if info.best_number is not None:
        right = max([e.x for e in info.entries if e.number == info.best_number], default=0.0)
        ax.axvspan(
            info.best_number - 0.4,
            max(right, info.best_number) + 0.4,
            color="gold",
            alpha=0.3,
            zorder=0,
            label=f"best trial ({info.best_number})",
        )
    if info.search_range is not None:
        for bound in info.search_range:
            ax.axhline(bound, color="0.5", linestyle=":", linewidth=1)
        ax.plot([], [], color="0.5", linestyle=":", label="search range")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{info.param_name} (log scale)")
    ax.set_title("Steepest-descent band and chosen learning rate per trial", fontsize="medium")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return ax
