"""Tests of optuna_lrrange.reestimate: periodic re-estimation inside a training loop."""

from __future__ import annotations

from collections.abc import Callable
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

torch = pytest.importorskip("torch")

from optuna_lrrange import get_sweeps  # noqa: E402
from optuna_lrrange._records import write_sweep  # noqa: E402
from optuna_lrrange.core import RangeTestConfig, Sweep, suggest  # noqa: E402
from optuna_lrrange.reestimate import (  # noqa: E402
    SUPPORTED_SCHEDULERS,
    LRReestimator,
    Reestimation,
    scale_scheduler,
)

F = torch.nn.functional
lr_scheduler = torch.optim.lr_scheduler


def _data(n: int = 256, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w + 0.3 * torch.randn(n, 3, generator=g)).argmax(1)
    return torch.utils.data.TensorDataset(x, y)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # Dropout makes the run depend on the global RNG, which the sweep must restore.
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 3)
    )


def _optimizer(model: torch.nn.Module, kind: str = "adam", lr: float = 1e-2) -> Any:
    first, last = model[0], model[3]
    groups = [
        {"params": first.parameters()},
        {"params": last.parameters(), "lr": lr / 4},  # a second group at a quarter rate
    ]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def _loader(batch_size: int = 32) -> torch.utils.data.DataLoader:
    # Shuffling draws from the global torch RNG at every new pass.
    return torch.utils.data.DataLoader(_data(), batch_size=batch_size, shuffle=True)


def _train(model: Any, optimizer: Any, loader: Any, epochs: int, at_epoch: Callable[[int], None]):
    for epoch in range(epochs):
        at_epoch(epoch)
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()


def _lrs(optimizer: Any) -> list[float]:
    return [float(g["lr"]) for g in optimizer.param_groups]


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_run_is_bitwise_the_run_with_the_rate_set_by_hand(kind: str) -> None:
    torch.manual_seed(123)
    model = _model()
    optimizer = _optimizer(model, kind)
    loader = _loader()
    # Either direction of move must continue bitwise, so raising is allowed here.
    reest = LRReestimator(
        model, optimizer, F.cross_entropy, loader, every_epochs=2, num_iter=30, allow_increase=True
    )
    _train(model, optimizer, loader, 5, lambda e: reest.step(epoch=e))
    rng = torch.get_rng_state()
    assert [r.epoch for r in reest.history] == [2, 4]
    assert any(r.lr != r.sweep.info["previous_lr"] for r in reest.history)

    # The same run, no sweeps: at the same epochs the rates are set by hand.
    torch.manual_seed(123)
    twin = _model()
    twin_opt = _optimizer(twin, kind)
    chosen = {r.epoch: r.lr for r in reest.history}

    def set_by_hand(epoch: int) -> None:
        if epoch in chosen:
            lr0 = twin_opt.param_groups[0]["lr"]
            for i, group in enumerate(twin_opt.param_groups):
                group["lr"] = chosen[epoch] if i == 0 else group["lr"] * (chosen[epoch] / lr0)

    _train(twin, twin_opt, loader, 5, set_by_hand)
    twin_rng = torch.get_rng_state()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    for a, b in zip(optimizer.state.values(), twin_opt.state.values(), strict=True):
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
    assert _lrs(optimizer) == _lrs(twin_opt)
    # The sweeps drew batches and dropout masks, yet the global RNG is where the twin's is.
    assert torch.equal(rng, twin_rng)


def test_new_rate_keeps_group_ratios_and_is_the_suggestion() -> None:
    model = _model()
    optimizer = _optimizer(model, lr=1e-3)
    reest = LRReestimator(
        model, optimizer, F.cross_entropy, _loader(), every_steps=10, allow_increase=True
    )
    assert reest.step(step=0) is None and reest.step(step=7) is None
    lr = reest.step(step=10)
    (record,) = reest.history
    assert isinstance(record, Reestimation)
    step, epoch, sweep, suggestion, chosen = record  # unpacks as a 5-tuple
    assert (step, epoch, lr, chosen) == (10, None, chosen, suggestion.lr)
    assert suggestion == suggest(sweep.lrs, sweep.losses)
    # The sweep covered +-2 decades around the previous rate.
    assert sweep.config.start_lr == pytest.approx(1e-5)
    assert sweep.config.end_lr == pytest.approx(1e-1)
    assert sweep.config.num_iter == 40 and len(sweep) <= 40
    assert _lrs(optimizer)[0] == chosen
    assert _lrs(optimizer)[1] == pytest.approx(chosen / 4, rel=1e-12)
    info = sweep.info
    assert info["kind"] == "reestimate" and info["trigger"] == "every_steps"
    assert info["previous_lr"] == 1e-3 and info["chosen_lr"] == chosen
    assert reest.extra_steps == len(sweep) and reest.sweep_seconds > 0
    # The same step again does not re-estimate twice.
    assert reest.step(step=10) is None


