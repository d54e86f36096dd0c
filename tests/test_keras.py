"""Tests of optuna_lrrange.keras: the Keras 3 adapter, on the torch backend.

The backend is chosen through ``KERAS_BACKEND`` before Keras is first imported; nothing
else in the suite imports Keras, so setting it here, at collection, holds for the whole
run.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Any

import numpy as np
import optuna
import pytest

if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "torch"
torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - only if imported elsewhere first
    raise RuntimeError(
        f"these tests need Keras on the torch backend, but Keras was imported on "
        f"{keras.backend.backend()!r} before them."
    )

import optuna_lrrange  # noqa: E402
from optuna_lrrange import RangeTestConfig, get_sweeps  # noqa: E402
from optuna_lrrange.core import _placement  # noqa: E402
from optuna_lrrange.keras import (  # noqa: E402
    LRReestimationCallback,
    attach,
    preserved,
    range_test,
)

N, FEATURES, CLASSES = 256, 8, 3


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, FEATURES)).astype("float32")
    w = rng.normal(size=(FEATURES, CLASSES))
    y = (x @ w + 0.3 * rng.normal(size=(N, CLASSES))).argmax(1).astype("int64")
    return x, y


X, Y = _data()


def _optimizer(kind: str) -> Any:
    if kind == "sgd_momentum":
        return keras.optimizers.SGD(0.01, momentum=0.9)
    if kind == "adam":
        return keras.optimizers.Adam(1e-3)
    if kind == "adam_schedule":
        return keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5))
    if kind == "loss_scale_sgd":  # the rate lives on the wrapped optimizer
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01, momentum=0.9))
    raise ValueError(kind)


class _GlobalNoise(keras.layers.Layer):  # type: ignore[misc]
    """Adds noise in training drawn with ``seed=None``: from Keras' global seed generator."""

    def call(self, x: Any, training: bool = False) -> Any:
        if training:
            return x + 0.01 * keras.random.normal(keras.ops.shape(x))
        return x


def _model(kind: str = "adam", seed: int = 0) -> Any:
    """A compiled model with BatchNormalization, a seeded and an unseeded Dropout (the
    unseeded one draws from torch's global generator, the seeded one from its own seed
    state), noise from Keras' global seed generator, and an accuracy metric."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2, seed=7),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.2),
            _GlobalNoise(),
            keras.layers.Dense(CLASSES),
        ]
    )
    model.compile(
        optimizer=_optimizer(kind),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _bytes(value: Any) -> tuple[str, bytes]:
    array = np.asarray(keras.ops.convert_to_numpy(value))
    return str(array.dtype), array.tobytes()


def _state(model: Any) -> dict[str, Any]:
    """Everything the sweep promises to put back, as bytes."""
    optimizer = model.optimizer
    variables = [*model.variables, *optimizer.variables, *model.metrics_variables]
    from keras.src.backend.common import global_state

    generator = global_state.get_global_attribute("global_seed_generator")
    return {
        "variables": [(v.path, _bytes(v)) for v in variables],
        "optimizer_variables": [id(v) for v in optimizer.variables],
        "lr_object": id(optimizer._learning_rate),
        "lr": _bytes(optimizer.learning_rate),
        "grads": [
            None if v.value.grad is None else _bytes(v.value.grad)
            for v in model.trainable_variables
        ],
        "torch_rng": torch.get_rng_state().numpy().tobytes(),
        "numpy_rng": repr(np.random.get_state()),
        "python_rng": random.getstate(),
        "global_seed_generator": None if generator is None else _bytes(generator.state),
    }


def _fit(model: Any, epochs: int, **kwargs: Any) -> dict[str, list[float]]:
    history = model.fit(X, Y, batch_size=32, epochs=epochs, verbose=0, shuffle=True, **kwargs)
    return history.history  # type: ignore[no-any-return]


KINDS = ["sgd_momentum", "adam", "adam_schedule", "loss_scale_sgd"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_sweep_restores_weights_optimizer_metrics_and_random_state_bitwise(kind: str) -> None:
    model = _model(kind)
    _fit(model, 1)  # momentum, moments, BN statistics, metrics and seeds all in use
    before = _state(model)
    sweep = range_test(model, X, Y, batch_size=32, num_iter=30, start_lr=1e-4, end_lr=1.0)
    assert len(sweep) > 10
    assert len(set(sweep.losses)) > 10  # the rate moved the loss: steps were taken
    assert _state(model) == before


@pytest.mark.parametrize("kind", KINDS)
def test_training_after_a_sweep_continues_bitwise_as_without_one(kind: str) -> None:
    def run(sweep: bool) -> tuple[dict[str, list[float]], list[Any]]:
        model = _model(kind)
        history = _fit(model, 1)
        if sweep:
            range_test(model, X, Y, num_iter=20)
        later = _fit(model, 2)
        return {**history, **{f"later_{k}": v for k, v in later.items()}}, [
            _bytes(v) for v in [*model.variables, *model.optimizer.variables]
        ]

    assert run(sweep=True) == run(sweep=False)


def test_a_sweep_before_the_first_step_builds_the_optimizer_as_that_step_would() -> None:
    # Also the compiled loss and metrics stay unbuilt: the first fit builds them with a
    # pass over its shuffled data, as it does without a sweep.
    def run(sweep: bool) -> tuple[list[Any], int, bool]:
        model = _model("adam")
        if sweep:
            range_test(model, X, Y, num_iter=20)
            names = {v.path.split("/")[0] for v in model.optimizer.variables}
            assert names == {model.optimizer.name}  # named as the first step names them
        history = _fit(model, 2)
        state = [_bytes(v) for v in [*model.variables, *model.optimizer.variables]]
        return [history, *state], len(model.optimizer.variables), model.optimizer.built

    assert run(sweep=True) == run(sweep=False)


class _Failing(keras.utils.PyDataset):
    """Batches of (X, Y); taking batch ``fail_at`` raises."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def __len__(self) -> int:
        return N // 32

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i == self.fail_at:
            raise RuntimeError("batch failed")
        return X[32 * i : 32 * (i + 1)], Y[32 * i : 32 * (i + 1)]


