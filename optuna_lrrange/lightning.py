"""A PyTorch Lightning callback that re-estimates the learning rate during ``Trainer.fit``.

Needs the ``lightning`` extra (``pip install optuna-lrrange[lightning]``)::

    from optuna_lrrange.lightning import LRReestimationCallback

    callback = LRReestimationCallback(every_epochs=5, trial=trial)
    trainer = lightning.Trainer(max_epochs=50, callbacks=[callback])
    trainer.fit(module, train_loader, val_loader)
    callback.history  # one Reestimation per sweep; with a trial, also on the trial

The sweeps use the module's own ``training_step`` (with Lightning's logging switched off
while they run) on the trainer's training data, through
:func:`optuna_lrrange.pytorch.range_test`: the module, its optimizer and the RNG states are
restored exactly afterwards, only the learning rate changes (or, with an LR scheduler from
``configure_optimizers``, its schedule is rescaled, see
:func:`optuna_lrrange.reestimate.scale_scheduler`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
import contextlib
from typing import Any
import warnings

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "optuna_lrrange.lightning needs PyTorch Lightning; install it with "
        "`pip install optuna-lrrange[lightning]`."
    ) from e
import torch

from optuna_lrrange.reestimate import LRReestimator, Reestimation

__all__ = ["LRReestimationCallback"]


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def _logging_off(module: LightningModule) -> Iterator[None]:
    """``self.log`` and ``self.log_dict`` do nothing inside the block."""
    module.__dict__["log"] = _noop
    module.__dict__["log_dict"] = _noop
    try:
        yield
    finally:
        del module.__dict__["log"]
        del module.__dict__["log_dict"]


class LRReestimationCallback(Callback):
    """Re-estimates the learning rate inside a Lightning ``Trainer``, as
    :class:`~optuna_lrrange.reestimate.LRReestimator` does in a plain loop.

    Re-estimations run at the start of a training epoch (``every_epochs``, and
    ``on_plateau`` after the validation that completed the patience) or before a training
    batch (``every_steps``, counted in ``trainer.global_step``).

    Args:
        every_epochs: Re-estimate at the start of epoch ``e > 0`` when ``e`` is a multiple.
        every_steps: Re-estimate before the batch at global step ``s > 0`` when ``s`` is a
            multiple.
        on_plateau: Patience, in validation runs without improvement of ``monitor``.
        monitor: The logged metric ``on_plateau`` watches (lower is better).
        loader: The batches the sweeps draw from; by default the trainer's training
            dataloader. Give a separate one when that loader has ``persistent_workers``
            (a second iterator over it would reset the trainer's).
        trial: An Optuna trial to record each re-estimation on. Under the ``ddp``
            strategy, the ``TorchDistributedTrial`` on every rank (or the trial on rank 0
            and ``None`` elsewhere): the sweeps run on all ranks together, on the mean of
            their losses, every rank moves to the same rate, and rank 0 records.
        options: Further arguments of :class:`~optuna_lrrange.reestimate.LRReestimator`
            (``num_iter``, ``span``, ``method``, ``max_change``, ``allow_increase``,
            ``plateau_threshold``, range-test settings).

    Only automatic optimization with a single optimizer (and at most one LR scheduler) is
    supported. The sweeps run ``training_step`` under the precision plugin's forward
    context and clip gradients as the trainer is configured to, but use no gradient
    scaler: with ``precision="16-mixed"`` the sweep's steps are unscaled.
    """

    def __init__(
        self,
        *,
        every_epochs: int | None = None,
        every_steps: int | None = None,
        on_plateau: int | None = None,
        monitor: str = "val_loss",
        loader: Iterable[Any] | None = None,
        trial: Any = None,
        **options: Any,
    ) -> None:
        if every_epochs is None and every_steps is None and on_plateau is None:
            raise ValueError(
                "one of `every_epochs`, `every_steps`, `on_plateau` must be set, but got none."
            )
        for key in ("scheduler", "apply", "step_fn", "loss_fn"):
            if key in options:
                raise ValueError(
                    f"`{key}` is taken from the trainer and the module, but got {key}="
                    f"{options[key]!r}."
                )
        self.every_epochs = every_epochs
        self.every_steps = every_steps
        self.on_plateau = on_plateau
        self.monitor = monitor
        self.loader = loader
        self.trial = trial
        self.options = options
        self.reestimator: LRReestimator | None = None
        self._pending_val: float | None = None
        self._warned_monitor = False

    @property
    def history(self) -> list[Reestimation]:
        """Every re-estimation of the current (or last) ``fit``, oldest first."""
        return [] if self.reestimator is None else self.reestimator.history

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise ValueError(
                "`automatic_optimization` must be True for LRReestimationCallback (the sweep "
                "runs `training_step` and steps the optimizer itself), but got False."
            )
        optimizers = trainer.optimizers
        if len(optimizers) != 1:
            raise ValueError(
                f"exactly one optimizer must be configured, but got {len(optimizers)}."
            )
        configs = trainer.lr_scheduler_configs
        if len(configs) > 1:
            raise ValueError(
                f"at most one LR scheduler must be configured, but got {len(configs)}."
            )
        scheduler = configs[0].scheduler if configs else None
        loader = self.loader if self.loader is not None else trainer.train_dataloader
        if loader is None:
            raise ValueError("`loader` must be given when the trainer has no train dataloader.")
        if self.loader is None and getattr(loader, "persistent_workers", False):
            raise ValueError(
                "the trainer's train dataloader must not have persistent_workers=True (a "
                "sweep's iterator would reset the trainer's), but it has; pass `loader=`."
            )
        self._pending_val = None
        options = dict(self.options)
        ddp = trainer.strategy.model
        if isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
            # Under the ddp strategy the sweep's steps synchronize gradients as training's
            # do, and its losses are averaged over the ranks, so every rank gets one rate.
            options["range_test_options"] = {
                "process_group": ddp.process_group,
                **(options.get("range_test_options") or {}),
            }
        self.reestimator = LRReestimator(
            pl_module,
            optimizers[0],
            loader=loader,
            step_fn=self._make_step_fn(trainer, pl_module, optimizers[0]),
            every_epochs=self.every_epochs,
            every_steps=self.every_steps,
            on_plateau=self.on_plateau,
            scheduler=scheduler,
            trial=self.trial,
            **options,
        )

    def _make_step_fn(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> Any:
        strategy = trainer.strategy
        counter = iter(range(1 << 62))
        # Through the DDP wrapper when there is one, for its gradient synchronization.
        ddp = isinstance(strategy.model, torch.nn.parallel.DistributedDataParallel)

        def step_fn(batch: Any) -> torch.Tensor:
            batch = strategy.batch_to_device(batch)
            optimizer.zero_grad()
            if ddp:
                out = strategy.training_step(batch, next(counter))
            else:
                with strategy.precision_plugin.forward_context():
                    out = pl_module.training_step(batch, next(counter))
            loss = out["loss"] if isinstance(out, dict) else out
            if not isinstance(loss, torch.Tensor):
                raise TypeError(
                    "`training_step` must return the loss as a tensor or a dict with a "
                    f"'loss' key during a sweep, but got {type(out).__name__}."
                )
            loss.backward()  # type: ignore[no-untyped-call]
            clip = trainer.gradient_clip_val
            if clip:
                if trainer.gradient_clip_algorithm == "value":
                    torch.nn.utils.clip_grad_value_(pl_module.parameters(), float(clip))
                else:
                    torch.nn.utils.clip_grad_norm_(pl_module.parameters(), float(clip))
            optimizer.step()
            return loss.detach()

        return step_fn

    def _step(self, pl_module: LightningModule, **where: Any) -> None:
        assert self.reestimator is not None
        with _logging_off(pl_module):
            self.reestimator.step(**where)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        val, self._pending_val = self._pending_val, None
        self._step(pl_module, epoch=trainer.current_epoch, step=trainer.global_step, val_loss=val)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.every_steps is not None:
            self._step(pl_module, step=trainer.global_step)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_plateau is None or trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self._warned_monitor:
                warnings.warn(
                    f"LRReestimationCallback: metric {self.monitor!r} was not logged, so "
                    "`on_plateau` never fires; log it in validation_step or set `monitor`.",
                    stacklevel=2,
                )
                self._warned_monitor = True
            return
        self._pending_val = float(value)
