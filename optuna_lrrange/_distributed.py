"""The range test across the ranks of a ``torch.distributed`` process group.

Private module. Three pieces, each used by one caller:

- :func:`sweep_group` and :func:`shared_step`, for :func:`optuna_lrrange.pytorch.range_test`:
  every rank runs the same schedule; after each local step one all-reduce of a scalar
  gives every rank the mean of the ranks' losses, which is what the core loop records and
  decides on, so every rank stops at the same step with the same sweep.
- :func:`attach_ranks`, for :func:`optuna_lrrange.attach` with an
  ``optuna_integration.TorchDistributedTrial``: the sampler lives on rank 0 (as Optuna's
  integration has it), and when it asks for a sweep the other ranks, waiting in their own
  ``suggest_float`` for the learning rate, are told to take part in it.
- :func:`trial_on_this_rank` and :func:`mean_over_ranks`, for the re-estimator: one record
  per re-estimation (rank 0's), and a plateau seen the same on every rank.

Failures. Each step fetches the next step's batch before its all-reduce; a rank whose
loader fails (runs dry, or its iterator raises) adds a NaN. A non-finite sum is the only case that
costs a second collective: every rank then gathers the ranks' errors, and if any rank
failed, every rank raises the same :class:`RankFailedError` at the same step, restores its
own state, and the process group stays usable. The same holds for a step that raises when
the step has no collectives of its own (a plain model with the built-in step). A step that
does (a DDP model's gradient all-reduce, a ``step_fn``) and raises on one rank leaves the
others inside that collective, where nothing more can be agreed: the rank raises at once
(``group_usable=False``), and the others wait until its process ends (an uncaught error
ends it; gloo then fails their collective at once) or the process group's ``timeout``
passes (``torch.distributed.init_process_group(timeout=...)``), then raise too, each with
its state restored.
"""

from __future__ import annotations

from collections.abc import Callable
import math
import sys
from typing import Any

import torch
import torch.distributed as dist

from optuna_lrrange.core import RangeTestConfig, Sweep

__all__ = ["RankFailedError", "attach_ranks", "shared_step", "sweep_group"]

SweepFn = Callable[[RangeTestConfig], Sweep]


class RankFailedError(RuntimeError):
    """A rank of a distributed range test failed.

    Attributes:
        group_usable: ``True`` when every rank stopped at the same step with this error
            and the process group can go on (a rank's loader failed, or a step without
            collectives of its own raised); ``False`` on the rank whose DDP step raised,
            after which the group is out of step.
    """

    def __init__(self, message: str, *, group_usable: bool) -> None:
        super().__init__(message)
        self.group_usable = group_usable


# --------------------------------------------------------------------------- range_test


def is_ddp(model: Any) -> bool:
    """Whether ``model`` is a ``DistributedDataParallel`` wrapper."""
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


def sweep_group(model: torch.nn.Module, process_group: Any) -> Any:
    """The process group a sweep runs across, or ``None`` for a single-process sweep.

    ``process_group=None`` takes a ``DistributedDataParallel`` model's own group (none for
    any other model), ``False`` turns the distributed sweep off, and a process group is
    used as it is. A group of one rank is no group.
    """
    if process_group is False:
        return None
    group: Any
    if process_group is None:
        if not is_ddp(model):
            return None
        group = model.process_group
    elif isinstance(process_group, dist.ProcessGroup):
        group = process_group
    else:
        raise TypeError(
            "`process_group` must be a torch.distributed.ProcessGroup, None (the "
            "DistributedDataParallel model's own) or False (no distributed sweep), but got "
            f"{type(process_group).__name__}."
        )
    if not dist.is_initialized():
        raise RuntimeError(
            "a distributed range test needs an initialized process group "
            "(torch.distributed.init_process_group), but there is none."
        )
    return group if dist.get_world_size(group) > 1 else None


