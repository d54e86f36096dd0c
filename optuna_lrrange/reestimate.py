"""Periodic re-estimation of the learning rate during a long PyTorch training run.

The best learning rate falls as training goes on. :class:`LRReestimator` re-runs a short
range test from the current weights at chosen points of a training loop (every few epochs,
every few steps, or when a validation loss stops improving), and moves the optimizer to the
rate it suggests. The sweep goes through :func:`optuna_lrrange.pytorch.range_test`, which
restores the model, its buffers, the optimizer state, every learning rate and (on the
main thread) the RNG states exactly, so the run continues bitwise as if the learning rate
had been set by hand.

Inside an Optuna trial every re-estimation is recorded on the trial next to the sampler's
first sweep (``kind == "reestimate"`` in ``Sweep.info``), readable with
:func:`optuna_lrrange.get_sweeps`.

How the defaults were chosen (numbers in ``studies/reestimation/results.md``):

- ``span=2.0``: the sweep covers two decades either side of the current rate, enough to
  reach divergence from a rate that was itself chosen by a range test, and to find a rate
  up to two decades lower.
- ``num_iter=40``: four decades in 40 steps is 10 steps a decade, the density of the
  default 100-step sweep over ten decades, at 6-8% extra optimizer steps for a sweep
  every 8 epochs on the benchmark tasks.
- Measured: from trained weights the loss rarely *descends* inside such a sweep (it is
  flat, then diverges), so the descent-based rules mostly return no suggestion; longer or
  wider sweeps did little better. With the default ``method=None`` the re-estimator then
  falls back to ``edge_div10``, a tenth of the rate where the loss starts to rise.
- ``allow_increase=False``: a re-estimation never raises the rate (the best rate falls as
  training goes on; raising it from trained weights wrecked the digits runs). With it,
  re-estimation beat a constant rate on MNIST-1D (1.38 vs 1.75 validation loss, 5 of 5
  seeds) and breast cancer (0.17 vs 0.23) and matched it on digits; a cosine schedule
  rescaled by re-estimation was the best arm on two of three tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
import math
import numbers
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from optuna_lrrange.core import RULES, RangeTestConfig, Suggestion, Sweep

if TYPE_CHECKING:
    import optuna
    import torch

__all__ = ["SUPPORTED_SCHEDULERS", "LRReestimator", "Reestimation", "scale_scheduler"]

#: ``apply`` values: set the rate on every param group, or rescale the LR scheduler.
_APPLY = ("set", "scale_scheduler")

#: ``kept_reason`` of a re-estimation whose suggestion was above the current rate while
#: ``allow_increase=False``.
WOULD_RAISE = "would_raise"

#: Why a re-estimation ran (``Sweep.info["trigger"]``).
_TRIGGERS = ("every_steps", "every_epochs", "plateau", "manual")

# Scheduler class name -> its attributes (lists of per-group rates or one float) that hold
# absolute learning rates and must be scaled with the schedule. Every scheduler also
# gets its ``base_lrs``, ``_last_lr`` and each param group's "lr" and "initial_lr" scaled.
_SCHEDULER_ATTRS: dict[str, tuple[str, ...]] = {
    "LambdaLR": (),
    "MultiplicativeLR": (),
    "StepLR": (),
    "MultiStepLR": (),
    "ConstantLR": (),
    "LinearLR": (),
    "ExponentialLR": (),
    "PolynomialLR": (),
    "CosineAnnealingLR": ("eta_min",),
    "CosineAnnealingWarmRestarts": ("eta_min",),
    "CyclicLR": ("max_lrs",),
    "OneCycleLR": (),  # its rates live in the param groups: "max_lr", "min_lr"
    "ReduceLROnPlateau": ("min_lrs",),
}

#: The ``torch.optim.lr_scheduler`` classes whose schedule :func:`scale_scheduler` can rescale.
SUPPORTED_SCHEDULERS = tuple(sorted(_SCHEDULER_ATTRS))

_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


class Reestimation(NamedTuple):
    """One re-estimation, as kept in :attr:`LRReestimator.history`.

    Attributes:
        step: The training step it ran at, as passed to :meth:`LRReestimator.step`.
        epoch: The epoch it ran at, as passed to :meth:`LRReestimator.step`.
        sweep: The sweep, its ``info`` saying where and why it ran and what came of it
            (``"previous_lr"``, ``"chosen_lr"``, ``"trigger"``, ``"kept_reason"``, ...).
        suggestion: What the rule made of the sweep.
        lr: The rate of param group 0 from then on (the previous one when the sweep gave
            no suggestion).
    """

    step: int | None
    epoch: int | None
    sweep: Sweep
    suggestion: Suggestion
    lr: float


def _float(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _set_group_value(group: dict[str, Any], key: str, value: float) -> None:
    old = group[key]
    if hasattr(old, "fill_"):  # a tensor learning rate (capturable optimizers)
        old.fill_(value)
    else:
        group[key] = value


def _set_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Group 0 gets ``lr`` exactly; every other group keeps its ratio to group 0."""
    groups = optimizer.param_groups
    lr0 = _float(groups[0]["lr"])
    for i, group in enumerate(groups):
        _set_group_value(group, "lr", lr if i == 0 else _float(group["lr"]) * (lr / lr0))


