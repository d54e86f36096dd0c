"""The PyTorch adapter: exact restore, param-group ratios, accumulation, AMP, loaders, errors."""

from __future__ import annotations

import collections
import copy
import random
import subprocess
import sys
import threading
from typing import Any
from unittest.mock import patch
import warnings

import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F

from optuna_lrrange.core import COMPLETED, DIVERGED, NON_FINITE, RangeTestConfig
from optuna_lrrange.pytorch import TrainingState, preserved, range_test

SHORT = {"start_lr": 1e-4, "end_lr": 1.0, "num_iter": 12, "diverge_factor": 1e6}


# -- helpers -------------------------------------------------------------------------------


def make_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    if kind == "bn":
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    if kind == "dropout":
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    raise AssertionError(kind)


def make_optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    raise AssertionError(kind)


def make_batches(n: int = 5, batch_size: int = 16, seed: int = 1) -> list[tuple[Any, Any]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch_size, 8, generator=g), torch.randint(0, 3, (batch_size,), generator=g))
        for _ in range(n)
    ]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Any) -> None:
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def everything(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None) -> dict:
    """A deep copy of all the state a sweep must give back, for bitwise comparison."""
    return copy.deepcopy(
        {
            "params_and_buffers": model.state_dict(),
            "grads": [None if p.grad is None else p.grad for p in model.parameters()],
            "training": [m.training for m in model.modules()],
            "optimizer": optimizer.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }
    )


