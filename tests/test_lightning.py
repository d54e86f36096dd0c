"""Tests of optuna_lrrange.lightning with a real ``lightning.Trainer`` on the CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
import warnings

import optuna
import pytest

torch = pytest.importorskip("torch")
try:
    import lightning
    from lightning.pytorch import Callback, LightningModule
except ImportError as e:  # pragma: no cover - only without the extra
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        f"lightning is not installed ({e}); `pip install optuna-lrrange[lightning]`",
        allow_module_level=True,
    )

from optuna_lrrange import get_sweeps  # noqa: E402
from optuna_lrrange.lightning import LRReestimationCallback  # noqa: E402

F = torch.nn.functional

# Lightning 2.6 with torch 2.13 warns from its own internals; nothing for users to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`")


def _data(n: int = 192, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    return torch.utils.data.TensorDataset(x, y)


class _Module(LightningModule):
    def __init__(self, lr: float = 1e-2, scheduler: str | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 3)
        )
        self.lr = lr
        self.scheduler = scheduler

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.lr)
        if self.scheduler is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=6)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def _fit(
    callbacks: list[Any], max_epochs: int = 4, module: _Module | None = None, **kwargs: Any
) -> _Module:
    lightning.seed_everything(0, verbose=False)
    module = module or _Module()
    train = torch.utils.data.DataLoader(_data(), batch_size=32, shuffle=True)
    val = torch.utils.data.DataLoader(_data(64, seed=1), batch_size=64)
    trainer = lightning.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
        callbacks=callbacks,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        trainer.fit(module, train, val)
    return module


class _SetByHand(Callback):
    """Sets given rates at the start of given epochs, as the re-estimation would."""

    def __init__(self, rates: dict[int, float]) -> None:
        self.rates = rates

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch in self.rates:
            trainer.optimizers[0].param_groups[0]["lr"] = self.rates[trainer.current_epoch]


def test_trainer_run_is_bitwise_the_run_with_the_rate_set_by_hand() -> None:
    callback = LRReestimationCallback(every_epochs=2, num_iter=20, allow_increase=True)
    module = _fit([callback], max_epochs=5)
    assert [r.epoch for r in callback.history] == [2, 4]
    rates = {r.epoch: r.lr for r in callback.history}
    assert any(r.lr != r.sweep.info["previous_lr"] for r in callback.history)
    twin = _fit([_SetByHand(rates)], max_epochs=5)
    for p, q in zip(module.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_every_steps_and_scheduler_rescaling() -> None:
    callback = LRReestimationCallback(every_steps=10, num_iter=15)
    module = _Module(scheduler="cosine")
    _fit([callback], max_epochs=3, module=module)  # 6 batches an epoch: steps 10
    assert [r.step for r in callback.history] == [10]
    (record,) = callback.history
    assert record.sweep.info["trigger"] == "every_steps"
    assert callback.reestimator is not None and callback.reestimator.apply == "scale_scheduler"
    factor = record.lr / record.sweep.info["previous_lr"]
    scheduler = module.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs[0] == pytest.approx(1e-2 * factor, rel=1e-12)


def test_plateau_reads_the_monitored_metric() -> None:
    # patience 1 with an impossible threshold: every validation after the first counts as
    # a plateau, and the re-estimation runs at the start of the next epoch.
    callback = LRReestimationCallback(on_plateau=1, plateau_threshold=10.0, num_iter=10)
    _fit([callback], max_epochs=4)
    assert [r.epoch for r in callback.history] == [2, 3]
    assert all(r.sweep.info["trigger"] == "plateau" for r in callback.history)


@pytest.mark.parametrize("backend", ["inmemory", "sqlite"])
def test_reestimations_are_recorded_on_the_trial(backend: str, tmp_path: Path) -> None:
    storage: Any = (
        optuna.storages.InMemoryStorage()
        if backend == "inmemory"
        else optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'pl.db'}")
    )
    study = optuna.create_study(storage=storage)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        callback = LRReestimationCallback(every_epochs=1, num_iter=10, trial=trial)
        module = _fit([callback], max_epochs=3, module=_Module(lr))
        return float(module.trainer.callback_metrics["val_loss"])

    study.optimize(objective, n_trials=1)
    sweeps = get_sweeps(study.trials[0])
    assert [s.info["epoch"] for s in sweeps] == [1, 2]
    assert all(s.info["kind"] == "reestimate" and s.info["trial_number"] == 0 for s in sweeps)


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="one of `every_epochs`, `every_steps`, `on_plateau`"):
        LRReestimationCallback()
    with pytest.raises(ValueError, match="`scheduler` is taken from the trainer"):
        LRReestimationCallback(every_epochs=1, scheduler=object())
