"""Batch shapes without a step_fn: dicts (Hugging Face), multi-input tuples, namedtuples, and
``batch_loss(fn)``; each checked against a plain training loop, restored bitwise, and run
inside a study."""

from __future__ import annotations

from collections.abc import Callable
import copy
from typing import Any, NamedTuple

import optuna
import pytest
from test_pytorch import assert_bitwise_equal, everything
import torch
from torch import nn
import torch.nn.functional as F

import optuna_lrrange as ol
from optuna_lrrange.pytorch import batch_loss, range_test

NUM_ITER = 12
SWEEP = {"start_lr": 1e-4, "end_lr": 1.0, "num_iter": NUM_ITER, "diverge_factor": 1e9}


class TwoInputs(nn.Module):
    """``model(a, b)``: two inputs, as in a siamese or a features-plus-metadata model."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.b = nn.Linear(3, 8)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 4))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.head(self.a(a) + self.b(b))  # type: ignore[no-any-return]


class ReturnsItsLoss(nn.Module):
    """``model(features=..., labels=...)`` returning the loss as a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 4))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.net(features), labels)


class Example(NamedTuple):
    a: torch.Tensor
    b: torch.Tensor
    label: torch.Tensor


def tensors(n: int = 4, seed: int = 3) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(16, 6, generator=g),
            torch.randn(16, 3, generator=g),
            torch.randint(0, 4, (16,), generator=g),
        )
        for _ in range(n)
    ]


def tiny_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)  # type: ignore[no-any-return]


def bert_batches(n: int = 4, seed: int = 5) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 40, (8, 10), generator=g)
        mask = torch.ones_like(ids)
        mask[:, 7:] = 0
        out.append(
            {
                "input_ids": ids,
                "attention_mask": mask,
                "labels": torch.randint(0, 3, (8,), generator=g),
            }
        )
    return out


# Each case: (model factory, batches, loss_fn for range_test, the loss of a batch written out
# by hand for the reference loop).
Case = tuple[Callable[[], nn.Module], list[Any], Any, Callable[[nn.Module, Any], torch.Tensor]]


def cases() -> dict[str, Case]:
    def two_inputs() -> nn.Module:
        torch.manual_seed(0)
        return TwoInputs()

    def returns_loss() -> nn.Module:
        torch.manual_seed(0)
        return ReturnsItsLoss()

    triples = tensors()
    return {
        "tuple_x1_x2_y": (
            two_inputs,
            triples,
            F.cross_entropy,
            lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]),
        ),
        "namedtuple": (
            two_inputs,
            [Example(*t) for t in triples],
            F.cross_entropy,
            lambda m, b: F.cross_entropy(m(b.a, b.b), b.label),
        ),
        "list_x1_x2_y": (
            two_inputs,
            [list(t) for t in triples],
            F.cross_entropy,
            lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]),
        ),
        "dict_model_returns_tensor": (
            returns_loss,
            [{"features": a, "labels": y} for a, _, y in triples],
            None,
            lambda m, b: m(features=b["features"], labels=b["labels"]),
        ),
        "batch_loss_fn": (
            two_inputs,
            [{"left": a, "right": b, "target": y} for a, b, y in triples],
            batch_loss(lambda m, b: F.cross_entropy(m(b["left"], b["right"]), b["target"])),
            lambda m, b: F.cross_entropy(m(b["left"], b["right"]), b["target"]),
        ),
        "hugging_face_dict": (
            tiny_bert,
            bert_batches(),
            None,
            lambda m, b: (
                m(
                    input_ids=b["input_ids"],
                    attention_mask=b["attention_mask"],
                    labels=b["labels"],
                ).loss
            ),
        ),
    }


def reference_losses(
    model: nn.Module, lrs: tuple[float, ...], batches: list[Any], loss_of: Any
) -> list[float]:
    """The losses of a plain SGD loop at the sweep's rates, cycling through the batches."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=0.9)
    model.train()
    out = []
    for i, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = loss_of(model, batches[i % len(batches)])
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return out


@pytest.mark.parametrize("name", list(cases()))
def test_each_batch_shape_sweeps_like_a_plain_loop_and_restores_bitwise(name: str) -> None:
    make_model, batches, loss_fn, loss_of = cases()[name]
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    reference_model = copy.deepcopy(model)
    rng = torch.get_rng_state()
    before = everything(model, optimizer)

    sweep = range_test(model, optimizer, loss_fn, batches, **SWEEP)

    assert len(sweep) == NUM_ITER
    assert_bitwise_equal(everything(model, optimizer), before)
    # The same steps by hand, from the same weights and random state (dropout), give the
    # same losses to the last bit: the sweep ran the model on the batch as intended.
    torch.set_rng_state(rng)
    assert reference_losses(reference_model, sweep.lrs, batches, loss_of) == list(sweep.losses)


def test_accumulation_with_dict_batches_averages_the_model_losses() -> None:
    make_model, batches, _, loss_of = cases()["dict_model_returns_tensor"]
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    reference = copy.deepcopy(model).train()
    rng = torch.get_rng_state()
    before = everything(model, optimizer)
    sweep = range_test(model, optimizer, None, batches, accumulation_steps=2, **SWEEP)
    assert_bitwise_equal(everything(model, optimizer), before)
    # The first step's loss: the mean of the model's own losses on the first two batches.
    torch.set_rng_state(rng)
    expected = torch.stack([loss_of(reference, b).detach() for b in batches[:2]]).mean().item()
    assert sweep.losses[0] == expected


@pytest.mark.parametrize("name", ["hugging_face_dict", "dict_model_returns_tensor"])
def test_a_dict_batch_model_runs_inside_a_study_without_step_fn(tmp_path: Any, name: str) -> None:
    make_model, batches, _, loss_of = cases()[name]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sampler = ol.LRRangeSampler(
        optuna.samplers.RandomSampler(seed=0), start_lr=1e-4, end_lr=1.0, num_iter=NUM_ITER
    )
    study = optuna.create_study(storage=storage, sampler=sampler)
    restored: list[bool] = []

    def objective(trial: optuna.Trial) -> float:
        model = make_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        before = everything(model, optimizer)
        ol.attach(trial, model, optimizer, loader=batches)  # no loss_fn, no step_fn
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        after = everything(model, optimizer)
        try:
            assert_bitwise_equal(after, before)
            restored.append(True)
        except AssertionError:
            restored.append(False)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        total = 0.0
        for batch in batches:
            optimizer.zero_grad()
            loss = loss_of(model, batch)
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total / len(batches)

    study.optimize(objective, n_trials=2)

    assert restored == [True, True]
    loaded = optuna.load_study(study_name=study.study_name, storage=storage)
    for trial in loaded.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert not str(trial.user_attrs["lrrange:reason"] or "").startswith("sweep_failed")
        (sweep,) = ol.get_sweeps(trial)
        assert sweep.info["trial_number"] == trial.number  # its own sweep
        assert len(sweep) >= 2 and all(loss == loss for loss in sweep.losses[:2])