def test_every_epochs_and_every_steps_fire_where_asked() -> None:
    model = _model()
    optimizer = _optimizer(model)
    reest = LRReestimator(
        model, optimizer, F.cross_entropy, _loader(), every_epochs=3, every_steps=50, num_iter=10
    )
    fired = []
    global_step = 0
    for epoch in range(7):
        if reest.step(epoch=epoch, step=global_step) is not None:
            fired.append((epoch, global_step))
        global_step += 25
    # Step 50 at epoch 2, epoch 3 at step 75, step 100 at epoch 4, epoch 6 at step 150.
    assert fired == [(2, 50), (3, 75), (4, 100), (6, 150)]
    assert [r.sweep.info["trigger"] for r in reest.history] == [
        "every_steps",
        "every_epochs",
        "every_steps",
        "every_steps",
    ]


def test_mid_epoch_reestimations_leave_a_persistent_workers_epoch_alone() -> None:
    # A DataLoader with persistent_workers hands out one iterator and resets it on every
    # iter(): a sweep taking its batches that way restarted the training loop's epoch at
    # every re-estimation, and the epoch never ended. The loop below is bounded.
    x = torch.randn(64, 8)
    x[:, 0] = torch.arange(64.0)  # each sample's index, to see which batches came
    y = torch.randint(0, 3, (64,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=4, num_workers=1, persistent_workers=True
    )
    model = _model()
    optimizer = _optimizer(model)
    reest = LRReestimator(model, optimizer, F.cross_entropy, loader, every_steps=5, num_iter=10)
    steps = 0
    for epoch in range(2):
        seen: list[float] = []
        for xb, _ in loader:
            seen.extend(xb[:, 0].tolist())
            steps += 1
            reest.step(step=steps)
            if len(seen) > 2 * 64:
                break
        assert seen == list(range(64)), f"epoch {epoch}"
    assert [r.step for r in reest.history] == [5, 10, 15, 20, 25, 30]  # mostly mid-epoch


def test_plateau_fires_after_patience_evaluations_without_improvement() -> None:
    model = _model()
    optimizer = _optimizer(model)
    reest = LRReestimator(model, optimizer, F.cross_entropy, _loader(), on_plateau=2, num_iter=10)
    results = [reest.step(val_loss=v) for v in [1.0, 0.8, 0.8, 0.7999, 0.7, 0.9, 0.9, 0.9]]
    # 0.8 -> 0.8 -> 0.7999 is no improvement by the relative 1e-3 threshold: fires at the 4th;
    # the counter resets, 0.7 improves, then two more without improvement fire at the 7th.
    fired = [i for i, r in enumerate(results) if r is not None]
    assert fired == [3, 6]
    assert all(r.sweep.info["trigger"] == "plateau" for r in reest.history)


def test_a_sweep_without_suggestion_keeps_the_rate_and_says_why() -> None:
    model = _model()
    optimizer = _optimizer(model, lr=1e-2)

    def flat_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out * 0).sum() + 1.0  # gradients of zero, a loss that never descends

    reest = LRReestimator(model, optimizer, flat_loss, _loader(), every_epochs=1, num_iter=20)
    assert reest.step(epoch=1) == 1e-2
    (record,) = reest.history
    assert record.suggestion.lr is None and record.lr == 1e-2
    assert record.sweep.info["kept_reason"] == record.suggestion.reason == "never_descends"
    assert record.sweep.info["chosen_lr"] == 1e-2
    assert _lrs(optimizer) == [1e-2, 1e-2 / 4]


def test_max_change_bounds_the_move() -> None:
    model = _model()
    optimizer = _optimizer(model, lr=1e-3)
    reest = LRReestimator(
        model,
        optimizer,
        F.cross_entropy,
        _loader(),
        every_epochs=1,
        max_change=1.1,
        allow_increase=True,
    )
    lr = reest.step(epoch=1)
    info = reest.history[0].sweep.info
    wanted = reest.history[0].suggestion.lr
    assert info["clamped_from"] == wanted and not 1e-3 / 1.1 <= wanted <= 1e-3 * 1.1
    assert lr == pytest.approx(1.1e-3 if wanted > 1e-3 else 1e-3 / 1.1)
    assert lr == info["chosen_lr"] == _lrs(optimizer)[0]