def assert_bitwise_equal(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_bitwise_equal(x, y, f"{path}/{i}")
    else:
        assert a == b, (path, a, b)


def differs(a: Any, b: Any) -> bool:
    try:
        assert_bitwise_equal(a, b)
    except AssertionError:
        return True
    return False


class RecordingSGD(torch.optim.SGD):
    """SGD that records the learning rates of its groups at every step."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[list[float]] = []

    def step(self, closure: Any = None) -> Any:
        self.seen.append([group["lr"] for group in self.param_groups])
        return super().step(closure)


# -- exact restore ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_kind", "opt_kind"),
    [("mlp", "sgd"), ("mlp", "adam"), ("bn", "sgd"), ("bn", "adam"), ("dropout", "adam")],
)
@pytest.mark.parametrize("warm", [False, True])
def test_everything_is_restored_bitwise(model_kind: str, opt_kind: str, warm: bool) -> None:
    model = make_model(model_kind)
    optimizer = make_optimizer(opt_kind, model)
    batches = make_batches()
    if warm:  # momentum buffers, Adam moments and BatchNorm statistics exist already
        train(model, optimizer, batches[:3])
    model.eval()  # the sweep switches to train mode; the mode must come back too
    params = list(model.parameters())
    before = everything(model, optimizer)

    sweep = range_test(model, optimizer, F.cross_entropy, batches, **SHORT)

    assert len(sweep) == SHORT["num_iter"]
    assert_bitwise_equal(everything(model, optimizer), before)
    assert list(model.parameters()) == params
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], params, strict=True))
    assert (len(optimizer.state) > 0) == warm


@pytest.mark.parametrize("model_kind", ["bn", "dropout"])
def test_without_restore_the_sweep_leaves_its_changes(model_kind: str) -> None:
    model = make_model(model_kind)
    optimizer = make_optimizer("sgd", model)
    before = everything(model, optimizer)

    sweep = range_test(model, optimizer, F.cross_entropy, make_batches(), restore=False, **SHORT)

    after = everything(model, optimizer)
    assert differs(after["params_and_buffers"], before["params_and_buffers"])
    assert differs(after["optimizer"], before["optimizer"])
    assert optimizer.param_groups[0]["lr"] == sweep.lrs[-1]
    if model_kind == "dropout":
        assert differs(after["torch_rng"], before["torch_rng"])


@pytest.mark.parametrize("with_generator", [False, True])
def test_training_after_a_sweep_matches_training_without_one(with_generator: bool) -> None:
    dataset = torch.utils.data.TensorDataset(*map(torch.cat, zip(*make_batches(4), strict=True)))

    def run(sweep_first: bool) -> dict:
        model = make_model("dropout")
        optimizer = make_optimizer("adam", model)
        torch.manual_seed(123)
        np.random.seed(123)
        random.seed(123)
        generator = torch.Generator().manual_seed(7) if with_generator else None
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=16, shuffle=True, generator=generator
        )
        train(model, optimizer, loader)
        if sweep_first:
            range_test(model, optimizer, F.cross_entropy, loader, **SHORT)
        train(model, optimizer, loader)
        train(model, optimizer, loader)
        return everything(model, optimizer)

    with_sweep, without = run(True), run(False)
    assert_bitwise_equal(with_sweep, without)


def test_a_sweep_without_restore_would_change_later_training() -> None:
    # The control for the test above: the sweep really disturbs what restore puts back.
    batches = make_batches()
    runs = []
    for restore in (True, False):
        model = make_model("dropout")
        optimizer = make_optimizer("adam", model)
        torch.manual_seed(0)
        range_test(model, optimizer, F.cross_entropy, batches, restore=restore, **SHORT)
        train(model, optimizer, batches)
        runs.append(everything(model, optimizer))
    assert differs(runs[0]["params_and_buffers"], runs[1]["params_and_buffers"])


def test_the_user_step_may_use_every_rng_and_is_still_restored() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)

    def step_fn(batch: Any) -> float:
        x, y = batch
        noise = torch.randn(()) + float(np.random.rand()) + random.random()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + 0 * noise
        loss.backward()
        optimizer.step()
        return loss.item()

    before = everything(model, optimizer)
    range_test(model, optimizer, loader=make_batches(), step_fn=step_fn, **SHORT)
    assert_bitwise_equal(everything(model, optimizer), before)


def test_a_sweep_on_another_thread_never_rewinds_what_other_threads_drew() -> None:
    # A sweep on a worker thread (study.optimize with n_jobs > 1) while another thread
    # draws from the process-wide RNGs: putting them back would hand that thread's numbers
    # out again (the same initial weights in two trials). The events force the overlap.
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    sweeping, drawn = threading.Event(), threading.Event()
    draws: dict[str, Any] = {}

    def draw() -> tuple[torch.Tensor, list[float], float]:
        return torch.rand(4), np.random.rand(4).tolist(), random.random()

    def step_fn(batch: Any) -> float:
        sweeping.set()
        assert drawn.wait(timeout=60)
        x, y = batch
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def sweeper() -> None:
        params = {k: v.clone() for k, v in model.state_dict().items()}
        range_test(model, optimizer, loader=make_batches(), step_fn=step_fn, **SHORT)
        draws["model_restored"] = all(
            torch.equal(v, params[k]) for k, v in model.state_dict().items()
        )
        draws["after_sweep"] = draw()

    def other() -> None:
        assert sweeping.wait(timeout=60)
        draws["other"] = draw()
        drawn.set()

    threads = [threading.Thread(target=sweeper), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert draws["model_restored"]
    (t1, n1, p1), (t2, n2, p2) = draws["other"], draws["after_sweep"]
    assert not torch.equal(t1, t2) and n1 != n2 and p1 != p2


def test_restore_when_the_step_raises() -> None:
    model = make_model("bn")
    optimizer = make_optimizer("adam", model)
    batches = make_batches()
    train(model, optimizer, batches[:2])
    before = everything(model, optimizer)
    calls = []

    def step_fn(batch: Any) -> torch.Tensor:
        calls.append(optimizer.param_groups[0]["lr"])
        if len(calls) == 5:
            raise RuntimeError("boom in the user's step")
        x, y = batch
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    with pytest.raises(RuntimeError, match="boom"):
        range_test(model, optimizer, loader=batches, step_fn=step_fn, **SHORT)
    assert len(calls) == 5
    assert_bitwise_equal(everything(model, optimizer), before)


def test_restore_when_the_loss_is_not_a_scalar() -> None:
    model = make_model("bn")
    optimizer = make_optimizer("sgd", model)
    before = everything(model, optimizer)

    def per_sample(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y, reduction="none")

    with pytest.raises(ValueError, match=r"scalar \(0-d\) loss, but got shape \(16,\)"):
        range_test(model, optimizer, per_sample, make_batches(), **SHORT)
    assert_bitwise_equal(everything(model, optimizer), before)


# -- the public snapshot helper -----------------------------------------------------------


def test_preserved_restores_in_place_and_keeps_identities() -> None:
    model = make_model("bn")
    optimizer = make_optimizer("sgd", model)
    batches = make_batches()
    train(model, optimizer, batches[:2])
    momentum = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    running_mean = model[1].running_mean
    before = everything(model, optimizer)

    with preserved(model, optimizer):
        train(model, optimizer, batches)
        model[1].running_mean = torch.full((16,), 5.0)  # replaced, not updated in place
        optimizer.param_groups[0]["lr"] = 3.0
        optimizer.param_groups[0]["initial_lr"] = 3.0  # a key added during the block
        assert differs(everything(model, optimizer), before)

    assert_bitwise_equal(everything(model, optimizer), before)
    assert model[1].running_mean is running_mean
    assert all(
        optimizer.state[p]["momentum_buffer"] is m
        for p, m in zip(model.parameters(), momentum, strict=True)
    )


def test_tied_weights_are_restored_and_stay_tied() -> None:
    torch.manual_seed(0)
    embed, head = nn.Embedding(10, 8), nn.Linear(8, 10, bias=False)
    head.weight = embed.weight
    model = nn.Sequential(embed, nn.Flatten(), head)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = [(torch.randint(0, 10, (4, 1)), torch.randint(0, 10, (4,))) for _ in range(3)]
    before = everything(model, optimizer)
    range_test(model, optimizer, F.cross_entropy, batches, **SHORT)
    assert model[2].weight is model[0].weight
    assert_bitwise_equal(everything(model, optimizer), before)


def test_training_state_restores_twice_and_snapshots_on_the_given_device() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("adam", model)
    batches = make_batches()
    train(model, optimizer, batches[:1])
    before = everything(model, optimizer)
    state = TrainingState.capture(model, optimizer, device="cpu")
    for _ in range(2):
        train(model, optimizer, batches)
        state.restore()
        assert_bitwise_equal(everything(model, optimizer), before)


def test_optimizer_state_that_was_dropped_or_reshaped_comes_back_whole() -> None:
    # Put back as new tensors (the live ones are gone or have another shape): equal to
    # the snapshot, and not sharing storage with it (a second restore must still work).
    model = make_model("mlp")
    optimizer = make_optimizer("adam", model)
    batches = make_batches()
    train(model, optimizer, batches[:2])
    before = everything(model, optimizer)
    first, second = list(model.parameters())[:2]
    state = TrainingState.capture(model, optimizer)
    for _ in range(2):
        train(model, optimizer, batches)
        del optimizer.state[first]
        optimizer.state[second]["exp_avg"] = torch.zeros(3)
        state.restore()
        assert_bitwise_equal(everything(model, optimizer), before)


def test_a_tensor_put_back_anew_goes_to_the_device_it_was_captured_on() -> None:
    # On a GPU optimizer the snapshot lives on the CPU; a state tensor that has to be
    # made anew goes back to the GPU, not the snapshot's device. Without a GPU here, the
    # meta device stands in for it.
    from optuna_lrrange._torch_state import _put_back, _SavedTensor

    saved = _SavedTensor(torch.arange(4.0), torch.device("meta"))
    restored = _put_back(None, saved)
    assert restored.device == torch.device("meta") and restored.shape == (4,)
    live = torch.zeros(4)
    assert _put_back(live, saved) is live and torch.equal(live, torch.arange(4.0))


def test_unusual_group_values_and_a_frozen_parameter_are_restored() -> None:
    # A tensor learning rate, a list in a param group (deep-copied, not shared), and a
    # frozen parameter without a gradient.
    model = make_model("bn")
    model[3].bias.requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=torch.tensor(1e-3))
    optimizer.param_groups[0]["history"] = [1.0, 2.0]
    batches = make_batches()
    train(model, optimizer, batches[:2])
    before = everything(model, optimizer)
    history = optimizer.param_groups[0]["history"]
    with preserved(model, optimizer):
        train(model, optimizer, batches)
        optimizer.param_groups[0]["history"].append(3.0)
        assert differs(everything(model, optimizer), before)
    assert_bitwise_equal(everything(model, optimizer), before)
    assert optimizer.param_groups[0]["history"] == [1.0, 2.0]
    assert history == [1.0, 2.0, 3.0]  # the group holds a copy, not the list it had
    assert all(p.is_leaf and p.grad_fn is None for p in model.parameters())
    assert not any(p.grad is not None and p.grad.requires_grad for p in model.parameters())


def test_a_tensor_learning_rate_is_the_same_object_after_a_sweep() -> None:
    # The sweep sets float rates; the caller's tensor must drive training again afterwards,
    # holding its old value, and still be shared with whoever else holds it.
    model = make_model("mlp")
    lr = torch.tensor(1e-3)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)
    assert optimizer.param_groups[0]["lr"] is lr
    assert lr.item() == torch.tensor(1e-3).item()
    lr.fill_(0.5)  # the caller changes the rate through its tensor: training follows
    assert optimizer.param_groups[0]["lr"].item() == 0.5


# -- learning rates and param groups ------------------------------------------------------


@pytest.mark.parametrize("stepped_before", [False, True])
def test_a_sweep_leaves_the_schedulers_step_order_warning_as_it_was(stepped_before: bool) -> None:
    # torch warns when scheduler.step() comes before the first optimizer.step(); the
    # sweep's optimizer steps must neither hide that warning nor raise it.
    def warnings_of_scheduler_step(sweep: bool) -> list[str]:
        model = make_model("mlp")
        optimizer = make_optimizer("sgd", model)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
        if stepped_before:
            train(model, optimizer, make_batches(1))
        if sweep:
            range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scheduler.step()
        return [str(w.message) for w in caught]

    without_sweep = warnings_of_scheduler_step(sweep=False)
    assert warnings_of_scheduler_step(sweep=True) == without_sweep
    warned = any("`lr_scheduler.step()` before `optimizer.step()`" in m for m in without_sweep)
    assert warned is not stepped_before


def test_param_groups_keep_their_ratios_and_get_their_lrs_back() -> None:
    model = make_model("mlp")
    optimizer = RecordingSGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].weight, "lr": 0.01},
            {"params": model[2].bias, "lr": 0.0},
        ],
        momentum=0.9,
    )
    sweep = range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)

    assert len(optimizer.seen) == len(sweep) == SHORT["num_iter"]
    assert [seen[0] for seen in optimizer.seen] == list(sweep.lrs)
    for lr, seen in zip(sweep.lrs, optimizer.seen, strict=True):
        assert seen[1] == pytest.approx(lr / 10, rel=1e-12)
        assert seen[2] == 0.0
    assert sweep.lrs == pytest.approx(RangeTestConfig(**SHORT).schedule(), rel=1e-12)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01, 0.0]


def test_a_first_group_at_rate_zero_is_an_error() -> None:
    model = make_model("mlp")
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.0}, {"params": model[2].parameters()}], lr=0.1
    )
    with pytest.raises(ValueError, match=r"first param group's learning rate must be nonzero"):
        range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)


def test_config_object_or_options_but_not_both() -> None:
    model = make_model("mlp")
    optimizer = RecordingSGD(model.parameters(), lr=0.1)
    config = RangeTestConfig(start_lr=1e-3, end_lr=1e-1, num_iter=10, mode="linear")
    sweep = range_test(model, optimizer, F.cross_entropy, make_batches(), config=config)
    assert sweep.config == config
    assert sweep.lrs == pytest.approx(config.schedule(), rel=1e-12)
    with pytest.raises(ValueError, match="either `config` or keyword options"):
        range_test(model, optimizer, F.cross_entropy, make_batches(), config=config, num_iter=20)


# -- accumulation and AMP -----------------------------------------------------------------


def test_gradient_accumulation_counts_optimizer_steps_and_records_the_mean() -> None:
    model = make_model("mlp")
    optimizer = RecordingSGD(model.parameters(), lr=0.1)
    batch_losses: list[float] = []

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(out, y)
        batch_losses.append(loss.item())
        return loss

    sweep = range_test(model, optimizer, loss_fn, make_batches(7), accumulation_steps=3, **SHORT)

    assert len(sweep) == len(optimizer.seen) == SHORT["num_iter"]
    assert len(batch_losses) == 3 * SHORT["num_iter"]
    means = np.asarray(batch_losses).reshape(-1, 3).mean(axis=1)
    np.testing.assert_allclose(sweep.losses, means, rtol=1e-6)


def test_accumulated_gradients_are_the_mean_over_the_batches() -> None:
    # One step over batches (a, b) accumulated equals one step over their concatenation.
    batches = make_batches(2)
    merged = [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))]
    results = []
    for loader, accumulation_steps in ((batches, 2), (merged, 1)):
        model = make_model("mlp")
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        captured: list[torch.Tensor] = []

        def spy(*args: Any, _captured: list = captured, _model: nn.Module = model) -> None:
            _captured.extend(p.grad.clone() for p in _model.parameters())

        optimizer.register_step_pre_hook(spy)
        cfg = {**SHORT, "num_iter": 10}
        range_test(
            model, optimizer, F.cross_entropy, loader, accumulation_steps=accumulation_steps, **cfg
        )
        results.append(captured[: len(list(model.parameters()))])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_grad_scaler_is_used_and_restored() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=5)
    assert scaler.is_enabled()
    batches = make_batches()
    x0, y0 = batches[0]
    with torch.no_grad():
        first_loss = F.cross_entropy(model(x0), y0).item()
    before = everything(model, optimizer, scaler)

    with (
        patch.object(scaler, "scale", wraps=scaler.scale) as scale,
        patch.object(scaler, "step", wraps=scaler.step) as step,
        patch.object(scaler, "update", wraps=scaler.update) as update,
    ):
        sweep = range_test(model, optimizer, F.cross_entropy, batches, scaler=scaler, **SHORT)

    assert scale.call_count == step.call_count == update.call_count == SHORT["num_iter"]
    assert sweep.losses[0] == pytest.approx(first_loss, rel=1e-6)  # unscaled
    assert_bitwise_equal(everything(model, optimizer, scaler), before)
    assert scaler._scale is None  # an unused scaler stays unused

    sweep = range_test(
        model, optimizer, F.cross_entropy, batches, scaler=scaler, restore=False, **SHORT
    )
    # 12 finite steps with growth_interval=5: the scale doubled twice.
    assert scaler.get_scale() == 2.0**10
    assert sweep.stop_reason == COMPLETED


def test_a_used_grad_scaler_is_restored_exactly() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("adam", model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=3)
    for x, y in make_batches(4):
        optimizer.zero_grad()
        scaler.scale(F.cross_entropy(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()
    before = everything(model, optimizer, scaler)
    range_test(model, optimizer, F.cross_entropy, make_batches(), scaler=scaler, **SHORT)
    assert_bitwise_equal(everything(model, optimizer, scaler), before)


def test_autocast_dtype_runs_the_forward_pass_under_autocast() -> None:
    seen: list[tuple[bool, torch.dtype]] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return x

    model = nn.Sequential(nn.Linear(8, 3), Probe())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sweep = range_test(
        model, optimizer, F.cross_entropy, make_batches(), autocast_dtype=torch.bfloat16, **SHORT
    )
    assert len(sweep) == len(seen) == SHORT["num_iter"]
    assert set(seen) == {(True, torch.bfloat16)}
    seen.clear()
    range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)
    assert not any(enabled for enabled, _ in seen)


# -- loaders ------------------------------------------------------------------------------


class CountingLoader:
    """A re-iterable list of batches that counts its passes."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.passes = 0

    def __iter__(self) -> Any:
        self.passes += 1
        return iter(self.batches)


def test_a_short_loader_is_cycled_in_order() -> None:
    batches = [(torch.full((2, 8), float(i)), torch.zeros(2, dtype=torch.long)) for i in range(3)]
    loader = CountingLoader(batches)
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    seen: list[float] = []

    def step_fn(batch: Any) -> float:
        seen.append(batch[0][0, 0].item())
        return 1.0

    sweep = range_test(model, optimizer, loader=loader, step_fn=step_fn, **SHORT)
    assert len(sweep) == 12
    assert seen == [0.0, 1.0, 2.0] * 4
    assert loader.passes == 4


def test_a_shuffling_dataloader_reshuffles_on_each_pass() -> None:
    dataset = torch.utils.data.TensorDataset(torch.arange(12.0), torch.zeros(12))
    generator = torch.Generator().manual_seed(3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True, generator=generator)
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    seen: list[float] = []

    def step_fn(batch: Any) -> float:
        seen.append(batch[0].item())
        return 1.0

    range_test(model, optimizer, loader=loader, step_fn=step_fn, num_iter=36)
    passes = [seen[i : i + 12] for i in range(0, 36, 12)]
    assert all(sorted(p) == list(range(12)) for p in passes)
    assert passes[0] != passes[1] != passes[2]
    # The loader's own generator is restored too: the next epoch is the sweep's first pass.
    assert [b[0].item() for b in loader] == passes[0]


def test_an_empty_loader_is_an_error() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    with pytest.raises(ValueError, match="`loader` must yield at least one batch"):
        range_test(model, optimizer, F.cross_entropy, [], **SHORT)


@pytest.mark.parametrize("n", [3, 48])
def test_a_one_shot_iterator_is_refused_and_left_as_found(n: int) -> None:
    # Shorter or longer than the sweep (12 steps): the sweep would use up batches the
    # training needs, so it is refused before a batch is taken.
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    batches = make_batches(n)
    for one_shot in (iter(batches), (b for b in batches)):
        with pytest.raises(ValueError, match=r"`loader` must be re-iterable .* but got"):
            range_test(model, optimizer, F.cross_entropy, one_shot, **SHORT)
        assert len(list(one_shot)) == n
    sweep = range_test(model, optimizer, F.cross_entropy, batches, **SHORT)  # a list is fine
    assert len(sweep) == 12


def test_batches_move_to_the_model_device_and_nested_inputs_work() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 3), nn.Linear(8, 3)

        def forward(self, inputs: dict) -> torch.Tensor:
            return self.a(inputs["a"]) + self.b(inputs["b"])

    model = TwoInputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [({"a": x, "b": x * 2}, y) for x, y in make_batches()]
    sweep = range_test(model, optimizer, F.cross_entropy, batches, device="cpu", **SHORT)
    assert len(sweep) == 12 and all(np.isfinite(sweep.losses))