def _scheduler_attrs(scheduler: Any) -> tuple[str, ...]:
    """The extra rate attributes of a supported scheduler; raises for any other."""
    for cls in type(scheduler).__mro__:
        if cls.__module__.startswith("torch.optim") and cls.__name__ in _SCHEDULER_ATTRS:
            return _SCHEDULER_ATTRS[cls.__name__]
    raise TypeError(
        f"`scheduler` must be one of torch's {', '.join(SUPPORTED_SCHEDULERS)} (or a "
        f"subclass), but got {type(scheduler).__name__}. Pass apply='set' without a "
        "scheduler, or rescale your scheduler yourself."
    )


def scale_scheduler(scheduler: Any, factor: float) -> None:
    """Multiplies a learning-rate schedule, from now on, by ``factor``, keeping its shape.

    The scheduler's stored rates (``base_lrs``, and ``eta_min``, ``max_lrs`` or ``min_lrs``
    where it has them), each param group's current ``lr``, ``initial_lr`` (and OneCycleLR's
    ``max_lr``, ``min_lr``) are all multiplied by ``factor``, so every rate the scheduler
    produces from here on is ``factor`` times what it would have produced.

    Args:
        scheduler: One of the ``torch.optim.lr_scheduler`` classes named in
            :data:`SUPPORTED_SCHEDULERS` (or a subclass of one).
        factor: Positive and finite.

    Raises:
        TypeError: The scheduler is of another class (``SequentialLR``, ``ChainedScheduler``,
            or a user-defined one): its schedule cannot be rescaled from outside.
    """
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"`factor > 0` must hold, but got factor={factor!r}.")
    extra = _scheduler_attrs(scheduler)
    for group in scheduler.optimizer.param_groups:
        for key in _GROUP_KEYS:
            if key in group:
                _set_group_value(group, key, _float(group[key]) * factor)
    for name in ("base_lrs", "_last_lr", *extra):
        value = getattr(scheduler, name, None)
        if isinstance(value, (list, tuple)):
            setattr(scheduler, name, [_float(v) * factor for v in value])
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(scheduler, name, float(value) * factor)


