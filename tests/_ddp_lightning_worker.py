"""One rank of the Lightning DDP check: ``python tests/_ddp_lightning_worker.py RANK WORLD DIR``.

Processes started by the test (as torchrun would start them: ``MASTER_ADDR``,
``MASTER_PORT``, ``LOCAL_RANK``, ``WORLD_SIZE`` in the environment) train a small
classifier with ``Trainer(strategy="ddp", accelerator="cpu")`` for 3 epochs, with an
``LRReestimationCallback(every_epochs=1)`` holding a ``TorchDistributedTrial`` of a SQLite
study on rank 0. Each rank writes ``DIR/lightning-RANK.json``: its re-estimations (the
sweep's losses and the rate chosen) and the rate its optimizer trained at in each epoch.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
import sys
import warnings

import lightning.pytorch as pl
import optuna
from optuna_integration import TorchDistributedTrial
import torch
from torch import nn
import torch.distributed as dist
import torch.nn.functional as F

from optuna_lrrange.lightning import LRReestimationCallback

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


class Classifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 4))
        self.epoch_lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def on_train_epoch_start(self) -> None:
        self.epoch_lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)


def main() -> None:
    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 4, generator=g)
    x = torch.randn(768, 20, generator=g)
    data = torch.utils.data.TensorDataset(x, (x @ w).argmax(1))
    loader = torch.utils.data.DataLoader(data, batch_size=32)

    study = trial = None
    if rank == 0:
        storage = f"sqlite:///{out / 'lightning.db'}"
        study = optuna.create_study(storage=storage, study_name="lightning")
        trial = study.ask()
    dtrial = TorchDistributedTrial(trial)
    callback = LRReestimationCallback(
        every_epochs=1, trial=dtrial, num_iter=20, allow_increase=True
    )
    module = Classifier()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy="ddp",
        max_epochs=3,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    if rank == 0:
        study.tell(trial, 0.0)
    report = {
        "reestimations": [
            {"losses": list(r.sweep.losses), "lr": r.lr, "epoch": r.epoch}
            for r in callback.history
        ],
        "epoch_lrs": module.epoch_lrs,
    }
    (out / f"lightning-{rank}.json").write_text(json.dumps(report))
    gc.collect()  # DDP models in reference cycles go while the group exists, not at exit
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("PL_DISABLE_FORK", "1")
    main()
