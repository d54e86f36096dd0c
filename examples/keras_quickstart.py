"""Keras quickstart: let a range test narrow each trial's learning rate, in Keras 3.

The same study as ``quickstart.py``, written in Keras: an MLP on scikit-learn's
handwritten digits (8x8 images, packaged with scikit-learn, no download). The objective
builds and compiles the model, hands it to ``optuna_lrrange.keras.attach`` and then asks
for the learning rate as usual: the ``LRRangeSampler`` runs a short range test on that very
model (one ``train_on_batch`` step per rate, everything put back afterwards), narrows
``lr`` to the steepest-descent band, and lets TPE pick inside it. The sweep is recorded on
the trial. A re-estimation callback moves the rate during ``fit`` every few epochs.

Keras runs on the backend named by ``KERAS_BACKEND`` (``torch`` unless set).

Run:  python examples/keras_quickstart.py [--storage sqlite:///keras.db] [--n-trials 20]
Fast: OPTUNA_LRRANGE_FAST=1 python examples/keras_quickstart.py  (3 trials, 2 epochs)
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import optuna_lrrange  # noqa: E402
import optuna_lrrange.keras  # noqa: E402

FAST = os.environ.get("OPTUNA_LRRANGE_FAST") == "1"
EPOCHS = 2 if FAST else 12
EVERY = 1 if FAST else 4  # re-estimate the rate at the start of every EVERY-th epoch

x, y = load_digits(return_X_y=True)
X = (x / 16.0 - 0.5).astype("float32")
Y = y.astype("int64")
X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = X[:-300], Y[:-300], X[-300:], Y[-300:]


def objective(trial: optuna.trial.Trial) -> float:
    keras.utils.set_random_seed(trial.number)
    width = trial.suggest_int("width", 32, 256, log=True)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    # One line: the sampler will run the range test on this model before sampling "lr".
    optuna_lrrange.keras.attach(trial, model, X_TRAIN, Y_TRAIN, batch_size=64)
    model.optimizer.learning_rate = trial.suggest_float("lr", 1e-5, 1.0, log=True)

    reestimate = optuna_lrrange.keras.LRReestimationCallback(
        X_TRAIN, Y_TRAIN, batch_size=64, every_epochs=EVERY, trial=trial, max_change=10.0
    )
    model.fit(X_TRAIN, Y_TRAIN, batch_size=64, epochs=EPOCHS, callbacks=[reestimate], verbose=0)
    logits = model.predict(X_VAL, verbose=0)
    return float(np.mean(logits.argmax(1) == Y_VAL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default=None, help="storage URL (default: in memory)")
    parser.add_argument("--study-name", default="keras_quickstart")
    parser.add_argument("--n-trials", type=int, default=3 if FAST else 20)
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna_lrrange.LRRangeSampler(optuna.samplers.TPESampler(seed=0))
    study = optuna.create_study(
        storage=args.storage,
        study_name=args.study_name,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=args.n_trials)

    print(f"best accuracy {study.best_value:.3f} at lr={study.best_params['lr']:.3g}")
    for trial in study.trials:
        band = trial.user_attrs.get("lrrange:band")
        band_text = "none (full range)" if band is None else f"[{band[0]:.2g}, {band[1]:.2g}]"
        sweeps = optuna_lrrange.get_sweeps(trial)
        rates = ", ".join(f"{s.info['chosen_lr']:.3g}" for s in sweeps[1:])
        print(
            f"trial {trial.number}: band {band_text}, lr {trial.params['lr']:.3g}, "
            f"re-estimated {rates or '-'}, accuracy {trial.value:.3f}, sweeps {len(sweeps)}"
        )


if __name__ == "__main__":
    main()
