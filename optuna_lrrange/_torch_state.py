"""Snapshot and exact in-place restore of a PyTorch training state.

Private module; the public names are re-exported from :mod:`optuna_lrrange.pytorch`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
import contextlib
import copy
import random
import threading
from typing import Any, NamedTuple

import numpy as np
import torch

# Types whose values ``copy.deepcopy`` returns as they are: such values are kept without
# calling it (most param-group settings are such values).
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})


#: Marks an attribute the object did not have when the snapshot was taken.
_ABSENT = object()


def _is_atomic(value: Any) -> bool:
    """Whether ``copy.deepcopy(value)`` is ``value`` itself, for the common cases."""
    kind = type(value)
    return kind in _ATOMIC or (kind is tuple and all(type(v) in _ATOMIC for v in value))


def _copy_tensor(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A detached copy of ``tensor`` on ``device`` (``clone`` where it already is)."""
    if tensor.device == device:
        return tensor.detach().clone()
    return tensor.detach().to(device, copy=True)


class _SavedTensor(NamedTuple):
    """A tensor's copy on the snapshot device, and the device the tensor was on."""

    copy: torch.Tensor
    device: torch.device


def _copy_to(value: Any, device: torch.device) -> Any:
    """A :class:`_SavedTensor` for a tensor (a detached copy on ``device``); a deep copy
    of anything else."""
    if isinstance(value, torch.Tensor):
        return _SavedTensor(_copy_tensor(value, device), value.device)
    if _is_atomic(value):
        return value
    return copy.deepcopy(value)


def _put_back(current: Any, saved: Any) -> Any:
    """``saved`` (from :func:`_copy_to`) restored into ``current`` in place where
    possible, else a new value.

    A tensor is copied into the tensor that holds it now when shape and dtype match (so
    references to it stay valid and no memory is allocated); otherwise a new copy is made
    on the device the tensor was on when the snapshot was taken (not the snapshot's own).
    """
    if isinstance(saved, _SavedTensor):
        if (
            isinstance(current, torch.Tensor)
            and current.shape == saved.copy.shape
            and current.dtype == saved.copy.dtype
        ):
            current.detach().copy_(saved.copy)  # as under no_grad: no autograd record
            return current
        return saved.copy.to(saved.device, copy=True)
    if _is_atomic(saved):
        return saved
    return copy.deepcopy(saved)


