"""The PyTorch adapter: a range test on a model, an optimizer and a loader.

Import it as ``optuna_lrrange.pytorch`` (``import optuna_lrrange`` never imports torch)::

    from optuna_lrrange.pytorch import range_test

    sweep = range_test(model, optimizer, torch.nn.functional.cross_entropy, loader)
    print(sweep.suggest().lr)

The model, its buffers, the optimizer, a ``GradScaler`` and the random number generators
are restored exactly afterwards (also when a step raises; the generators, shared by all
threads, only on the main thread); :class:`TrainingState` and :func:`preserved` expose
that snapshot for other uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
import contextlib
import inspect
from typing import Any

try:
    import torch
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "optuna_lrrange.pytorch needs PyTorch; install it with "
        "`pip install optuna-lrrange[torch]`."
    ) from e

from optuna_lrrange import _distributed
from optuna_lrrange._distributed import RankFailedError
from optuna_lrrange._torch_state import TrainingState, preserved
from optuna_lrrange.core import RangeTestConfig, Sweep, run_range_test
from optuna_lrrange.core._config import resolve_config

__all__ = [
    "BatchLoss",
    "RankFailedError",
    "TrainingState",
    "batch_loss",
    "preserved",
    "range_test",
]


def range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | BatchLoss | None = None,
    loader: Iterable[Any] | None = None,
    *,
    config: RangeTestConfig | None = None,
    step_fn: Callable[[Any], Any] | None = None,
    accumulation_steps: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    autocast_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    snapshot_device: torch.device | str = "cpu",
    restore: bool = True,
    process_group: Any = None,
    **config_options: Any,
) -> Sweep:
    """Runs a learning-rate range test on a PyTorch model.

    Each of the ``num_iter`` steps sets the learning rate of every param group, takes one
    optimizer step and records the loss. Param groups keep their ratios: group ``g``
    runs at ``lr * base_lr_g / base_lr_0``, where ``base_lr`` are the groups' rates
    before the sweep (a group at rate 0 stays at 0).

    Args:
        model: The model to probe.
        optimizer: The optimizer that trains it (any ``torch.optim.Optimizer`` whose
            ``step()`` takes no closure; for LBFGS use ``step_fn``).
        loss_fn: How the built-in step gets the loss of a batch (every tensor in it is
            moved to ``device`` first, inside tuples, lists, namedtuples and dicts):

            - ``loss_fn(model(x), y)`` for a batch ``(x, y)``, and
              ``loss_fn(model(x1, ..., xn), y)`` for ``(x1, ..., xn, y)`` (a tuple, list
              or namedtuple: the last item is the target);
            - ``None`` for dict batches whose model returns its own loss:
              ``model(**batch)`` gives a 0-d tensor or an object with ``.loss`` (a Hugging
              Face model given ``labels``);
            - ``batch_loss(fn)`` for any other batch: ``fn(model, batch)`` gives the loss.

            The model runs in training mode (``model.train()`` when it is in eval mode).
        loader: Any re-iterable of batches (a list, a ``DataLoader``), not a one-shot
            iterator (the sweep would use up its batches). It is iterated again when the
            sweep needs more batches than it holds (a shuffling ``DataLoader``
            reshuffles); it must yield at least one batch. A ``DataLoader`` with
            ``persistent_workers`` gets a separate iterator and workers for the sweep, so
            the iterator a training loop is using mid-epoch is left alone.
        config: The range-test settings; alternatively pass them as ``config_options``
            (``start_lr``, ``end_lr``, ``num_iter``, ``mode``, ``diverge_factor``,
            ``smooth_beta``), not both.
        step_fn: Instead of ``loss_fn``, your own training step: ``step_fn(batch)`` is
            called with each batch as the loader yields it, after the learning rates are
            set, and does the forward pass, backward pass and ``optimizer.step()``
            (and the scaler and autocast, if any) itself; it returns the loss as a float
            or a 0-d tensor.
        accumulation_steps: Batches per optimizer step with ``loss_fn``; the sweep counts
            optimizer steps and records the mean loss of their batches.
        scaler: A ``torch.amp.GradScaler``: with ``loss_fn`` the step uses
            ``scaler.scale(loss).backward()``, ``scaler.step`` and ``scaler.update``; its
            state is restored afterwards in any case.
        autocast_dtype: With ``loss_fn``, runs the forward pass and loss under
            ``torch.autocast`` on ``device``'s type with this dtype.
        device: Where batches go; by default the device of the model's first parameter.
        snapshot_device: Where the snapshot of the training state lives.
        restore: Restore the training state after the sweep (always, also when a step
            raises). With ``False`` the model and optimizer are left as the sweep left
            them (weights trained at rising rates, the last rate in the param groups), and
            the random number generators advanced.
        process_group: Under ``torch.distributed``, the ranks that sweep together: each
            takes its local step, the loss recorded (and the stop decided on) is the mean
            over the ranks, so every rank gets the same sweep, and each restores its own
            state. ``None`` (the default) takes a ``DistributedDataParallel`` model's own
            group and sweeps alone otherwise; pass a group for a plain model whose
            gradients your ``step_fn`` synchronizes, or ``False`` for a sweep of this
            process alone. With accumulation, a DDP model synchronizes gradients on the
            last batch of a step only, as under ``no_sync``. A rank whose loader fails
            (or, without DDP and ``step_fn``, whose step raises) stops every rank at that
            step with ``RankFailedError``. A DDP step that raises on one rank raises
            there at once; the others wait in DDP's gradient all-reduce until that
            process ends or the group's ``timeout`` passes.

    Returns:
        The :class:`~optuna_lrrange.core.Sweep`; its ``lrs`` are the first group's rates.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, ``optimizer`` not a torch
            optimizer, or a batch or loss has the wrong type.
        ValueError: Invalid settings, an optimizer without param groups or with group 0 at
            rate 0, both ``loss_fn`` and ``step_fn``, ``loss_fn`` with an
            optimizer whose ``step`` needs a closure (LBFGS), no, an empty or a one-shot
            ``loader``, or a loss that is not a scalar.
        RuntimeError: ``loss_fn`` given while gradients are disabled (``torch.no_grad()``).
    """
    config = resolve_config(config, config_options)
    _check_arguments(model, optimizer, loss_fn, loader, step_fn, accumulation_steps)
    assert loader is not None
    if isinstance(loader, Iterator):
        # Checked before a batch is taken: the caller's iterator is left as it was found.
        raise ValueError(
            "`loader` must be re-iterable (a list or a DataLoader, not a one-shot "
            f"iterator), but got {type(loader).__name__}: the sweep would use up the batches "
            "that training needs; pass the DataLoader itself or a list of batches."
        )
    if step_fn is None and not torch.is_grad_enabled():
        raise RuntimeError(
            "gradients must be enabled for the range test's training steps, but it was called "
            "under `torch.no_grad()` (or `torch.set_grad_enabled(False)`, or "
            "`torch.inference_mode()`); run it, and `trial.suggest_float` for the rate of an "
            "attached model, outside that block."
        )
    groups = optimizer.param_groups
    base_lrs = [float(group["lr"]) for group in groups]
    if base_lrs[0] == 0:
        raise ValueError(
            "the first param group's learning rate must be nonzero (the others keep their "
            f"ratio to it), but got lrs={base_lrs}."
        )
    rates = [(group, lr / base_lrs[0]) for group, lr in zip(groups, base_lrs, strict=True)]

    batches = _Batches(loader)
    step: Callable[[float], float]
    if step_fn is None:
        if device is None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
        step = _make_step(
            model,
            optimizer,
            loss_fn,
            batches,
            rates,
            torch.device(device),
            accumulation_steps,
            scaler,
            autocast_dtype,
        )
    else:
        if accumulation_steps != 1 or autocast_dtype is not None:
            raise ValueError(
                "`accumulation_steps` and `autocast_dtype` apply to the built-in step only; "
                "with `step_fn`, accumulate and autocast inside it, but got "
                f"(accumulation_steps={accumulation_steps}, autocast_dtype={autocast_dtype})."
            )
        step = _make_user_step(step_fn, batches, rates)
    group = _distributed.sweep_group(model, process_group)
    if group is not None:
        synced = step_fn is not None or _distributed.is_ddp(model)
        step = _distributed.shared_step(step, group, config, batches, synced)

    generators: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and generator not in generators:
            generators.append(generator)
    guard = (
        preserved(model, optimizer, scaler, snapshot_device, generators)
        if restore
        else contextlib.nullcontext()
    )
    with guard:
        try:
            if step_fn is None and not model.training:
                model.train()
            return run_range_test(step, config)
        finally:
            batches.close()


def _check_arguments(
    model: Any,
    optimizer: Any,
    loss_fn: Any,
    loader: Any,
    step_fn: Any,
    accumulation_steps: Any,
) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, but got {type(model).__name__}.")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"`optimizer` must be a torch.optim.Optimizer, but got {type(optimizer).__name__}."
        )
    if len(optimizer.param_groups) == 0:
        raise ValueError("the optimizer must have at least one param group, but got none.")
    if loss_fn is not None and step_fn is not None:
        raise ValueError(
            "at most one of `loss_fn` and `step_fn` must be given, but got "
            f"(loss_fn={loss_fn!r}, step_fn={step_fn!r})."
        )
    if step_fn is None and _needs_closure(optimizer):
        name = type(optimizer).__name__
        raise ValueError(
            f"with `loss_fn`, the optimizer's `step()` must take no closure, but {name}.step "
            "requires one; pass `step_fn=` in place of `loss_fn`: a step that calls "
            "`optimizer.step(closure)` and returns the loss, e.g. `def step_fn(batch): x, y = "
            "batch; def closure(): optimizer.zero_grad(); loss = loss_fn(model(x), y); "
            "loss.backward(); return loss; return optimizer.step(closure)`."
        )
    if loader is None:
        raise ValueError("`loader` must be an iterable of batches, but got None.")
    if (
        not isinstance(accumulation_steps, int)
        or isinstance(accumulation_steps, bool)
        or accumulation_steps < 1
    ):
        raise ValueError(f"`accumulation_steps >= 1` must hold, but got {accumulation_steps!r}.")


def _needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` requires a closure argument (LBFGS's does)."""
    try:
        parameters = inspect.signature(optimizer.step).parameters
    except (TypeError, ValueError):  # pragma: no cover - a step without a signature
        return False
    closure = parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