def _collective_device(group: Any) -> torch.device:
    """Where the tensors of a collective on ``group`` live (NCCL needs the current GPU)."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _start(group: Any, config: RangeTestConfig, batches: Any) -> None:
    """Before the first step: every rank runs the same schedule (a different one would
    hang) and has a first batch. One collective."""
    try:
        batches.prefetch()
        mine = None
    except Exception as e:
        mine = f"{type(e).__name__}: {e}"
    states: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(states, (config.to_dict(), mine), group=group)
    failed = [(rank, error) for rank, (_, error) in enumerate(states) if error]
    if failed:
        raise RankFailedError(_failure(0, failed), group_usable=True)
    if any(c != states[0][0] for c, _ in states):
        raise ValueError(
            "every rank must run the range test with the same settings, but got "
            + "; ".join(f"rank {r}: {c}" for r, (c, _) in enumerate(states))
            + "."
        )


def _failure(index: int, failed: list[tuple[int, str]]) -> str:
    return (
        f"the range test failed at step {index} on "
        + ", ".join(f"rank {rank} ({message})" for rank, message in failed)
        + "; every rank stopped at that step and restored its state."
    )


def shared_step(
    step: Callable[[float], float],
    group: Any,
    config: RangeTestConfig,
    batches: Any,
    synced: bool,
) -> Callable[[float], float]:
    """``step`` whose loss is the mean over the ranks of ``group``.

    Each call takes the local step, fetches the next step's batch, then all-reduces the
    loss (one float64 scalar: the only collective of a step that goes well), so every rank
    returns the same value and the core loop takes the same stop decision everywhere. A
    rank whose batch could not be fetched adds a NaN; a non-finite sum makes every rank
    gather the ranks' errors (a second collective, on that step only).

    Args:
        step: The local training step.
        group: The process group.
        config: The sweep's settings, checked to be the same on every rank.
        batches: The ``_Batches`` the step takes its batches from.
        synced: Whether the step runs collectives of its own (a DDP model's gradient
            synchronization, a ``step_fn``): then a step that raises on one rank leaves
            the others inside one of them, and this rank raises at once.

    Raises (from a call):
        RankFailedError: A rank's loader failed (on every rank, at the same step), or
            this rank's step raised.
        RuntimeError: A collective failed (a rank died, or the group's timeout passed).
    """
    world = dist.get_world_size(group)
    buffer = torch.zeros(1, dtype=torch.float64, device=_collective_device(group))
    last = config.num_iter - 1
    calls = [0]

    def shared(lr: float) -> float:
        index = calls[0]
        calls[0] += 1
        if index == 0:
            _start(group, config, batches)
        error: Exception | None = None
        try:
            loss = float(step(lr))
        except Exception as e:
            if synced:
                raise RankFailedError(
                    f"the range test's step {index} failed on this rank ({type(e).__name__}: "
                    f"{e}); this rank restored its state. The step synchronizes the ranks "
                    "itself (DDP's gradient all-reduce), so ranks whose step went on wait "
                    "in it until this process ends or the process group's timeout passes; "
                    "the process group is out of step.",
                    group_usable=False,
                ) from e
            loss, error = math.nan, e
        if error is None and index < last:
            try:
                batches.prefetch()  # a loader that runs dry stops every rank here
            except Exception as e:
                loss, error = math.nan, e
        buffer.fill_(loss)
        try:
            dist.all_reduce(buffer, group=group)
            total = buffer.item()
            if math.isfinite(total):
                return total / world
            # A non-finite loss on some rank, or a rank that failed: ask which.
            failures: list[Any] = [None] * world
            mine = None if error is None else f"{type(error).__name__}: {error}"
            dist.all_gather_object(failures, mine, group=group)
        except Exception as e:
            raise RuntimeError(
                f"the distributed range test lost contact with the other ranks at step "
                f"{index} ({type(e).__name__}: {e}); this rank's state is restored."
            ) from (error or e)
        failed = [(rank, message) for rank, message in enumerate(failures) if message]
        if not failed:
            return total / world
        raise RankFailedError(_failure(index, failed), group_usable=True) from error

    return shared


# --------------------------------------------------------------------------- the sampler


def _leader(group: Any) -> int:
    return dist.get_global_rank(group, 0)


def _send(group: Any, message: tuple[str, Any]) -> None:
    dist.broadcast_object_list([message], src=_leader(group), group=group)


def _receive(group: Any) -> tuple[str, Any]:
    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=_leader(group), group=group)
    return box[0]  # type: ignore[no-any-return]


def _lead(group: Any, action: Callable[[], Any]) -> Any:
    """Rank 0: runs ``action`` (sweeps inside it call the other ranks in), then lets them go."""
    try:
        result = action()
    except Exception as e:
        _send(group, ("error", f"{type(e).__name__}: {e}"))
        raise
    _send(group, ("done", result))
    return result


def _follow(group: Any, sweep_fn: SweepFn) -> Any:
    """The other ranks: take part in every sweep rank 0 runs until it is done.

    A sweep that raises raises on every rank at the same step (see :func:`shared_step`);
    rank 0's sampler records why, so here it is only waited out.
    """
    while True:
        kind, payload = _receive(group)
        if kind == "sweep":
            try:
                sweep_fn(RangeTestConfig.from_dict(payload))
            except RankFailedError as e:
                if not e.group_usable:
                    raise
        elif kind == "done":
            return payload
        else:
            raise RuntimeError(f"rank 0 failed, so this rank stops too: {payload}")


def is_torch_distributed_trial(trial: Any) -> bool:
    """Whether ``trial`` is an ``optuna_integration.TorchDistributedTrial`` (never imports it)."""
    module = sys.modules.get("optuna_integration.pytorch_distributed")
    cls = getattr(module, "TorchDistributedTrial", None)
    return cls is not None and isinstance(trial, cls)


def attach_ranks(trial: Any, sweep_fn: SweepFn) -> None:
    """:func:`optuna_lrrange.attach` for a ``TorchDistributedTrial``, on every rank.

    Rank 0 attaches a sweep function to its real trial that first tells the other ranks to
    run the same sweep. Every rank's ``trial.suggest_float`` for the learning rate then
    lets rank 0's sampler run (the others take part in its sweep, if it runs one) before
    the value is broadcast the way ``TorchDistributedTrial`` broadcasts every value.
    """
    from optuna_lrrange._sampler import _find_sampler, _key, _lookup, attach

    group = trial._group
    delegate = trial._delegate

    if dist.get_rank(group) == 0:

        def leader_sweep(config: RangeTestConfig) -> Sweep:
            _send(group, ("sweep", config.to_dict()))
            return sweep_fn(config)

        def attach_here() -> str | None:
            attach(delegate, sweep_fn=leader_sweep)
            sampler, _ = _find_sampler(delegate.study.sampler)
            waiting = _lookup(_key(delegate.study._storage, delegate._trial_id)) is not None
            return sampler.param_name if sampler is not None and waiting else None

        name = _lead(group, attach_here)
    else:
        name = _follow(group, sweep_fn)
    if name is None:
        return  # no sampler to ask, or the rate is fixed (a fixed trial's sweep already ran)
    original = trial.suggest_float

    def suggest_float(
        param: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        if param != name:
            return original(param, low, high, step=step, log=log)  # type: ignore[no-any-return]
        del trial.suggest_float
        if dist.get_rank(group) == 0:
            _lead(group, lambda: delegate.suggest_float(param, low, high, step=step, log=log))
        else:
            _follow(group, sweep_fn)
        # Rank 0's trial holds the value now; this asks it again and broadcasts it.
        return original(param, low, high, step=step, log=log)  # type: ignore[no-any-return]

    trial.suggest_float = suggest_float


# --------------------------------------------------------------------------- re-estimation


def trial_on_this_rank(trial: Any) -> Any:
    """A ``TorchDistributedTrial``'s real trial on rank 0, ``None`` elsewhere; others as given."""
    return trial._delegate if is_torch_distributed_trial(trial) else trial


def mean_over_ranks(value: float, group: Any) -> float:
    """The mean of ``value`` over the ranks of ``group`` (one all-reduce)."""
    buffer = torch.tensor([value], dtype=torch.float64, device=_collective_device(group))
    dist.all_reduce(buffer, group=group)
    return buffer.item() / dist.get_world_size(group)