@pytest.mark.parametrize("kind", ["sgd_momentum", "adam_schedule"])
def test_a_step_that_raises_still_restores_everything(kind: str) -> None:
    model = _model(kind)
    _fit(model, 1)
    before = _state(model)
    with pytest.raises(RuntimeError, match="batch failed"):
        range_test(model, _Failing(fail_at=5), num_iter=20)
    assert _state(model) == before


@pytest.mark.parametrize("kind", ["sgd_momentum", "loss_scale_sgd"])
def test_restore_false_leaves_the_trained_model_and_the_last_rate(kind: str) -> None:
    model = _model(kind)
    weights = [_bytes(v) for v in model.trainable_variables]
    sweep = range_test(model, X, Y, num_iter=15, end_lr=0.1, restore=False)
    assert [_bytes(v) for v in model.trainable_variables] != weights
    assert float(model.optimizer.learning_rate) == pytest.approx(sweep.lrs[-1], rel=1e-6)
    assert int(model.optimizer.iterations) == len(sweep)


def test_a_schedule_is_put_back_and_the_sweep_sets_its_own_rates() -> None:
    model = _model("adam_schedule")
    schedule = model.optimizer._learning_rate
    # With restore=False the weights keep the sweep's steps: the same steps, taken by hand
    # at the sweep's rates on a float-rate twin, give the same weights.
    sweep = range_test(model, X, Y, num_iter=12, shuffle=False, restore=False)
    assert model.optimizer._learning_rate is schedule
    # The stand-in rate variable is no longer the optimizer's (nor saved with it).
    assert not [v.path for v in model.optimizer.variables if "learning_rate" in v.path]
    twin = _model("adam")
    for i, lr in enumerate(sweep.lrs):
        twin.optimizer.learning_rate = lr
        rows = slice(32 * (i % 8), 32 * (i % 8 + 1))
        twin.train_on_batch(X[rows], Y[rows])
    for a, b in zip(model.trainable_variables, twin.trainable_variables, strict=True):
        assert _bytes(a) == _bytes(b)


# --------------------------------------------------------------------------- data