Pair = collections.namedtuple("Pair", ["a", "b"])
Batch = collections.namedtuple("Batch", ["x", "y"])


class PairInputs(nn.Module):
    """Reads its input as a namedtuple (by field name), as many multi-input models do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(8, 3), nn.Linear(8, 3)
        self.seen: set[type] = set()

    def forward(self, inputs: Any) -> torch.Tensor:
        self.seen.add(type(inputs))
        if isinstance(inputs, Pair):
            return self.a(inputs.a) + self.b(inputs.b)
        return self.a(inputs[0]) + self.b(inputs[1])


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_namedtuple_inputs_reach_the_model_as_namedtuples(accumulation_steps: int) -> None:
    # The reference: the same model and batches, with the inputs as plain tuples.
    plain = PairInputs()
    batches = [((x, x * 2), y) for x, y in make_batches()]
    options = {**SHORT, "accumulation_steps": accumulation_steps, "device": "cpu"}
    expected = range_test(
        plain, torch.optim.SGD(plain.parameters(), lr=0.1), F.cross_entropy, batches, **options
    )
    model = PairInputs()
    named = [Batch(Pair(*x), y) for x, y in batches]  # the batch itself a namedtuple too
    sweep = range_test(
        model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, named, **options
    )
    assert model.seen == {Pair} and plain.seen == {tuple}
    assert sweep.losses == expected.losses and len(sweep) == 12


# -- errors -------------------------------------------------------------------------------


def test_argument_errors_state_what_must_hold() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    batches = make_batches()
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module, but got function"):
        range_test(lambda x: x, optimizer, F.cross_entropy, batches)
    with pytest.raises(TypeError, match="`optimizer` must be a torch.optim.Optimizer, but got"):
        range_test(model, object(), F.cross_entropy, batches)
    with pytest.raises(ValueError, match="at most one of `loss_fn` and `step_fn`"):
        range_test(model, optimizer, F.cross_entropy, batches, step_fn=lambda b: 1.0)
    with pytest.raises(ValueError, match=r"`accumulation_steps >= 1` must hold, but got 0\."):
        range_test(model, optimizer, F.cross_entropy, batches, accumulation_steps=0)
    with pytest.raises(ValueError, match="`loader` must be an iterable of batches"):
        range_test(model, optimizer, F.cross_entropy)
    with pytest.raises(ValueError, match="inside it"):
        range_test(model, optimizer, loader=batches, step_fn=lambda b: 1.0, accumulation_steps=2)
    with pytest.raises(ValueError, match="num_iter >= 10"):
        range_test(model, optimizer, F.cross_entropy, batches, num_iter=3)
    empty = make_optimizer("sgd", model)
    empty.param_groups.clear()
    with pytest.raises(ValueError, match="at least one param group"):
        range_test(model, empty, F.cross_entropy, batches)


def lbfgs_step_fn(model: nn.Module, optimizer: torch.optim.Optimizer) -> Any:
    """The step the LBFGS error message spells out, written as a function."""

    def step_fn(batch: Any) -> Any:
        x, y = batch

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        return optimizer.step(closure)

    return step_fn


def test_lbfgs_without_step_fn_says_it_needs_a_closure_and_how_to_pass_one() -> None:
    model = make_model("mlp")
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=2)
    before = everything(model, optimizer)
    with pytest.raises(
        ValueError,
        match=r"with `loss_fn`, the optimizer's `step\(\)` must take no closure, but "
        r"LBFGS\.step requires one; pass `step_fn=` in place of `loss_fn`.*"
        r"return optimizer\.step\(closure\)`\.$",
    ):
        range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)
    assert_bitwise_equal(everything(model, optimizer), before)
    # What the message says to do works, and is restored as any sweep is.
    step_fn = lbfgs_step_fn(model, optimizer)
    sweep = range_test(model, optimizer, loader=make_batches(), step_fn=step_fn, **SHORT)
    assert len(sweep) == 12 and all(np.isfinite(sweep.losses))
    assert_bitwise_equal(everything(model, optimizer), before)


@pytest.mark.parametrize(
    "no_grad",
    [torch.no_grad, lambda: torch.set_grad_enabled(False), torch.inference_mode],
    ids=["no_grad", "set_grad_enabled_false", "inference_mode"],
)
def test_a_sweep_under_no_grad_says_so(no_grad: Any) -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    before = everything(model, optimizer)
    with (
        no_grad(),
        pytest.raises(
            RuntimeError,
            match=r"gradients must be enabled for the range test's training steps, but it was "
            r"called under `torch\.no_grad\(\)`",
        ),
    ):
        range_test(model, optimizer, F.cross_entropy, make_batches(), **SHORT)
    assert torch.is_grad_enabled()
    assert_bitwise_equal(everything(model, optimizer), before)


def test_bad_batches_and_bad_losses_are_errors() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    before = everything(model, optimizer)
    triples = [(x, y, y) for x, y in make_batches()]
    singles = [(x,) for x, _ in make_batches()]
    with pytest.raises(TypeError, match=r"an \(x, y\) pair .* but got tuple of length 1"):
        range_test(model, optimizer, F.cross_entropy, singles, **SHORT)
    with pytest.raises(TypeError, match="`loss_fn` must return a torch.Tensor, but got float"):
        range_test(model, optimizer, lambda o, y: 1.0, make_batches(), **SHORT)
    with pytest.raises(ValueError, match=r"`step_fn` must return a scalar .* shape \(2,\)"):
        range_test(model, optimizer, loader=triples, step_fn=lambda b: torch.ones(2), **SHORT)
    with pytest.raises(TypeError, match="float or a 0-d tensor, but got str"):
        range_test(model, optimizer, loader=triples, step_fn=lambda b: "low", **SHORT)
    assert_bitwise_equal(everything(model, optimizer), before)


def test_a_non_finite_loss_ends_the_sweep() -> None:
    model = make_model("mlp")
    optimizer = make_optimizer("sgd", model)
    losses = iter([1.0] * 5 + [float("nan")] + [1.0] * 10)
    sweep = range_test(model, optimizer, loader=[0], step_fn=lambda b: next(losses), **SHORT)
    assert sweep.stop_reason == NON_FINITE and len(sweep) == 6


def test_import_without_torch_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import optuna_lrrange\n"
        "try:\n"
        "    import optuna_lrrange.pytorch\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install optuna-lrrange[torch]" in out.stdout


# -- a real task --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 2000
    data = make_dataset(args)
    x = torch.as_tensor(data["x"], dtype=torch.float32)
    y = torch.as_tensor(data["y"], dtype=torch.long)
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x) - 63, 64)]


def test_a_sweep_on_mnist1d_descends_then_diverges(mnist1d_batches: list) -> None:
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.manual_seed(0)
    for m in model:
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    sweep = range_test(
        model, optimizer, F.cross_entropy, mnist1d_batches, start_lr=1e-5, end_lr=10.0
    )

    assert sweep.stop_reason in (DIVERGED, NON_FINITE)
    smoothed = sweep.smoothed_losses(beta=0.9)
    lowest = int(np.nanargmin(smoothed))
    assert smoothed[lowest] < 0.9 * smoothed[0]  # it descends...
    assert 0 < lowest < len(sweep) - 1  # ...to a minimum inside the sweep...
    assert smoothed[-1] > 1.5 * smoothed[lowest]  # ...then blows up
    suggestion = sweep.suggest()
    assert suggestion.lr is not None
    assert sweep.lrs[0] < suggestion.lr < sweep.lrs[lowest]
