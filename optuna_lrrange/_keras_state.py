"""Snapshot and exact restore of a Keras 3 training state.

Private module; :func:`preserved` is re-exported from :mod:`optuna_lrrange.keras`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
import random
from typing import Any

import keras
import numpy as np

# Where Keras keeps the seed generator that unseeded random ops draw from (created on first
# use). Not public API: when a Keras version moves it, that generator is not snapshotted.
_GLOBAL_SEED_GENERATOR = "global_seed_generator"


def _global_state() -> Any:
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - a Keras version that moved it
        return None
    return global_state


def _save(variable: Any) -> Any:
    """A copy of a Keras variable's value that later steps cannot change."""
    value = variable.value
    if keras.backend.backend() == "torch":
        return value.detach().clone()
    # JAX may donate (reuse) the buffer of the array it replaces: copy to the host.
    return np.array(keras.ops.convert_to_numpy(value), copy=True)


def _unique(variables: Iterable[Any]) -> list[Any]:
    seen: set[int] = set()
    out = []
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def _innermost(optimizer: Any) -> Any:
    """The optimizer that holds the rate (a ``LossScaleOptimizer`` wraps another one)."""
    for _ in range(8):
        inner = getattr(optimizer, "inner_optimizer", None)
        if inner is None:
            break
        optimizer = inner
    return optimizer


def _build_optimizer(model: keras.Model) -> None:
    """Builds the model's optimizer on its trainable variables if no step has yet, as the
    first training step would (same variables, same initial values, same names)."""
    optimizer = model.optimizer
    if not optimizer.built:
        with keras.name_scope(optimizer.name, caller=optimizer):
            optimizer.build(model.trainable_variables)
        optimizer.built = True


def _lists(holder: Any) -> dict[str, list[Any]]:
    """Copies of the list attributes of ``holder`` (their contents, not the lists)."""
    return {name: list(value) for name, value in vars(holder).items() if type(value) is list}


class _KerasState:
    """Everything a few ``train_on_batch`` steps change, restorable exactly.

    See :func:`preserved`.
    """

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        optimizer = model.optimizer
        _build_optimizer(model)
        self._variables = _unique(
            [*model.variables, *optimizer.variables, *model.metrics_variables]
        )
        self._values = [_save(v) for v in self._variables]
        # The compiled loss and metrics build themselves at the first training step. When
        # they have not yet, they are put back unbuilt: a first ``fit`` builds them with a
        # pass over its data, which draws a shuffle of its own, and must still do so.
        self._unbuilt = [
            (holder, dict(vars(holder)), _lists(holder))
            for holder in (
                getattr(model, "_compile_loss", None),
                getattr(model, "_compile_metrics", None),
            )
            if holder is not None and not holder.built
        ]
        self._rate_holder = _innermost(optimizer)
        self._rate = self._rate_holder._learning_rate
        self._torch = keras.backend.backend() == "torch"
        self._grads: list[tuple[Any, Any]] = []
        if self._torch:
            import torch

            for v in model.trainable_variables:
                grad = v.value.grad
                self._grads.append((v, None if grad is None else grad.detach().clone()))
            self._torch_rng = torch.get_rng_state()
            cuda_in_use = torch.cuda.is_initialized() and torch.cuda.is_available()  # type: ignore[no-untyped-call]
            self._cuda_rng = torch.cuda.get_rng_state_all() if cuda_in_use else None
        state = _global_state()
        generator = None if state is None else state.get_global_attribute(_GLOBAL_SEED_GENERATOR)
        self._seed_generator = generator
        self._seed_state = None if generator is None else _save(generator.state)
        self._numpy_rng = np.random.get_state()
        self._python_rng = random.getstate()

    def restore(self) -> None:
        """Writes the snapshot back; may be called more than once."""
        model = self.model
        holder = self._rate_holder
        if holder._learning_rate is not self._rate:
            # Through the public setter, which also stops tracking a variable put in its
            # place for the sweep.
            holder.learning_rate = self._rate
        for unbuilt, attributes, lists in self._unbuilt:
            for name, items in lists.items():
                attributes[name][:] = items  # the original lists: trackers hold them
            vars(unbuilt).clear()
            vars(unbuilt).update(attributes)
        # Metrics first built during the sweep go back to their initial state.
        saved = {id(v) for v in self._variables}
        for metric in model.metrics:
            if any(id(v) not in saved for v in metric.variables):
                metric.reset_state()
        for variable, value in zip(self._variables, self._values, strict=True):
            variable.assign(value)
        if self._torch:
            import torch

            for variable, grad in self._grads:
                variable.value.grad = None if grad is None else grad.clone()
            torch.set_rng_state(self._torch_rng)
            if self._cuda_rng is not None:
                torch.cuda.set_rng_state_all(self._cuda_rng)
        state = _global_state()
        if state is not None:
            state.set_global_attribute(_GLOBAL_SEED_GENERATOR, self._seed_generator)
            if self._seed_generator is not None:
                self._seed_generator.state.assign(self._seed_state)
        np.random.set_state(self._numpy_rng)
        random.setstate(self._python_rng)


@contextlib.contextmanager
def preserved(model: keras.Model) -> Iterator[None]:
    """Restores a compiled Keras model's training state on leaving the block, also when it
    raises.

    The state is every variable of the model (weights, non-trainable statistics, seed
    states), of its optimizer (iteration count, slots such as momentum and Adam moments, the
    rate) and of its metrics, the optimizer's learning-rate schedule object, Keras' global
    seed generator, and Python's, numpy's and (torch backend) torch's global random number
    generators, with the parameters' gradients on the torch backend. An optimizer that has
    not taken a step yet is first built on ``model.trainable_variables``, as its first step
    would build it. Metrics first built inside the block are reset.

    Example::

        with preserved(model):
            model.train_on_batch(x, y)  # the model is as before afterwards
    """
    _check_model(model)
    state = _KerasState(model)
    try:
        yield
    finally:
        state.restore()


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model, but got {type(model).__name__}.")
    if not getattr(model, "compiled", False) or model.optimizer is None:
        raise ValueError(
            "`model` must be compiled with an optimizer (model.compile(optimizer=..., "
            "loss=...)) before the range test, but it is not."
        )
    if not model.built:
        raise ValueError(
            "`model` must be built before the range test (the sweep restores its weights, so "
            "they must exist): give it a keras.Input or call it once on a batch, but it is "
            "not built."
        )