def _make_scheduler(name: str, optimizer: Any) -> Any:
    makers: dict[str, Callable[[], Any]] = {
        "LambdaLR": lambda: lr_scheduler.LambdaLR(optimizer, lambda e: 1 / (1 + e)),
        "MultiplicativeLR": lambda: lr_scheduler.MultiplicativeLR(optimizer, lambda e: 0.9),
        "StepLR": lambda: lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5),
        "MultiStepLR": lambda: lr_scheduler.MultiStepLR(optimizer, [4, 9], gamma=0.3),
        "ConstantLR": lambda: lr_scheduler.ConstantLR(optimizer, factor=0.5, total_iters=8),
        "LinearLR": lambda: lr_scheduler.LinearLR(optimizer, 0.2, 1.0, total_iters=10),
        "ExponentialLR": lambda: lr_scheduler.ExponentialLR(optimizer, gamma=0.9),
        "PolynomialLR": lambda: lr_scheduler.PolynomialLR(optimizer, total_iters=15, power=2),
        "CosineAnnealingLR": lambda: lr_scheduler.CosineAnnealingLR(optimizer, 6, eta_min=1e-4),
        "CosineAnnealingWarmRestarts": lambda: lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=4, T_mult=2, eta_min=1e-4
        ),
        "CyclicLR": lambda: lr_scheduler.CyclicLR(optimizer, 1e-3, 1e-1, step_size_up=3),
        "OneCycleLR": lambda: lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20),
        "ReduceLROnPlateau": lambda: lr_scheduler.ReduceLROnPlateau(
            optimizer, patience=1, factor=0.5, min_lr=1e-3
        ),
    }
    return makers[name]()


def _run_schedule(name: str, scale_at: int | None, factor: float) -> list[list[float]]:
    model = _model()
    optimizer = _optimizer(model, "sgd", lr=1e-2)
    scheduler = _make_scheduler(name, optimizer)
    out = []
    for t in range(20):
        if t == scale_at:
            scale_scheduler(scheduler, factor)
        out.append(_lrs(optimizer))
        optimizer.step()
        if name == "ReduceLROnPlateau":
            scheduler.step(1.0)  # never improves: the rate halves every other step
        else:
            scheduler.step()
    return out


@pytest.mark.parametrize("name", SUPPORTED_SCHEDULERS)
def test_scale_scheduler_multiplies_the_rest_of_the_schedule(name: str) -> None:
    plain = _run_schedule(name, None, 1.0)
    scaled = _run_schedule(name, 5, 0.37)
    assert scaled[:5] == plain[:5]
    for t in range(5, 20):
        assert scaled[t] == pytest.approx([0.37 * v for v in plain[t]], rel=1e-9), t
    assert len({tuple(p) for p in plain[5:]}) > 1 or name == "LambdaLR"  # it does schedule


def test_unsupported_scheduler_fails_early_with_the_supported_list() -> None:
    model = _model()
    optimizer = _optimizer(model, "sgd")
    scheduler = lr_scheduler.SequentialLR(
        optimizer,
        [lr_scheduler.ConstantLR(optimizer, 0.5, 3), lr_scheduler.ExponentialLR(optimizer, 0.9)],
        milestones=[3],
    )
    with pytest.raises(
        TypeError, match="must be one of torch's .*CosineAnnealingLR.*SequentialLR"
    ):
        LRReestimator(
            model, optimizer, F.cross_entropy, _loader(), every_epochs=1, scheduler=scheduler
        )