def _reference_batches(shuffle: bool, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The batches a sweep over the arrays takes, written out plainly."""
    rng = np.random.default_rng(0)
    batches: list[tuple[np.ndarray, np.ndarray]] = []
    while len(batches) < steps:
        order = rng.permutation(N) if shuffle else np.arange(N)
        for start in range(0, N, 48):
            rows = order[start : start + 48]
            batches.append((X[rows], Y[rows]))
    return batches[:steps]


class _Dataset(keras.utils.PyDataset):
    def __init__(self, batches: list[Any]) -> None:
        super().__init__()
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        return self.batches[i]


@pytest.mark.parametrize("shuffle", [False, True])
def test_arrays_a_list_of_batches_and_a_pydataset_give_the_same_sweep(shuffle: bool) -> None:
    # 15 steps over 6 batches a pass (the last has 16 rows): passes restart as they should.
    config = RangeTestConfig(num_iter=15, start_lr=1e-3, end_lr=1.0)
    batches = _reference_batches(shuffle, 15)
    model = _model("sgd_momentum")
    from_arrays = range_test(model, X, Y, batch_size=48, shuffle=shuffle, config=config)
    from_list = range_test(model, batches, config=config)
    from_dataset = range_test(model, _Dataset(batches), config=config)
    assert from_arrays.losses == from_list.losses == from_dataset.losses
    assert len(from_arrays) == 15


def test_a_list_of_batches_is_taken_again_when_it_runs_out_and_a_generator_cannot_be() -> None:
    model = _model("sgd_momentum")
    short = _reference_batches(False, 3)
    assert len(range_test(model, short, num_iter=10, start_lr=1e-4, end_lr=1e-2)) == 10
    with pytest.raises(ValueError, match="re-iterable"):
        range_test(model, iter(short), num_iter=10)


def test_the_same_network_in_keras_and_pytorch_sweeps_the_same_losses() -> None:
    """Same architecture, initial weights, batches and plain SGD: the losses agree."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 32), torch.nn.Tanh(), torch.nn.Linear(32, CLASSES)
    )
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(32, activation="tanh"),
            keras.layers.Dense(CLASSES),
        ]
    )
    for layer, linear in zip([model.layers[0], model.layers[1]], [net[0], net[2]], strict=True):
        layer.set_weights(
            [linear.weight.detach().numpy().T.copy(), linear.bias.detach().numpy().copy()]
        )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    config = RangeTestConfig(num_iter=60, start_lr=1e-3, end_lr=3.0)
    batches = _reference_batches(False, 6)
    keras_sweep = range_test(model, X, Y, batch_size=48, shuffle=False, config=config)

    from optuna_lrrange.pytorch import range_test as torch_range_test

    loader = [(torch.from_numpy(bx), torch.from_numpy(by)) for bx, by in batches]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    torch_sweep = torch_range_test(
        net, optimizer, torch.nn.functional.cross_entropy, loader, config=config
    )
    assert keras_sweep.lrs == torch_sweep.lrs
    assert keras_sweep.stop_reason == torch_sweep.stop_reason
    # float32 rounding apart (the largest relative difference measured here: 2.3e-7).
    np.testing.assert_allclose(keras_sweep.losses, torch_sweep.losses, rtol=1e-5, atol=0)
    assert max(keras_sweep.losses) > 2 * min(keras_sweep.losses)  # the rate mattered


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_with_the_invariant() -> None:
    model = _model()
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        range_test("model", X, Y)
    uncompiled = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES)])
    with pytest.raises(ValueError, match="must be compiled"):
        range_test(uncompiled, X, Y)
    unbuilt = keras.Sequential([keras.layers.Dense(CLASSES)])
    unbuilt.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="must be built"):
        range_test(unbuilt, X, Y)
    with pytest.raises(ValueError, match="same number of samples"):
        range_test(model, X, Y[:-1])
    with pytest.raises(ValueError, match="at least one sample"):
        range_test(model, X[:0], Y[:0])
    with pytest.raises(ValueError, match="at least one batch"):
        range_test(model, [])
    with pytest.raises(ValueError, match="`batch_size >= 1`"):
        range_test(model, X, Y, batch_size=0)
    with pytest.raises(ValueError, match="`y` must be None"):
        range_test(model, _Dataset(_reference_batches(False, 2)), Y)
    with pytest.raises(TypeError, match="`x` must be arrays"):
        range_test(model, 3.0)
    with pytest.raises(ValueError, match="num_iter"):
        range_test(model, X, Y, num_iter=2)