class _Batches:
    """The loader's batches, iterating it again whenever it is exhausted.

    A step takes the next batch with :meth:`take`. The loader is first iterated at the
    first step (inside the snapshot, so what iterating it changes is restored).
    """

    __slots__ = ("ahead", "iterator", "loader", "passes")

    def __init__(self, loader: Iterable[Any]) -> None:
        self.loader = loader
        self.iterator: Iterator[Any] = iter(())
        self.passes = 0
        self.ahead: list[Any] = []  # a batch fetched early by prefetch()

    def take(self) -> Any:
        """The next batch, starting a new pass over the loader when one ends."""
        if self.ahead:
            return self.ahead.pop()
        try:
            return next(self.iterator)
        except StopIteration:
            return self.next_pass()

    def prefetch(self) -> None:
        """Fetches the next batch now; the next :meth:`take` returns it."""
        if not self.ahead:
            self.ahead.append(self.take())

    def next_pass(self) -> Any:
        """The first batch of a new pass over the loader."""
        self.iterator = _own_iterator(self.loader)
        self.passes += 1
        try:
            return next(self.iterator)
        except StopIteration:
            pass
        if self.passes == 1:
            raise ValueError("`loader` must yield at least one batch, but it yielded none.")
        raise ValueError(
            "`loader` must be re-iterable (a list or a DataLoader, not a one-shot "
            "iterator) when the sweep needs more batches than one pass holds, but its "
            "second pass yielded no batch."
        )

    def close(self) -> None:
        """Lets go of the loader's iterator (a DataLoader's workers shut down)."""
        self.iterator = iter(())


