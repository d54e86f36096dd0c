"""The Keras 3 adapter: a range test on a compiled Keras model, on any backend.

Import it as ``optuna_lrrange.keras`` (``import optuna_lrrange`` never imports Keras), with
the backend chosen as usual, through ``KERAS_BACKEND``, before Keras is first imported::

    from optuna_lrrange.keras import range_test

    sweep = range_test(model, x_train, y_train, batch_size=64)
    print(sweep.suggest().lr)

Each step is one ``model.train_on_batch`` call (so the model's own ``train_step`` runs,
with its loss, regularization losses and metrics) at the step's rate, set on the model's
optimizer. The loop, the stop rule and the :class:`~optuna_lrrange.core.Sweep` it returns
are the ones every other adapter shares (:func:`optuna_lrrange.run_range_test`).

Afterwards the model's variables (weights, BatchNormalization statistics, the dropout
layers' seed states), the optimizer's variables (its iteration count, momentum, Adam
moments, the rate), its learning-rate schedule, the metrics' state, Keras' global seed
generator and the Python, numpy and (on the torch backend) torch random number generators
are exactly what they were, also when a step raises; nothing is written to disk.
:func:`preserved` gives that snapshot for other uses.

Tested with Keras 3.15 on the torch backend. The code uses the backend-neutral Keras API
(``train_on_batch``, ``Variable.assign``, ``keras.ops``), so JAX and TensorFlow are expected
to work; beyond it, it reads four private details of Keras: the optimizer's
``_learning_rate``, the trainer's ``_compile_loss`` and ``_compile_metrics``, and where the
global seed generator is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import math
import time
from typing import Any
import warnings

try:
    import keras
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "optuna_lrrange.keras needs Keras 3; install it with `pip install optuna-lrrange[keras]`."
    ) from e
import numpy as np

from optuna_lrrange._keras_state import _check_model, _innermost, preserved
from optuna_lrrange.core import RangeTestConfig, Sweep, run_range_test
from optuna_lrrange.core._config import resolve_config
from optuna_lrrange.reestimate import (
    Reestimation,
    _check_rule_settings,
    _decide,
    _record_sweep,
    _running_trial,
)

if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover - Keras 2 is not installed
    raise ImportError(
        f"optuna_lrrange.keras needs Keras 3, but got keras {keras.__version__}; install it "
        "with `pip install optuna-lrrange[keras]`."
    )

__all__ = ["LRReestimationCallback", "attach", "preserved", "range_test"]

# --------------------------------------------------------------------------- the data


def _is_arrays(x: Any) -> bool:
    """Whether ``x`` is array data (an array, a tensor, a dict of them) rather than an
    iterable of batches."""
    return isinstance(x, dict) or (hasattr(x, "shape") and hasattr(x, "__getitem__"))


def _to_numpy(leaf: Any) -> np.ndarray:
    return leaf if isinstance(leaf, np.ndarray) else np.asarray(keras.ops.convert_to_numpy(leaf))


class _Batches:
    """The batches of ``x`` (and ``y``), taken one at a time and started over when they run
    out, as ``(x, y, sample_weight)``.

    Arrays are cut into ``batch_size`` rows (the last batch may be smaller), in the order
    of a fixed permutation per pass (seed 0) when ``shuffle``; a ``PyDataset`` is indexed
    ``0, 1, ...``; any other iterable is iterated, and iterated again when exhausted.
    """

    def __init__(self, x: Any, y: Any, batch_size: int, shuffle: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size >= 1` must hold, but got batch_size={batch_size!r}.")
        self.passes = 0
        self.index = 0
        self.iterator: Iterator[Any] = iter(())
        if isinstance(x, keras.utils.PyDataset):
            if y is not None:
                raise ValueError(
                    "`y` must be None when `x` is a PyDataset (its batches hold the "
                    f"targets), but got {type(y).__name__}."
                )
            self.kind = "dataset"
            try:
                self.length: int | None = x.num_batches
            except NotImplementedError:
                self.length = None
            self.dataset = x
        elif y is not None or _is_arrays(x):
            self.kind = "arrays"
            self.arrays = keras.tree.map_structure(_to_numpy, (x, y))
            lengths = {len(leaf) for leaf in keras.tree.flatten(self.arrays)}
            if len(lengths) != 1:
                raise ValueError(
                    f"`x` and `y` must hold the same number of samples, but got {sorted(lengths)}."
                )
            (n,) = lengths
            if n == 0:
                raise ValueError("`x` must hold at least one sample, but it holds none.")
            self.n = n
            self.batch_size = batch_size
            self.rng = np.random.default_rng(0) if shuffle else None
            self.order: np.ndarray | None = None
        elif isinstance(x, Iterable):
            self.kind = "iterable"
            self.loader = x
        else:
            raise TypeError(
                "`x` must be arrays (with `y`), a keras.utils.PyDataset or an iterable of "
                f"batches, but got {type(x).__name__}."
            )

    def take(self) -> tuple[Any, Any, Any]:
        if self.kind == "arrays":
            return self._take_arrays()
        if self.kind == "dataset":
            if self.index == self.length:
                self.index = 0
            if self.index == 0 and self.length == 0:
                raise ValueError("`x` must yield at least one batch, but it yielded none.")
            batch = self.dataset[self.index]
            self.index += 1
        else:
            batch = self._next_from_iterable()
        return keras.utils.unpack_x_y_sample_weight(batch)  # type: ignore[no-any-return]

    def _take_arrays(self) -> tuple[Any, Any, Any]:
        if self.index >= self.n:
            self.index = 0
        start = self.index
        stop = min(start + self.batch_size, self.n)
        self.index = stop
        if self.rng is None:
            x, y = keras.tree.map_structure(lambda a: a[start:stop], self.arrays)
        else:
            if start == 0:
                self.order = self.rng.permutation(self.n)
            assert self.order is not None
            rows = self.order[start:stop]
            x, y = keras.tree.map_structure(lambda a: a[rows], self.arrays)
        return x, y, None

    def _next_from_iterable(self) -> Any:
        try:
            return next(self.iterator)
        except StopIteration:
            pass
        self.iterator = iter(self.loader)
        self.passes += 1
        try:
            return next(self.iterator)
        except StopIteration:
            pass
        if self.passes == 1:
            raise ValueError("`x` must yield at least one batch, but it yielded none.")
        raise ValueError(
            "`x` must be re-iterable (a list, a PyDataset, a tf.data.Dataset, not a one-shot "
            "iterator) when the sweep needs more batches than one pass holds, but its second "
            "pass yielded no batch."
        )


# --------------------------------------------------------------------------- the range test


@contextlib.contextmanager
def _settable_rate(optimizer: Any) -> Iterator[Any]:
    """The variable that sets the optimizer's rate during the block.

    An optimizer built with a float rate has one; for a ``LearningRateSchedule`` (or a
    callable) a variable stands in for the schedule during the block (tracked by the
    optimizer, so a compiled step reads it), and the schedule is put back afterwards.
    """
    holder = _innermost(optimizer)
    rate = holder._learning_rate
    if isinstance(rate, keras.Variable):
        yield rate
        return
    stand_in = keras.Variable(
        float(keras.ops.convert_to_numpy(holder.learning_rate)),
        dtype=keras.config.floatx(),
        trainable=False,
        name="learning_rate",
    )
    holder._learning_rate = stand_in  # tracked by the optimizer's attribute tracking
    try:
        yield stand_in
    finally:
        holder.learning_rate = rate  # the public setter untracks the stand-in


def _setter(rate: Any) -> Any:
    """A function setting the rate variable: ``Variable.assign``, or on the torch backend
    an in-place fill of its tensor, the same float32 value (2 us a step against 38 us for
    ``assign``, measured here; a small MLP's ``train_on_batch`` takes about 3 ms)."""
    if keras.backend.backend() == "torch":
        value = rate.value
        if not value.requires_grad:
            return value.fill_
    return rate.assign


def range_test(
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    config: RangeTestConfig | None = None,
    restore: bool = True,
    **config_options: Any,
) -> Sweep:
    """Runs a learning-rate range test on a compiled Keras 3 model.

    Each of the ``num_iter`` steps sets the rate on the model's optimizer and calls
    ``model.train_on_batch`` on the next batch (one optimizer step through the model's
    own ``train_step``); the loss recorded is the ``"loss"`` that step reports, the
    batch's loss with the model's regularization losses.

    Args:
        model: A built Keras model, compiled with its optimizer and loss. An optimizer with
            a float rate or a ``LearningRateSchedule`` (a variable stands in for the schedule
            during the sweep) both work.
        x: The inputs: arrays (numpy, backend tensors; a list or dict of them for several
            inputs) with ``y``; or a ``keras.utils.PyDataset``; or any re-iterable of
            batches, each ``x``, ``(x, y)`` or ``(x, y, sample_weight)`` (a list of
            batches, a ``tf.data.Dataset``, a torch ``DataLoader``). Batches are taken
            again from the start when the sweep needs more than there are.
        y: The targets, with array ``x``.
        batch_size: Rows per batch, with array ``x``.
        shuffle: With array ``x``, take the rows in a fixed random order (seed 0, a new
            permutation per pass), as ``model.fit`` shuffles by default; ``False`` takes
            them in order.
        config: The range-test settings; alternatively pass them as ``config_options``
            (``start_lr``, ``end_lr``, ``num_iter``, ``mode``, ``diverge_factor``,
            ``smooth_beta``), not both.
        restore: Restore the training state afterwards (always, also when a step raises;
            see :func:`preserved`). With ``False`` the model is left as the sweep left it,
            and the optimizer's rate is the last one tried (its schedule put back).

    Returns:
        The :class:`~optuna_lrrange.core.Sweep`.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``, or ``x`` is not data.
        ValueError: Invalid settings, a model not built or not compiled, no batches, or a
            ``train_step`` that reports no ``"loss"``.
    """
    config = resolve_config(config, config_options)
    _check_model(model)
    batches = _Batches(x, y, batch_size, shuffle)
    guard = preserved(model) if restore else contextlib.nullcontext()
    with guard, _settable_rate(model.optimizer) as rate:
        assign = _setter(rate)
        train_on_batch = model.train_on_batch

        def step(lr: float) -> float:
            assign(lr)
            bx, by, weights = batches.take()
            logs = train_on_batch(bx, by, sample_weight=weights, return_dict=True)
            try:
                return logs["loss"]  # type: ignore[no-any-return]
            except KeyError:
                raise ValueError(
                    "the model's `train_step` must report a 'loss', but it reported "
                    f"{sorted(logs)}."
                ) from None

        return run_range_test(step, config)


def attach(
    trial: Any,
    model: keras.Model,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
) -> None:
    """Hands a Keras model to the study's :class:`~optuna_lrrange.LRRangeSampler`.

    The Keras twin of :func:`optuna_lrrange.attach`: call it in the objective once the
    model is compiled and before the learning rate is suggested; the sampler runs
    :func:`range_test` on it (with its own range-test settings) when it is::

        optuna_lrrange.keras.attach(trial, model, x_train, y_train, batch_size=64)
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)  # the range test runs here
        model.optimizer.learning_rate = lr

    Args:
        trial: The running trial (a ``FixedTrial`` is accepted and ignored).
        model: The compiled, built Keras model.
        x: The data, as :func:`range_test` takes it.
        y: The targets, with array ``x``.
        batch_size: Rows per batch, with array ``x``.
        shuffle: As for :func:`range_test`.

    Raises:
        TypeError: A wrong type of model or data.
        ValueError: A model not built or not compiled, or invalid data.
        RuntimeError: The learning rate was already suggested in this trial.
    """
    from optuna_lrrange._sampler import attach as attach_sweep

    _check_model(model)
    _Batches(x, y, batch_size, shuffle)  # invalid data fails here, not at every sweep

    def sweep_fn(config: RangeTestConfig) -> Sweep:
        return range_test(model, x, y, batch_size=batch_size, shuffle=shuffle, config=config)

    attach_sweep(trial, sweep_fn=sweep_fn)


# --------------------------------------------------------------------------- re-estimation


class LRReestimationCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Re-estimates the learning rate during ``model.fit``, as
    :class:`~optuna_lrrange.reestimate.LRReestimator` does in a PyTorch loop.

    At the start of chosen epochs it runs a short :func:`range_test` from the current
    weights, from ``current / 10**span`` to ``current * 10**span``, and sets the rate the
    rule suggests on the optimizer; the model, optimizer state, metrics and random state
    are as before the sweep, so training goes on exactly as if the rate had been set by
    hand. The rule and its safeguards are :class:`LRReestimator`'s: with ``method=None``,
    the ``edge_div10`` fallback when the default rule finds no descent; the rate is never
    raised unless ``allow_increase``; ``max_change`` bounds the move. Each re-estimation is
    kept in :attr:`history` and, with a trial, recorded on it
    (``optuna_lrrange.get_sweeps(trial)``, ``Sweep.info["kind"] == "reestimate"``).

    Keras callbacks do not see ``fit``'s data, so the sweeps' batches are given here. The
    optimizer must have a float rate (a ``LearningRateSchedule`` cannot be set); a
    ``LearningRateScheduler`` or ``ReduceLROnPlateau`` callback in the same ``fit`` also
    sets the rate, and the last to run wins.

    Args:
        x: The batches the sweeps draw from, as :func:`range_test` takes them.
        y: The targets, with array ``x``.
        batch_size: Rows per batch, with array ``x``.
        shuffle: As for :func:`range_test`.
        every_epochs: Re-estimate at the start of epoch ``e > 0`` (0-based) when ``e`` is a
            multiple of this.
        on_plateau: Patience: re-estimate at the start of the epoch after ``monitor`` has
            not improved, by more than ``plateau_threshold`` (relative) on the best so
            far, for this many epochs in a row.
        monitor: The epoch log entry ``on_plateau`` watches (lower is better).
        plateau_threshold: Relative improvement that counts as one, ``>= 0``.
        num_iter: Steps of each sweep.
        span: Decades of rate the sweep covers either side of the current rate.
        method: The suggestion rule (a name in ``optuna_lrrange.RULES``); ``None`` for the
            default with the ``edge_div10`` fallback.
        max_change: If set, a re-estimation moves the rate by at most this factor (``> 1``).
        allow_increase: Whether a re-estimation may raise the rate.
        trial: An Optuna trial to record each re-estimation on; ``None`` (or a
            ``FixedTrial``) keeps them in :attr:`history` only.
        config_options: Further :class:`~optuna_lrrange.RangeTestConfig` settings
            (``mode``, ``diverge_factor``, ``smooth_beta``).
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int = 32,
        shuffle: bool = True,
        every_epochs: int | None = None,
        on_plateau: int | None = None,
        monitor: str = "val_loss",
        plateau_threshold: float = 1e-3,
        num_iter: int = 40,
        span: float = 2.0,
        method: str | None = None,
        max_change: float | None = None,
        allow_increase: bool = False,
        trial: Any = None,
        **config_options: Any,
    ) -> None:
        super().__init__()
        _check_rule_settings(
            {"every_epochs": every_epochs, "on_plateau": on_plateau},
            span=span,
            plateau_threshold=plateau_threshold,
            max_change=max_change,
            method=method,
            allow_increase=allow_increase,
            num_iter=num_iter,
            config_options=config_options,
        )
        if trial is not None:
            from optuna.trial import FixedTrial, Trial

            if not isinstance(trial, (Trial, FixedTrial)):
                raise TypeError(
                    "`trial` must be an optuna Trial (or FixedTrial, which records nothing), "
                    f"but got {type(trial).__name__}."
                )
        _Batches(x, y, batch_size, shuffle)
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.every_epochs = every_epochs
        self.on_plateau = on_plateau
        self.monitor = monitor
        self.plateau_threshold = float(plateau_threshold)
        self.num_iter = num_iter
        self.span = float(span)
        self.method = method
        self.max_change = max_change
        self.allow_increase = allow_increase
        self.trial = trial
        self.config_options = config_options
        #: Every re-estimation of the current (or last) ``fit``, oldest first.
        self.history: list[Reestimation] = []
        self._best: float | None = None
        self._wait = 0
        self._plateaued = False
        self._warned_monitor = False

    @property
    def lr(self) -> float:
        """The optimizer's current learning rate."""
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        _check_model(self.model)
        if not isinstance(_innermost(self.model.optimizer)._learning_rate, keras.Variable):
            raise ValueError(
                "the optimizer's learning rate must be a float for LRReestimationCallback to "
                "set it, but it is a schedule; compile with a float learning_rate."
            )
        self.history = []
        self._best, self._wait, self._plateaued = None, 0, False

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._plateaued:
            self._plateaued = False
            self.reestimate(epoch=epoch, trigger="plateau")
        elif self.every_epochs is not None and epoch > 0 and epoch % self.every_epochs == 0:
            self.reestimate(epoch=epoch, trigger="every_epochs")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.on_plateau is None:
            return
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned_monitor:
                warnings.warn(
                    f"LRReestimationCallback: {self.monitor!r} is not in the epoch logs, so "
                    "`on_plateau` never fires; pass validation data to fit or set `monitor`.",
                    stacklevel=2,
                )
                self._warned_monitor = True
            return
        value = float(value)
        if self._best is None or value < self._best - self.plateau_threshold * abs(self._best):
            self._best, self._wait = value, 0
        else:
            self._wait += 1
        if self._wait >= self.on_plateau:
            self._plateaued, self._wait = True, 0

    def reestimate(self, *, epoch: int | None = None, trigger: str = "manual") -> Reestimation:
        """Runs one sweep now and sets its suggestion on the optimizer.

        Args:
            epoch: Recorded with the sweep.
            trigger: Why it runs (recorded): ``"every_epochs"``, ``"plateau"`` or
                ``"manual"``.

        Returns:
            The :class:`~optuna_lrrange.reestimate.Reestimation`, also appended to
            :attr:`history` and, with a trial, written to its storage.
        """
        model = self.model
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
        step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        start = time.perf_counter()
        sweep = range_test(
            model, self.x, self.y, batch_size=self.batch_size, shuffle=self.shuffle, config=config
        )
        seconds = time.perf_counter() - start
        suggestion, chosen, outcome = _decide(
            sweep,
            previous,
            method=self.method,
            allow_increase=self.allow_increase,
            max_change=self.max_change,
        )
        info = {
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
            model.optimizer.learning_rate = chosen
        record = Reestimation(step, epoch, sweep, suggestion, chosen)
        self.history.append(record)
        return record