class TrainingState:
    """A snapshot of everything a few training steps change, restorable exactly.

    It holds the model's parameters (with their gradients) and buffers (BatchNorm running
    statistics, ``num_batches_tracked``), the training mode of every submodule, the
    optimizer's per-parameter state (momentum buffers, Adam moments, step counters),
    every param group's hyperparameters and the flag an LR scheduler sets on the optimizer
    at its first step, a ``GradScaler``'s state, the random number generators (torch CPU,
    torch CUDA when CUDA is initialized, numpy's global one, Python's ``random``), and any
    extra ``torch.Generator`` (such as a DataLoader's).

    :meth:`restore` writes all of it back in place: the model, optimizer, parameters and
    scaler keep their identity, and tensors are copied into the existing storage
    (``param.copy_``), so the optimizer's references to the parameters stay valid. Take the
    snapshot between optimizer steps (not between a ``scaler.unscale_`` and its step).

    The random number generators are shared by every thread of the process, so they are
    put back only when the snapshot is taken and restored on the main thread (a plain
    training loop, ``study.optimize(..., n_jobs=1)``). On any other thread
    (``n_jobs > 1``, a thread pool) other threads may have drawn from them meanwhile, and
    rewinding them would hand the same numbers out again (the same initial weights in two
    trials): there they are left as they are, advanced, never rewound.

    Args:
        model: The module to snapshot.
        optimizer: The optimizer to snapshot.
        scaler: A ``torch.amp.GradScaler``, or ``None``.
        device: Where the copies live, ``"cpu"`` by default so GPU memory is not doubled.
        generators: Extra ``torch.Generator`` objects to snapshot.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
        device: torch.device | str = "cpu",
        generators: Iterable[torch.Generator] = (),
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        device = torch.device(device)
        # Every module._parameters[name] and module._buffers[name] entry, to put the
        # original objects back; each distinct tensor (tied weights are one) is copied
        # once, with a parameter's gradient.
        self._entries: list[tuple[dict[str, Any], str, torch.Tensor | None]] = []
        self._training: list[tuple[torch.nn.Module, bool]] = []
        self._tensors: list[torch.Tensor] = []
        self._data: list[torch.Tensor] = []
        self._grads: list[tuple[torch.nn.Parameter, torch.Tensor | None]] = []
        seen: set[int] = set()
        for module in model.modules():
            self._training.append((module, module.training))
            for table in (module._parameters, module._buffers):
                for name, tensor in table.items():
                    self._entries.append((table, name, tensor))
                    if tensor is None or id(tensor) in seen:
                        continue
                    seen.add(id(tensor))
                    self._tensors.append(tensor)
                    self._data.append(_copy_tensor(tensor, device))
                    if isinstance(tensor, torch.nn.Parameter):
                        grad = tensor.grad
                        self._grads.append(
                            (tensor, None if grad is None else _copy_tensor(grad, device))
                        )
        self._groups = [
            {key: _copy_to(value, device) for key, value in group.items() if key != "params"}
            for group in optimizer.param_groups
        ]
        # A group's tensor values themselves (a tensor ``lr``, which a sweep replaces by
        # floats), to put the caller's objects back rather than copies of them.
        self._group_tensors = [
            {key: value for key, value in group.items() if isinstance(value, torch.Tensor)}
            for group in optimizer.param_groups
        ]
        self._opt_state = {
            param: {key: _copy_to(value, device) for key, value in state.items()}
            for param, state in optimizer.state.items()
        }
        # An LR scheduler flags its optimizer once ``optimizer.step()`` has run, to warn when
        # ``scheduler.step()`` comes first; the sweep's own steps must not set that flag.
        self._opt_called = vars(optimizer).get("_opt_called", _ABSENT)
        self._scaler_state: dict[str, Any] | None = None
        if scaler is not None and scaler.is_enabled():
            self._scaler_state = {
                "state_dict": scaler.state_dict(),
                # Private details the public state dict leaves out: the initial values a
                # scaler not yet used starts from, and the per-optimizer stage.
                "init": {
                    name: getattr(scaler, name)
                    for name in ("_init_scale", "_init_growth_tracker")
                    if hasattr(scaler, name)
                },
                "unused": getattr(scaler, "_scale", None) is None,
                "per_optimizer": {
                    key: dict(value)
                    for key, value in getattr(scaler, "_per_optimizer_states", {}).items()
                },
            }
        # Only the main thread puts the generators back (see the class docstring).
        self._restore_rngs = threading.current_thread() is threading.main_thread()
        self._generators = [(g, g.get_state()) for g in generators]
        self._torch_rng = torch.get_rng_state()
        # Only when CUDA is in use: querying it would otherwise initialize it.
        cuda_in_use = torch.cuda.is_initialized() and torch.cuda.is_available()  # type: ignore[no-untyped-call]
        self._cuda_rng = torch.cuda.get_rng_state_all() if cuda_in_use else None
        self._numpy_rng = np.random.get_state()
        self._python_rng = random.getstate()

    @classmethod
    def capture(
        cls,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None = None,
        device: torch.device | str = "cpu",
        generators: Iterable[torch.Generator] = (),
    ) -> TrainingState:
        """Takes a snapshot; the same as the constructor."""
        return cls(model, optimizer, scaler, device, generators)

    def restore(self) -> None:
        """Writes the snapshot back in place; may be called more than once."""
        for table, name, tensor in self._entries:
            table[name] = tensor
        # Copied through a detached alias: the same storage and version counter, and no
        # autograd record, as under no_grad (whose context costs more than the copies on
        # a small model).
        for tensor, data in zip(self._tensors, self._data, strict=True):
            tensor.detach().copy_(data)
        for param, grad in self._grads:
            if grad is None:
                param.grad = None
            elif param.grad is not None and param.grad.shape == grad.shape:
                param.grad.copy_(grad)
            else:
                param.grad = grad.to(param.device, copy=True)
        for module, training in self._training:
            if module.training is not training:
                module.training = training
        self._restore_optimizer()
        self._restore_scaler()
        if self._restore_rngs and threading.current_thread() is threading.main_thread():
            self._restore_generators()

    def _restore_generators(self) -> None:
        for generator, state in self._generators:
            generator.set_state(state)
        torch.set_rng_state(self._torch_rng)
        if self._cuda_rng is not None:
            torch.cuda.set_rng_state_all(self._cuda_rng)
        np.random.set_state(self._numpy_rng)
        random.setstate(self._python_rng)

    def _restore_optimizer(self) -> None:
        optimizer = self.optimizer
        for group, saved, tensors in zip(
            optimizer.param_groups, self._groups, self._group_tensors, strict=False
        ):
            for key in [k for k in group if k != "params" and k not in saved]:
                del group[key]
            for key, value in saved.items():
                group[key] = _put_back(tensors.get(key, group.get(key)), value)
        if self._opt_called is _ABSENT:
            vars(optimizer).pop("_opt_called", None)
        else:
            optimizer._opt_called = self._opt_called  # type: ignore[attr-defined]
        current = dict(optimizer.state)
        optimizer.state.clear()
        for param, saved_state in self._opt_state.items():
            now = current.get(param, {})
            optimizer.state[param] = {
                key: _put_back(now.get(key), value) for key, value in saved_state.items()
            }

    def _restore_scaler(self) -> None:
        scaler, saved = self.scaler, self._scaler_state
        if scaler is None or saved is None:
            return
        scaler.load_state_dict(saved["state_dict"])
        for name, value in saved["init"].items():
            setattr(scaler, name, value)
        if saved["unused"]:
            scaler._scale = None
            scaler._growth_tracker = None
        if hasattr(scaler, "_per_optimizer_states"):
            states = scaler._per_optimizer_states
            fresh: dict[Any, Any] = (
                defaultdict(states.default_factory) if isinstance(states, defaultdict) else {}
            )
            fresh.update({key: dict(value) for key, value in saved["per_optimizer"].items()})
            scaler._per_optimizer_states = fresh


@contextlib.contextmanager
def preserved(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    device: torch.device | str = "cpu",
    generators: Iterable[torch.Generator] = (),
) -> Iterator[TrainingState]:
    """Restores the training state on leaving the block, also when it raises.

    Example::

        with preserved(model, optimizer):
            for x, y in probe_batches:
                ...  # anything: the model and optimizer are as before afterwards
    """
    state = TrainingState(model, optimizer, scaler, device, generators)
    try:
        yield state
    finally:
        state.restore()