def test_with_a_scheduler_the_rate_moves_and_the_shape_is_kept() -> None:
    torch.manual_seed(0)
    model = _model()
    optimizer = _optimizer(model, "sgd", lr=0.05)
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    reest = LRReestimator(
        model,
        optimizer,
        F.cross_entropy,
        _loader(),
        every_epochs=5,
        scheduler=scheduler,
        allow_increase=True,
    )
    assert reest.apply == "scale_scheduler"
    seen = []
    for epoch in range(10):
        reest.step(epoch=epoch)
        seen.append(_lrs(optimizer)[0])
        optimizer.step()
        scheduler.step()
    (record,) = reest.history
    factor = record.lr / record.sweep.info["previous_lr"]
    assert factor != 1.0
    expected = [0.05 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert seen[:5] == pytest.approx(expected[:5], rel=1e-9)
    assert seen[5] == record.lr
    assert seen[5:] == pytest.approx([factor * v for v in expected[5:]], rel=1e-9)
    assert _lrs(optimizer)[1] == pytest.approx(_lrs(optimizer)[0] / 4, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "one of `every_epochs`, `every_steps`, `on_plateau` must be set"),
        ({"every_epochs": 0}, r"`every_epochs >= 1` must hold, but got every_epochs=0"),
        ({"every_steps": 2, "span": 0}, r"`span > 0` must hold"),
        ({"every_steps": 2, "apply": "scale_scheduler"}, "needs `scheduler`"),
        ({"every_steps": 2, "apply": "jump"}, "`apply` must be one of"),
        ({"every_steps": 2, "start_lr": 1e-4}, "`start_lr` is set from the current rate"),
        ({"every_steps": 2, "num_iter": 3}, r"`num_iter >= 10` must hold"),
        ({"every_steps": 2, "max_change": 0.5}, r"`max_change > 1` must hold"),
        ({"every_steps": 2, "method": "best"}, "`method` must be one of"),
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    model = _model()
    with pytest.raises(ValueError, match=match):
        LRReestimator(model, _optimizer(model), F.cross_entropy, _loader(), **kwargs)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        pytest.param(
            {"model": "x"},
            TypeError,
            r"`model` must be a torch\.nn\.Module, but got str\.$",
            id="model_str",
        ),
        pytest.param(
            {"optimizer": None},
            TypeError,
            r"`optimizer` must be a torch\.optim\.Optimizer, but got NoneType\.$",
            id="optimizer_none",
        ),
        pytest.param(
            {"step_fn": lambda batch: 0.0},
            ValueError,
            r"at most one of `loss_fn` and `step_fn` must be given",
            id="both_loss_fn_and_step_fn",
        ),
        pytest.param(
            {"loss_fn": "mse"},
            TypeError,
            r"`loss_fn` must be callable, but got str\.$",
            id="loss_fn_not_callable",
        ),
        pytest.param(
            {"loader": None},
            ValueError,
            r"`loader` must be an iterable of batches, but got None\.$",
            id="loader_none",
        ),
        pytest.param(
            {"loader": 32},
            TypeError,
            r"`loader` must be an iterable of batches, but got int\.$",
            id="loader_int",
        ),
        pytest.param(
            {"range_test_options": {"restore": False}},
            ValueError,
            r"`range_test_options` must be among \['accumulation_steps', 'autocast_dtype', "
            r"'device', 'process_group', 'scaler', 'snapshot_device'\], but got \['restore'\]: "
            r".* always restores",
            id="range_test_options_restore",
        ),
        pytest.param(
            {"range_test_options": {"num_iter": 10, "config": None}},
            ValueError,
            r"`range_test_options` must be among .*, but got \['config', 'num_iter'\]",
            id="range_test_options_settings",
        ),
        pytest.param(
            {"range_test_options": {"accumulation_steps": 0}},
            ValueError,
            r"`accumulation_steps >= 1` must hold, but got 0\.$",
            id="range_test_options_accumulation_0",
        ),
        pytest.param(
            {"range_test_options": [("device", "cpu")]},
            TypeError,
            r"`range_test_options` must be a mapping of range_test keyword arguments, but got "
            r"list\.$",
            id="range_test_options_list",
        ),
        pytest.param(
            {"plateau_threshold": "a"},
            ValueError,
            r"`plateau_threshold >= 0` must hold, but got plateau_threshold='a'\.$",
            id="plateau_threshold_str",
        ),
        pytest.param(
            {"plateau_threshold": float("nan")},
            ValueError,
            r"`plateau_threshold >= 0` must hold, but got plateau_threshold=nan\.$",
            id="plateau_threshold_nan",
        ),
        pytest.param(
            {"max_change": "2"},
            ValueError,
            r"`max_change > 1` must hold, but got max_change='2'\.$",
            id="max_change_str",
        ),
        pytest.param(
            {"max_change": True},
            ValueError,
            r"`max_change > 1` must hold, but got max_change=True\.$",
            id="max_change_bool",
        ),
        pytest.param(
            {"span": "2"},
            ValueError,
            r"`span > 0` must hold, but got span='2'\.$",
            id="span_str",
        ),
    ],
)
def test_every_argument_is_checked_at_construction(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    model = _model()
    given = {
        "model": model,
        "optimizer": _optimizer(model),
        "loss_fn": F.cross_entropy,
        "loader": _loader(),
        "on_plateau": 2,
        **arguments,
    }
    with pytest.raises(error, match=match):
        LRReestimator(**given)


def test_a_scheduler_of_another_optimizer_is_refused() -> None:
    model = _model()
    optimizer = _optimizer(model, "sgd")
    other = lr_scheduler.StepLR(_optimizer(model, "sgd"), 2)
    with pytest.raises(ValueError, match=r"`scheduler` must drive `optimizer`"):
        LRReestimator(model, optimizer, F.cross_entropy, _loader(), every_steps=2, scheduler=other)


def test_set_with_a_scheduler_is_refused() -> None:
    model = _model()
    optimizer = _optimizer(model, "sgd")
    scheduler = lr_scheduler.StepLR(optimizer, 2)
    with pytest.raises(ValueError, match="`apply='set'` must not be given a `scheduler`"):
        LRReestimator(
            model,
            optimizer,
            F.cross_entropy,
            _loader(),
            every_steps=2,
            apply="set",
            scheduler=scheduler,
        )


# ---------------------------------------------------------------------------------------
# Inside an Optuna study


@pytest.fixture(params=["inmemory", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "inmemory":
        return optuna.storages.InMemoryStorage()
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")


def test_reestimations_are_recorded_on_the_trial_next_to_the_first_sweep(storage: Any) -> None:
    study = optuna.create_study(storage=storage)
    loader = _loader()

    def objective(trial: optuna.Trial) -> float:
        model = _model(trial.number)
        optimizer = _optimizer(model, lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))
        # The sampler's first sweep, as LRRangeSampler records it.
        first = Sweep((1e-3, 1e-2), (1.0, 0.9), "completed", RangeTestConfig(num_iter=10))
        first = Sweep(first.lrs, first.losses, first.stop_reason, first.config, {"kind": "trial"})
        write_sweep(trial.study._storage, trial._trial_id, first, None)
        reest = LRReestimator(
            model, optimizer, F.cross_entropy, loader, every_epochs=2, num_iter=20, trial=trial
        )
        _train(model, optimizer, loader, 5, lambda e: reest.step(epoch=e))
        sweeps = get_sweeps(trial)
        assert [s.info["kind"] for s in sweeps] == ["trial", "reestimate", "reestimate"]
        return 0.0

    study.optimize(objective, n_trials=2)
    for frozen in study.trials:
        sweeps = get_sweeps(frozen)
        assert [s.info["kind"] for s in sweeps] == ["trial", "reestimate", "reestimate"]
        for sweep, epoch in zip(sweeps[1:], [2, 4], strict=True):
            info = sweep.info
            assert info["trial_number"] == frozen.number
            assert info["trial_id"] == frozen._trial_id
            assert (info["epoch"], info["step"], info["trigger"]) == (epoch, None, "every_epochs")
            assert info["chosen_lr"] > 0 and info["previous_lr"] > 0
        # Each re-estimation starts from the rate the previous one chose.
        assert sweeps[2].info["previous_lr"] == sweeps[1].info["chosen_lr"]


def test_pruned_trials_keep_their_reestimation_records(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'prune.db'}")
    study = optuna.create_study(
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    data = _data(128, seed=1)
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    x_val, y_val = data.tensors

    def objective(trial: optuna.Trial) -> float:
        model = _model(0)
        # Two good trials first, then one whose rate is far too low to learn anything.
        lr = 3e-2 if trial.number < 2 else 1e-7
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        reest = LRReestimator(
            model,
            optimizer,
            F.cross_entropy,
            loader,
            every_epochs=1,
            num_iter=10,
            max_change=1.01,  # keep the bad trial bad
            trial=trial,
        )
        for epoch in range(6):
            reest.step(epoch=epoch)
            _train(model, optimizer, loader, 1, lambda e: None)
            with torch.no_grad():
                val = F.cross_entropy(model.eval()(x_val), y_val).item()
            model.train()
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return val

    study.optimize(objective, n_trials=3)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    pruned = study.trials[2]
    sweeps = get_sweeps(pruned)
    assert len(sweeps) >= 2  # re-estimated at epochs 1, 2 before the pruner stopped it
    assert [s.info["epoch"] for s in sweeps] == list(range(1, len(sweeps) + 1))
    assert all(s.info["trial_number"] == 2 for s in sweeps)


def test_a_reestimation_after_tell_changes_nothing_and_raises() -> None:
    study = optuna.create_study()
    trial = study.ask()
    model = _model()
    optimizer = _optimizer(model, lr=1e-3)
    loader = _loader()
    options: dict[str, Any] = {"every_epochs": 1, "num_iter": 20, "allow_increase": True}
    reest = LRReestimator(model, optimizer, F.cross_entropy, loader, trial=trial, **options)
    twin_model = _model()
    twin = LRReestimator(
        twin_model, _optimizer(twin_model, lr=1e-3), F.cross_entropy, loader, **options
    )
    assert twin.reestimate().lr != 1e-3  # the control: this sweep would move the rate
    study.tell(trial, 0.0)
    lrs = _lrs(optimizer)
    with pytest.raises(RuntimeError, match=r"trial must be running .* trial 0 is COMPLETE"):
        reest.step(epoch=1)
    assert _lrs(optimizer) == lrs and reest.history == [] and reest.extra_steps == 0
    assert get_sweeps(study.trials[0]) == []


def test_a_fixed_trial_records_nothing_but_keeps_history() -> None:
    model = _model()
    optimizer = _optimizer(model)
    trial = optuna.trial.FixedTrial({"lr": 1e-2})
    reest = LRReestimator(
        model, optimizer, F.cross_entropy, _loader(), every_epochs=1, num_iter=10, trial=trial
    )
    reest.step(epoch=1)
    assert len(reest.history) == 1
    assert "trial_number" not in reest.history[0].sweep.info


def test_other_trial_types_are_refused() -> None:
    model = _model()
    with pytest.raises(TypeError, match="`trial` must be an optuna Trial"):
        LRReestimator(
            model, _optimizer(model), F.cross_entropy, _loader(), every_epochs=1, trial="t0"
        )


def test_a_flat_then_rising_sweep_falls_back_to_the_edge_rule():
    # A sweep from trained weights: the loss is flat until the rate passes 0.05, then rises.
    # The default rule finds no descent; the re-estimator falls back to a tenth of the edge.
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)

    def step_fn(batch: Any) -> float:
        lr = optimizer.param_groups[0]["lr"]
        noise = float(torch.randn((), generator=generator)) * 0.01
        return 0.3 + noise + (3 * math.log10(lr / 0.05) if lr > 0.05 else 0.0)

    reestimator = LRReestimator(
        model, optimizer, loader=_loader(), step_fn=step_fn, every_epochs=1
    )
    record = reestimator.reestimate()
    assert record.sweep.info["fallback_from"] == "never_descends"
    assert record.suggestion.method == "edge_div10"
    assert 0.05 / 10 / 3 < record.lr <= 0.05 / 10
    assert optimizer.param_groups[0]["lr"] == record.lr

    # An explicit method is used as it is, without the fallback.
    optimizer.param_groups[0]["lr"] = 0.01
    explicit = LRReestimator(
        model, optimizer, loader=_loader(), step_fn=step_fn, every_epochs=1, method="steepest_band"
    ).reestimate()
    assert explicit.suggestion.lr is None and "fallback_from" not in explicit.sweep.info
    assert explicit.lr == 0.01


def test_a_suggestion_above_the_current_rate_is_refused_unless_allowed():
    # A sweep whose loss falls all the way up to 1.0: every rule suggests more than 1e-3.
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step_fn(batch: Any) -> float:
        return 2.0 - 0.1 * math.log10(optimizer.param_groups[0]["lr"])

    refused = LRReestimator(model, optimizer, loader=_loader(), step_fn=step_fn, every_epochs=1)
    record = refused.reestimate()
    assert record.suggestion.lr is not None and record.suggestion.lr > 1e-3
    assert record.lr == 1e-3 == optimizer.param_groups[0]["lr"]
    assert record.sweep.info["kept_reason"] == "would_raise"
    assert record.sweep.info["refused_lr"] == record.suggestion.lr
    assert record.sweep.info["chosen_lr"] == 1e-3

    allowed = LRReestimator(
        model, optimizer, loader=_loader(), step_fn=step_fn, every_epochs=1, allow_increase=True
    ).reestimate()
    assert allowed.lr == allowed.suggestion.lr > 1e-3
    assert optimizer.param_groups[0]["lr"] == allowed.lr
    assert "kept_reason" not in allowed.sweep.info


def test_allow_increase_must_be_a_bool():
    model = _model()
    with pytest.raises(TypeError, match="`allow_increase` must be a bool, but got str 'yes'"):
        LRReestimator(
            model,
            _optimizer(model),
            F.cross_entropy,
            _loader(),
            every_epochs=1,
            allow_increase="yes",
        )