class LRReestimator:
    """Re-estimates the learning rate at chosen points of a PyTorch training loop.

    Call :meth:`step` from the loop; at the points chosen by ``every_epochs``,
    ``every_steps`` and ``on_plateau`` (any that are set; at most one sweep per call) it runs
    a short range test from the current weights, from ``current / 10**span`` to
    ``current * 10**span``, and moves the optimizer to the rate the rule suggests. The
    model, buffers, optimizer state and (on the main thread) RNG states after the call are
    exactly those before it; only the learning rate changed.

    Args:
        model: The model being trained.
        optimizer: Its optimizer. Param groups keep their ratios to group 0.
        loss_fn: ``loss_fn(model(x), y)`` for batches ``(x, y)``; ``None`` for dict
            batches whose model returns its own loss; ``batch_loss(fn)`` for
            ``fn(model, batch)``: as for :func:`optuna_lrrange.pytorch.range_test`. Or
            give ``step_fn``.
        loader: The training data the sweeps draw batches from (an iterable of batches;
            a ``DataLoader`` is typical).
        every_epochs: Re-estimate when ``step(epoch=e)`` is called with ``e > 0`` a multiple
            of this.
        every_steps: Re-estimate when ``step(step=s)`` is called with ``s > 0`` a multiple
            of this.
        on_plateau: Patience: re-estimate once ``step(val_loss=v)`` has been called this
            many times in a row without ``v`` improving on the best so far by more than
            ``plateau_threshold`` (relative). Lower is better; pass ``-accuracy`` for a
            metric to maximise.
        plateau_threshold: Relative improvement that counts as one, ``>= 0``.
        num_iter: Steps of each sweep (the run's extra optimizer steps per re-estimation,
            fewer when a sweep diverges early).
        span: Decades of learning rate the sweep covers either side of the current rate.
        method: The suggestion rule (a name in ``optuna_lrrange.RULES``); ``None`` for the
            default, falling back to ``edge_div10`` (a tenth of the rate where the loss
            starts to rise) when the default finds no descent, as sweeps from trained
            weights mostly do.
        apply: ``"set"``: set the new rate on every param group. ``"scale_scheduler"``:
            multiply ``scheduler``'s schedule so that its current rate becomes the new one
            and its shape is kept (see :func:`scale_scheduler`). ``None``: the latter when a
            scheduler is given, the former otherwise.
        scheduler: The LR scheduler driving ``optimizer``, if any.
        trial: An Optuna trial to record each re-estimation on
            (``optuna_lrrange.get_sweeps(trial)`` reads them back); ``None`` keeps them on
            this object only (:attr:`history`). Under ``torch.distributed`` pass the
            ``TorchDistributedTrial`` on every rank (rank 0 records; every rank gets the
            same sweep and rate), or the trial on rank 0 and ``None`` elsewhere.
        max_change: If set, a re-estimation moves the rate by at most this factor up or
            down (``> 1``).
        allow_increase: Whether a re-estimation may raise the rate. Off by default: the
            best rate falls as training goes on, and from trained weights a sweep can read
            a small dip as a descent and suggest a rate that wrecks the run (on the digits
            task of ``studies/reestimation`` raising it took the validation loss from 0.04
            to 0.8). A suggestion above the current rate then keeps the rate, with
            ``kept_reason="would_raise"`` and the suggestion in ``refused_lr``.
        step_fn: Passed to :func:`optuna_lrrange.pytorch.range_test` (instead of
            ``loss_fn``).
        range_test_options: Further keyword arguments of
            :func:`optuna_lrrange.pytorch.range_test`: only ``accumulation_steps``,
            ``scaler``, ``autocast_dtype``, ``device``, ``snapshot_device``,
            ``process_group`` (a re-estimation always restores the training state, and the
            sweep's settings are this constructor's). Every argument is checked here, not
            at the first re-estimation. With a ``DistributedDataParallel`` model (or a
            ``process_group``) every rank must call :meth:`step` at the same points;
            ``on_plateau`` watches the mean of the ranks' ``val_loss``.
        artifact_store: With ``trial``, an Optuna artifact store: each re-estimation's plot
            is uploaded as an artifact of the trial and the trial's note is updated, for
            optuna-dashboard (see :mod:`optuna_lrrange.dashboard`). A failed upload never
            fails the run.
        config_options: Further :class:`~optuna_lrrange.RangeTestConfig` settings
            (``mode``, ``diverge_factor``, ``smooth_beta``).

    Example:
        .. code-block:: python

            reest = LRReestimator(model, optimizer, loss_fn, train_loader, every_epochs=5)
            for epoch in range(50):
                reest.step(epoch=epoch)
                for x, y in train_loader:
                    ...  # the usual training step
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[..., Any] | None = None,
        loader: Iterable[Any] | None = None,
        *,
        every_epochs: int | None = None,
        every_steps: int | None = None,
        on_plateau: int | None = None,
        plateau_threshold: float = 1e-3,
        num_iter: int = 40,
        span: float = 2.0,
        method: str | None = None,
        apply: str | None = None,
        scheduler: Any = None,
        trial: optuna.trial.Trial | None = None,
        max_change: float | None = None,
        allow_increase: bool = False,
        step_fn: Callable[..., Any] | None = None,
        range_test_options: Mapping[str, Any] | None = None,
        artifact_store: Any = None,
        **config_options: Any,
    ) -> None:
        _check_rule_settings(
            {"every_epochs": every_epochs, "every_steps": every_steps, "on_plateau": on_plateau},
            span=span,
            plateau_threshold=plateau_threshold,
            max_change=max_change,
            method=method,
            allow_increase=allow_increase,
            num_iter=num_iter,
            config_options=config_options,
        )
        if apply is None:
            apply = "scale_scheduler" if scheduler is not None else "set"
        if apply not in _APPLY:
            raise ValueError(f"`apply` must be one of {_APPLY}, but got {apply!r}.")
        if apply == "scale_scheduler" and scheduler is None:
            raise ValueError("`apply='scale_scheduler'` needs `scheduler`, but got None.")
        if apply == "set" and scheduler is not None:
            raise ValueError(
                "`apply='set'` must not be given a `scheduler` (it would overwrite the rate "
                "on its next step), but got one; use apply='scale_scheduler'."
            )
        if scheduler is not None:
            _scheduler_attrs(scheduler)  # fails early on an unsupported scheduler
        _check_training_objects(model, optimizer, loss_fn, loader, step_fn, range_test_options)
        if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
            raise ValueError(
                "`scheduler` must drive `optimizer` (scheduler.optimizer is optimizer), but it "
                "drives another optimizer."
            )
        if trial is not None:
            _check_trial(trial)
        if artifact_store is not None:
            if trial is None:
                raise ValueError(
                    "`artifact_store` needs `trial` (each plot is an artifact of the trial), "
                    "but got trial=None."
                )
            from optuna_lrrange.dashboard import check_artifact_store

            check_artifact_store(artifact_store)

        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.loader = loader
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.on_plateau = on_plateau
        self.plateau_threshold = float(plateau_threshold)
        self.num_iter = num_iter
        self.span = float(span)
        self.method = method
        self.apply = apply
        self.scheduler = scheduler
        self.trial = trial
        self.max_change = max_change
        self.allow_increase = allow_increase
        self.step_fn = step_fn
        self.range_test_options = dict(range_test_options or {})
        self.config_options = config_options
        self.artifact_store = artifact_store
        #: Every re-estimation so far, oldest first.
        self.history: list[Reestimation] = []
        #: Optimizer steps the sweeps took, in all.
        self.extra_steps = 0
        #: Wall-clock seconds the sweeps took, in all.
        self.sweep_seconds = 0.0
        self._best: float | None = None
        self._wait = 0
        self._last_epoch: int | None = None
        self._last_step: int | None = None

    def _group(self) -> Any:
        """The process group the sweeps run across, or ``None``."""
        from optuna_lrrange._distributed import sweep_group

        return sweep_group(self.model, self.range_test_options.get("process_group"))

    @property
    def lr(self) -> float:
        """The current learning rate of param group 0."""
        return _float(self.optimizer.param_groups[0]["lr"])

    def step(
        self,
        *,
        epoch: int | None = None,
        step: int | None = None,
        val_loss: float | None = None,
    ) -> float | None:
        """Re-estimates the rate if this point of the run is one of the chosen ones.

        Args:
            epoch: Epochs completed so far (call at the start of each epoch with its
                0-based index). Epoch 0 never triggers.
            step: Optimizer steps taken so far. Step 0 never triggers.
            val_loss: The newest validation loss, for ``on_plateau``; pass it once per
                evaluation.

        Returns:
            The learning rate of param group 0 after a re-estimation (unchanged if the
            sweep gave no suggestion), or ``None`` if none ran.
        """
        trigger = None
        if val_loss is not None and self.on_plateau is not None:
            value = _float(val_loss)
            group = self._group()
            if group is not None:  # every rank sees the same plateau, and sweeps with the others
                from optuna_lrrange._distributed import mean_over_ranks

                value = mean_over_ranks(value, group)
            if self._best is None or value < self._best - self.plateau_threshold * abs(self._best):
                self._best, self._wait = value, 0
            else:
                self._wait += 1
            if self._wait >= self.on_plateau:
                trigger, self._wait = "plateau", 0
        if trigger is None and _due(step, self.every_steps, self._last_step):
            trigger = "every_steps"
        if trigger is None and _due(epoch, self.every_epochs, self._last_epoch):
            trigger = "every_epochs"
        if trigger is None:
            return None
        return self.reestimate(epoch=epoch, step=step, trigger=trigger).lr

    def reestimate(
        self,
        *,
        epoch: int | None = None,
        step: int | None = None,
        trigger: str = "manual",
    ) -> Reestimation:
        """Runs one sweep now and moves the optimizer to its suggestion.

        Args:
            epoch: Recorded with the sweep.
            step: Recorded with the sweep.
            trigger: Why it runs (recorded); ``"manual"`` when called directly.

        Returns:
            The :class:`Reestimation`, also appended to :attr:`history` and, with a trial,
            written to its storage.
        """
        if trigger not in _TRIGGERS:
            raise ValueError(f"`trigger` must be one of {_TRIGGERS}, but got {trigger!r}.")
        from optuna_lrrange.pytorch import range_test

        previous = self.lr
        if not (math.isfinite(previous) and previous > 0):
            raise ValueError(
                f"the current learning rate must be positive and finite, but got {previous!r}."
            )
        # Checked before the sweep: a re-estimation that cannot be recorded changes nothing.
        trial = _running_trial(self.trial)
        config = RangeTestConfig(
            start_lr=previous / 10**self.span,
            end_lr=previous * 10**self.span,
            num_iter=self.num_iter,
            **self.config_options,
        )
        start = time.perf_counter()
        sweep = range_test(
            self.model,
            self.optimizer,
            self.loss_fn,
            self.loader,
            config=config,
            step_fn=self.step_fn,
            restore=True,
            **self.range_test_options,
        )
        seconds = time.perf_counter() - start
        suggestion, chosen, outcome = _decide(
            sweep,
            previous,
            method=self.method,
            allow_increase=self.allow_increase,
            max_change=self.max_change,
        )
        info: dict[str, Any] = {
            "kind": "reestimate",
            "step": step,
            "epoch": epoch,
            "trigger": trigger,
            "previous_lr": previous,
            "seconds": seconds,
            **outcome,
        }
        # Recorded before the rate moves: if the write fails, the run is unchanged.
        sweep = _record_sweep(trial, sweep, suggestion, info)
        if "kept_reason" not in outcome:
            if self.apply == "set":
                _set_rate(self.optimizer, chosen)
            else:
                scale_scheduler(self.scheduler, chosen / previous)
                _set_rate(self.optimizer, chosen)  # group 0 exactly, ratios kept
        if trial is not None and self.artifact_store is not None:
            from optuna_lrrange.dashboard import publish_safely

            publish_safely(trial.study, trial._trial_id, self.artifact_store, "lr")
        record = Reestimation(step, epoch, sweep, suggestion, chosen)
        self.history.append(record)
        self.extra_steps += len(sweep)
        self.sweep_seconds += seconds
        if epoch is not None:
            self._last_epoch = epoch
        if step is not None:
            self._last_step = step
        return record


def _trial_on_this_rank(trial: Any) -> Any:
    """The live ``optuna.Trial`` to record on in this process, or ``None``.

    A ``TorchDistributedTrial`` records through its real trial, on rank 0 only: one record
    per re-estimation, however many ranks take part in it.
    """
    if trial is None:
        return None
    if type(trial).__name__ == "TorchDistributedTrial":
        from optuna_lrrange._distributed import trial_on_this_rank

        trial = trial_on_this_rank(trial)
    return trial if _is_live_trial(trial) else None


def _check_rule_settings(
    triggers: Mapping[str, int | None],
    *,
    span: Any,
    plateau_threshold: Any,
    max_change: Any,
    method: Any,
    allow_increase: Any,
    num_iter: Any,
    config_options: Mapping[str, Any],
) -> None:
    """Refuses, at construction, re-estimation settings that are out of range: the triggers
    (at least one set), ``span``, ``plateau_threshold``, ``max_change``, ``method``,
    ``allow_increase``, ``num_iter`` and the range-test settings. Shared by every framework's
    re-estimation."""
    for name, value in triggers.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"`{name} >= 1` must hold, but got {name}={value!r}.")
    if all(value is None for value in triggers.values()):
        names = ", ".join(f"`{name}`" for name in triggers)
        raise ValueError(
            f"one of {names} must be set, but got none; with no trigger, call "
            "`reestimate()` yourself."
        )
    if not (_is_number(span) and math.isfinite(span) and span > 0):
        raise ValueError(f"`span > 0` must hold, but got span={span!r}.")
    if not (
        _is_number(plateau_threshold)
        and math.isfinite(plateau_threshold)
        and plateau_threshold >= 0
    ):
        raise ValueError(
            f"`plateau_threshold >= 0` must hold, but got plateau_threshold={plateau_threshold!r}."
        )
    if max_change is not None and not (
        _is_number(max_change) and math.isfinite(max_change) and max_change > 1
    ):
        raise ValueError(f"`max_change > 1` must hold, but got max_change={max_change!r}.")
    if method is not None and method not in RULES:
        raise ValueError(f"`method` must be one of {sorted(RULES)} or None, but got {method!r}.")
    if not isinstance(allow_increase, bool):
        raise TypeError(
            f"`allow_increase` must be a bool, but got {type(allow_increase).__name__} "
            f"{allow_increase!r}."
        )
    for key in ("start_lr", "end_lr", "config"):
        if key in config_options:
            raise ValueError(
                f"`{key}` is set from the current rate and `span`, but got {key}="
                f"{config_options[key]!r}."
            )
    # Validates num_iter and the config options now rather than at the first sweep.
    RangeTestConfig(start_lr=1.0, end_lr=10.0, num_iter=num_iter, **config_options)


def _running_trial(trial: Any) -> Any:
    """The live trial to record on in this process (see :func:`_trial_on_this_rank`), or
    ``None``; a clear error when that trial is already finished."""
    live = _trial_on_this_rank(trial)
    if live is not None:
        state = live.study._storage.get_trial(live._trial_id).state
        if state.is_finished():
            raise RuntimeError(
                f"the trial must be running to record a re-estimation on it, but trial "
                f"{live.number} is {state.name}; re-estimate before `study.tell`, or "
                "pass trial=None to keep the re-estimations in `history` only."
            )
    return live


def _decide(
    sweep: Sweep,
    previous: float,
    *,
    method: str | None,
    allow_increase: bool,
    max_change: float | None,
) -> tuple[Suggestion, float, dict[str, Any]]:
    """What a re-estimation makes of its sweep, whatever the framework.

    Returns the suggestion (with the ``edge_div10`` fallback when ``method`` is ``None``
    and the default rule finds no descent), the rate to move to (``previous`` when it is
    kept), and the ``Sweep.info`` entries that say why: ``fallback_from``,
    ``kept_reason`` and ``refused_lr`` (the rate is kept), ``clamped_from``, ``chosen_lr``.
    """
    suggestion = sweep.suggest(method)
    outcome: dict[str, Any] = {}
    if method is None and suggestion.method == "edge_div10":
        outcome["fallback_from"] = suggestion.reason
    chosen = previous
    if suggestion.lr is None:
        outcome["kept_reason"] = suggestion.reason
    elif suggestion.lr > previous and not allow_increase:
        outcome["kept_reason"] = WOULD_RAISE
        outcome["refused_lr"] = float(suggestion.lr)
    else:
        chosen = float(suggestion.lr)
        if max_change is not None:
            bounded = min(max(chosen, previous / max_change), previous * max_change)
            if bounded != chosen:
                outcome["clamped_from"] = chosen
                chosen = bounded
    outcome["chosen_lr"] = chosen
    return suggestion, chosen, outcome


def _record_sweep(
    trial: Any, sweep: Sweep, suggestion: Suggestion, info: Mapping[str, Any]
) -> Sweep:
    """``sweep`` with ``info`` added, written to ``trial`` when it is a live Optuna trial
    (with its number and id in the info); a ``FixedTrial`` or ``None`` records nothing."""
    info = dict(info)
    live = trial if trial is not None and _is_live_trial(trial) else None
    if live is not None:
        info["trial_number"] = live.number
        info["trial_id"] = live._trial_id
    sweep = replace(sweep, info={**dict(sweep.info), **info})
    if live is not None:
        from optuna_lrrange._records import write_sweep

        write_sweep(live.study._storage, live._trial_id, sweep, suggestion)
    return sweep


def _due(count: int | None, every: int | None, last: int | None) -> bool:
    """Whether a step or epoch ``count`` is a fresh, positive multiple of ``every``."""
    return (
        every is not None
        and count is not None
        and count > 0
        and count % every == 0
        and count != last
    )


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (and not a bool or a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


#: The keyword arguments of ``range_test`` that ``range_test_options`` may set; the others
#: (the model, optimizer, loss, data, ``config``, ``restore``) are the re-estimator's own.
_RANGE_TEST_OPTIONS = (
    "accumulation_steps",
    "autocast_dtype",
    "device",
    "process_group",
    "scaler",
    "snapshot_device",
)


def _check_training_objects(
    model: Any,
    optimizer: Any,
    loss_fn: Any,
    loader: Any,
    step_fn: Any,
    range_test_options: Any,
) -> None:
    """Refuses, at construction, what would otherwise fail at the first re-estimation."""
    from optuna_lrrange.pytorch import _check_arguments

    if range_test_options is not None:
        if not isinstance(range_test_options, Mapping):
            raise TypeError(
                "`range_test_options` must be a mapping of range_test keyword arguments, but "
                f"got {type(range_test_options).__name__}."
            )
        unknown = sorted(set(range_test_options) - set(_RANGE_TEST_OPTIONS))
        if unknown:
            raise ValueError(
                f"`range_test_options` must be among {list(_RANGE_TEST_OPTIONS)}, but got "
                f"{unknown}: the rest is LRReestimator's own (it always restores the training "
                "state, and the sweep's settings are its keyword arguments)."
            )
    accumulation_steps = (range_test_options or {}).get("accumulation_steps", 1)
    _check_arguments(model, optimizer, loss_fn, loader, step_fn, accumulation_steps)
    for name, function in (("loss_fn", loss_fn), ("step_fn", step_fn)):
        if function is not None and not callable(function):
            raise TypeError(f"`{name}` must be callable, but got {type(function).__name__}.")
    if not isinstance(loader, Iterable):
        raise TypeError(
            f"`loader` must be an iterable of batches, but got {type(loader).__name__}."
        )


def _is_live_trial(trial: Any) -> bool:
    from optuna.trial import Trial

    return isinstance(trial, Trial)


def _check_trial(trial: Any) -> None:
    from optuna.trial import FixedTrial, Trial

    if isinstance(trial, (Trial, FixedTrial)):
        return
    if type(trial).__name__ == "TorchDistributedTrial":
        from optuna_lrrange._distributed import is_torch_distributed_trial

        if is_torch_distributed_trial(trial):
            return
    raise TypeError(
        "`trial` must be an optuna Trial, a TorchDistributedTrial (recorded by rank 0) or a "
        f"FixedTrial (which records nothing), but got {type(trial).__name__}."
    )