def test_a_train_step_that_reports_no_loss_is_an_error_and_restores() -> None:
    class NoLoss(keras.Sequential):  # type: ignore[misc]
        def train_step(self, data: Any) -> dict[str, Any]:
            logs = super().train_step(data)
            return {"accuracy": logs["accuracy"]}

    keras.utils.set_random_seed(0)
    model = NoLoss([keras.Input((FEATURES,)), keras.layers.Dense(CLASSES)])
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = _state(model)
    with pytest.raises(ValueError, match="must report a 'loss'"):
        range_test(model, X, Y)
    assert _state(model) == before


def test_a_sweep_writes_no_file(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    range_test(_model(), X, Y, num_iter=10)
    assert list(tmp_path.iterdir()) == []


def test_preserved_restores_what_the_block_did() -> None:
    model = _model("adam")
    _fit(model, 1)
    before = _state(model)
    with preserved(model):
        model.train_on_batch(X[:32], Y[:32])
        np.random.rand()
        torch.rand(3)
    assert _state(model) == before


def test_importing_the_package_does_not_import_keras() -> None:
    code = "import sys, optuna_lrrange\nprint('keras' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- Optuna


def test_a_keras_objective_with_lrrangesampler_on_sqlite(tmp_path: Any) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from optuna_lrrange.visualization import get_sweep_plot_info, plot_bands, plot_sweep

    storage = f"sqlite:///{tmp_path / 'keras.db'}"

    def objective(trial: optuna.trial.Trial) -> float:
        model = _model("sgd_momentum", seed=trial.number)
        attach(trial, model, X, Y, batch_size=32)
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        model.optimizer.learning_rate = lr
        return float(_fit(model, 1)["loss"][-1])

    sampler = optuna_lrrange.LRRangeSampler(
        optuna.samplers.TPESampler(seed=0), num_iter=40, start_lr=1e-5, end_lr=10.0
    )
    study = optuna.create_study(storage=storage, sampler=sampler)
    study.optimize(objective, n_trials=3)

    stored = optuna.load_study(study_name=study.study_name, storage=storage)
    trials = stored.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 3
    placed = 0
    for trial in trials:
        sweeps = get_sweeps(trial)
        assert len(sweeps) == 1 and sweeps[0].info["kind"] == "trial"
        low, high = trial.user_attrs["lrrange:band_used"]
        assert low <= trial.params["lr"] <= high
        anchor, offset = trial.user_attrs["lrrange:anchor"], trial.user_attrs["lrrange:offset"]
        if trial.user_attrs["lrrange:source"] == trial.number:
            assert anchor == _placement.anchor(sweeps[0].lrs, sweeps[0].losses)[0]
            assert trial.params["lr"] == _placement.place(anchor, offset, 1e-5, 1.0)
            placed += 1
        info = get_sweep_plot_info(trial)
        assert info.lrs == sweeps[0].lrs and info.chosen_lr == trial.params["lr"]
        assert plot_sweep(trial).lines
    assert placed == 3  # every trial's rate was placed from its own sweep's anchor
    assert plot_bands(stored).collections or plot_bands(stored).lines


def test_attach_with_a_fixed_trial_does_nothing() -> None:
    model = _model()
    attach(optuna.trial.FixedTrial({"lr": 0.1}), model, X, Y)
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        attach(optuna.trial.FixedTrial({"lr": 0.1}), object(), X, Y)


# --------------------------------------------------------------------------- the callback


class _SetRates(keras.callbacks.Callback):  # type: ignore[misc]
    """Sets given rates at the start of given epochs: the run a re-estimation must equal."""

    def __init__(self, rates: dict[int, float]) -> None:
        super().__init__()
        self.rates = rates

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch in self.rates:
            self.model.optimizer.learning_rate = self.rates[epoch]


@pytest.mark.parametrize("kind", ["sgd_momentum", "adam"])
def test_fit_with_reestimation_is_bitwise_fit_with_the_rates_set_by_hand(kind: str) -> None:
    callback = LRReestimationCallback(
        X, Y, every_epochs=2, num_iter=30, span=3.0, allow_increase=True
    )
    model = _model(kind)
    with_callback = _fit(model, 5, callbacks=[callback])
    after = [_bytes(v) for v in [*model.variables, *model.optimizer.variables]]
    assert [r.epoch for r in callback.history] == [2, 4]
    rates = {r.epoch: r.lr for r in callback.history}
    assert any(r.lr != r.sweep.info["previous_lr"] for r in callback.history)  # it moved

    model = _model(kind)
    by_hand = _fit(model, 5, callbacks=[_SetRates(rates)])
    assert with_callback == by_hand
    assert [_bytes(v) for v in [*model.variables, *model.optimizer.variables]] == after


def test_reestimations_are_recorded_on_the_trial(tmp_path: Any) -> None:
    storage = f"sqlite:///{tmp_path / 'reest.db'}"
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    callback = LRReestimationCallback(X, Y, every_epochs=1, num_iter=15, trial=trial)
    model = _model("sgd_momentum")
    _fit(model, 3, callbacks=[callback])
    study.tell(trial, 0.0)
    sweeps = get_sweeps(optuna.load_study(study_name=study.study_name, storage=storage).trials[0])
    assert [s.info["kind"] for s in sweeps] == ["reestimate", "reestimate"]
    assert [s.info["epoch"] for s in sweeps] == [1, 2]
    assert [s.info["trigger"] for s in sweeps] == ["every_epochs"] * 2
    for stored, record in zip(sweeps, callback.history, strict=True):
        assert stored.losses == record.sweep.losses
        assert stored.info["chosen_lr"] == record.lr
        assert stored.info["step"] == 8 * record.epoch  # 8 batches an epoch
    # The rate never rises without allow_increase.
    assert all(r.lr <= r.sweep.info["previous_lr"] for r in callback.history)


def test_on_plateau_fires_after_patience_epochs_without_improvement() -> None:
    # A relative threshold of 10 cannot be met: every epoch after the first is a miss.
    callback = LRReestimationCallback(
        X, Y, on_plateau=2, plateau_threshold=10.0, monitor="val_loss", num_iter=15
    )
    _fit(_model(), 6, callbacks=[callback], validation_data=(X[:64], Y[:64]))
    assert [(r.epoch, r.sweep.info["trigger"]) for r in callback.history] == [
        (3, "plateau"),
        (5, "plateau"),
    ]


def test_callback_refuses_a_schedule_and_bad_settings_and_warns_on_a_missing_monitor() -> None:
    with pytest.raises(ValueError, match="must be a float"):
        _fit(_model("adam_schedule"), 1, callbacks=[LRReestimationCallback(X, Y, every_epochs=1)])
    with pytest.raises(ValueError, match="one of `every_epochs`, `on_plateau`"):
        LRReestimationCallback(X, Y)
    with pytest.raises(ValueError, match="`span > 0`"):
        LRReestimationCallback(X, Y, every_epochs=1, span=0)
    # The same checks as LRReestimator's: strings are refused with the invariant.
    with pytest.raises(ValueError, match="but got plateau_threshold='a'"):
        LRReestimationCallback(X, Y, on_plateau=1, plateau_threshold="a")
    with pytest.raises(ValueError, match="`max_change > 1` must hold, but got max_change='2'"):
        LRReestimationCallback(X, Y, every_epochs=1, max_change="2")
    with pytest.raises(ValueError, match="`start_lr` is set from the current rate"):
        LRReestimationCallback(X, Y, every_epochs=1, start_lr=1e-3)
    with pytest.raises(TypeError, match="`trial` must be an optuna Trial"):
        LRReestimationCallback(X, Y, every_epochs=1, trial="trial")
    with pytest.warns(UserWarning, match="'val_loss' is not in the epoch logs"):
        _fit(_model(), 1, callbacks=[LRReestimationCallback(X, Y, on_plateau=1)])