def _own_iterator(loader: Iterable[Any]) -> Iterator[Any]:
    """An iterator over ``loader`` that no one else holds.

    A ``DataLoader`` with ``persistent_workers`` returns the same iterator from every
    ``iter()``, reset to the start: a sweep in the middle of an epoch (a re-estimation every
    few steps) would restart the training loop's epoch each time, and it would never end.
    Such a loader gets an iterator of its own, with its own workers (started per pass and
    shut down when the sweep lets go of it), from the method ``iter()`` itself calls.
    """
    if (
        isinstance(loader, torch.utils.data.DataLoader)
        and loader.persistent_workers
        and loader.num_workers > 0
    ):
        return loader._get_iterator()
    return iter(loader)


# --------------------------------------------------------------------------- batch shapes
#
# Everything about the shape of a batch lives here: ``_batch_loss`` turns ``loss_fn`` into
# ``batch -> loss`` for the built-in step. Nothing else looks inside a batch.


class BatchLoss:
    """``loss_fn(model, batch)``: a loss that runs the model on the batch itself.

    Made by :func:`batch_loss`; the built-in step calls ``fn(model, batch)`` with the batch
    moved to ``device`` and does the backward pass, the optimizer step, accumulation, the
    scaler and autocast as for ``loss_fn(output, target)``.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[torch.nn.Module, Any], torch.Tensor]) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` must be callable, but got {type(fn).__name__}.")
        self.fn = fn

    def __call__(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return self.fn(model, batch)

    def __repr__(self) -> str:
        return f"batch_loss({self.fn!r})"


def batch_loss(fn: Callable[[torch.nn.Module, Any], torch.Tensor]) -> BatchLoss:
    """Marks ``fn(model, batch) -> loss`` as the ``loss_fn`` of a sweep.

    For batches of any shape whose loss is not ``loss_fn(model(x), y)``::

        range_test(model, optimizer, batch_loss(lambda m, b: m(b["a"], b["b"]).mean()), loader)

    The same works for ``attach`` and ``LRReestimator``.
    """
    return BatchLoss(fn)


def _model_loss(output: Any) -> Any:
    """The loss a model returned: ``output.loss`` (Hugging Face), ``output["loss"]``, or
    the output itself."""
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, Mapping):
        loss = output.get("loss")
    if loss is None and isinstance(output, torch.Tensor):
        loss = output
    if loss is None:
        raise TypeError(
            "with no `loss_fn`, `model(**batch)` must return the loss: a tensor, or an "
            "object with `.loss` (pass `labels` in the batch for a Hugging Face model), but "
            f"got {type(output).__name__} without one."
        )
    return loss


def _batch_loss(
    model: torch.nn.Module, loss_fn: Any, device: torch.device
) -> tuple[Callable[[Any], torch.Tensor], str]:
    """``loss(batch)`` for the built-in step, and the name its errors give the loss.

    The batch shapes:

    - ``loss_fn(output, target)`` with a tuple or list ``(x, y)``, or ``(x1, ..., xn, y)``
      (a namedtuple too): ``loss_fn(model(x1, ..., xn), y)``.
    - ``loss_fn=None`` with a dict (mapping): ``model(**batch)`` returns the loss, as a
      tensor or as ``.loss`` (the Hugging Face convention).
    - ``batch_loss(fn)``, any batch: ``fn(model, batch)``.

    Every tensor of the batch (in tuples, lists, namedtuples and dicts) goes to ``device``;
    a tensor already there is used as it is.
    """
    Tensor = torch.Tensor
    if isinstance(loss_fn, BatchLoss):
        fn = loss_fn.fn

        def own_loss(batch: Any) -> torch.Tensor:
            return fn(model, _to_device(batch, device))

        return own_loss, "the `batch_loss` function"

    if loss_fn is None:

        def model_loss(batch: Any) -> torch.Tensor:
            if not isinstance(batch, Mapping):
                raise TypeError(
                    "with no `loss_fn`, each batch must be a dict of the model's keyword "
                    "arguments (`model(**batch)` returning the loss); pass `loss_fn` for "
                    "(x, y) batches, `batch_loss(fn)` or `step_fn` for others, but got "
                    f"{type(batch).__name__}."
                )
            return _model_loss(model(**_to_device(batch, device)))  # type: ignore[no-any-return]

        return model_loss, "`model(**batch)`"

    def output_loss(batch: Any) -> torch.Tensor:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise TypeError(
                "with `loss_fn`, each batch must be an (x, y) pair or an (x1, ..., xn, y) "
                "tuple (a dict batch needs no `loss_fn` when the model returns its loss; use "
                "`batch_loss(fn)` or `step_fn` for other batch shapes), but got "
                f"{type(batch).__name__}"
                + (f" of length {len(batch)}." if isinstance(batch, (list, tuple)) else ".")
            )
        y = batch[-1]
        if type(y) is not Tensor or y.device != device:
            y = _to_device(y, device)
        if len(batch) == 2:
            x = batch[0]
            if type(x) is not Tensor or x.device != device:
                x = _to_device(x, device)
            return loss_fn(model(x), y)  # type: ignore[no-any-return]
        xs = [_to_device(x, device) for x in batch[:-1]]
        return loss_fn(model(*xs), y)  # type: ignore[no-any-return]

    return output_loss, "`loss_fn`"


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(_to_device(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _scalar(loss: torch.Tensor, where: str) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"{where} must return a torch.Tensor, but got {type(loss).__name__}.")
    if loss.dim() != 0:
        raise ValueError(
            f"{where} must return a scalar (0-d) loss, but got shape {tuple(loss.shape)}."
        )
    return loss


def _make_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | BatchLoss | None,
    batches: _Batches,
    rates: list[tuple[dict[str, Any], float]],
    device: torch.device,
    accumulation_steps: int,
    scaler: torch.amp.GradScaler | None,
    autocast_dtype: torch.dtype | None,
) -> Callable[[float], float]:
    """The built-in training step at a given rate: sets every group's rate, then one
    optimizer step over ``accumulation_steps`` batches; returns the loss.

    Without accumulation it is one flat function (no nested closures or generators), so
    that on a small model it adds little to the training step: the time a sweep costs on
    top of plain training is mostly this function's and the loop's (``studies/overhead``).
    A tensor already on ``device`` is used as it is, as ``Tensor.to`` would return it.
    """
    Tensor = torch.Tensor
    loss_of, where = _batch_loss(model, loss_fn, device)

    def step(lr: float) -> float:
        for group, ratio in rates:
            group["lr"] = lr * ratio
        optimizer.zero_grad()
        batch = batches.take()
        if autocast_dtype is None:
            loss = loss_of(batch)
        else:
            with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                loss = loss_of(batch)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            _scalar(loss, where)
        if scaler is None:
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        else:
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(optimizer)
            scaler.update()
        return loss.item()

    if accumulation_steps == 1:
        return step

    def forward() -> torch.Tensor:
        batch = batches.take()
        if autocast_dtype is None:
            return _scalar(loss_of(batch), where)
        with torch.autocast(device_type=device.type, dtype=autocast_dtype):
            return _scalar(loss_of(batch), where)

    # A DDP model synchronizes gradients on the last batch of a step only, as DDP does it.
    no_sync: Callable[[], contextlib.AbstractContextManager[Any]] = (
        model.no_sync  # type: ignore[assignment]
        if _distributed.is_ddp(model)
        else contextlib.nullcontext
    )

    def accumulated_step(lr: float) -> float:
        for group, ratio in rates:
            group["lr"] = lr * ratio
        optimizer.zero_grad()
        losses = []
        for i in range(accumulation_steps):
            with no_sync() if i < accumulation_steps - 1 else contextlib.nullcontext():
                loss = forward()
                scaled = loss / accumulation_steps
                if scaler is None:
                    scaled.backward()  # type: ignore[no-untyped-call]
                else:
                    scaler.scale(scaled).backward()  # type: ignore[no-untyped-call]
            losses.append(loss.detach().float())
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        return torch.stack(losses).mean().item()

    return accumulated_step


def _make_user_step(
    step_fn: Callable[[Any], Any],
    batches: _Batches,
    rates: list[tuple[dict[str, Any], float]],
) -> Callable[[float], float]:
    def step(lr: float) -> float:
        for group, ratio in rates:
            group["lr"] = lr * ratio
        batch = batches.take()
        loss = step_fn(batch)
        if isinstance(loss, torch.Tensor):
            return _scalar(loss, "`step_fn`").item()
        try:
            return float(loss)
        except (TypeError, ValueError):
            raise TypeError(
                "`step_fn` must return the loss as a float or a 0-d tensor, but got "
                f"{type(loss).__name__}."
            ) from None

    return step
