"""Bad input: a catalogue, one row per input, each answered by a clear message.

Every row is ``(id, callable, expected, message regex)``. ``expected`` is what answers it:

* an exception type: the callable raises it, and its message says what must hold and what
  was given;
* a warning type: the callable warns (the read side: an unreadable stored record is skipped
  with a ``RecordWarning``, never a crash);
* ``REASON``: the callable runs a study; the trial still COMPLETEs, with the message in its
  ``lrrange:reason`` user attribute (a failed sweep never fails a trial);
* ``LOGGED``: the trial completes and the message is logged on ``optuna.lrrange``;
* ``EXIT_2``: the callable runs the ``optuna-lrrange`` command, which exits with status 2
  and a one-line message (no traceback) and creates or changes no file;
* ``ACCEPTED``: input that used to fail and is now handled; the callable returns what came
  of it, which the regex describes.

Covered: the learning rate suggested as an int, a categorical, a linear float, a stepped
float, a log float with a non-positive low bound (Optuna's own message); range-test
settings (start >= end, non-positive or infinite rates, too few or non-int steps, a
divergence factor <= 1, an unknown mode, a smoothing beta of 1); ``LRRangeSampler``
arguments (bad base sampler, unknown option, config and options both, a config of the wrong
type, unknown method, ``sweep_every < 1``, empty ``param_name``, a string for
``resweep_on_params``); ``suggest`` (unknown method, rates not increasing, non-positive, of
unequal length); ``run_range_test`` (a step returning no number, config and options both);
the hand-off to ``attach`` (no model, wrong model or optimizer types, both ``sweep_fn`` and
a model, attach after the rate was suggested, a ``FrozenTrial``, range-test settings or
unknown options given to attach, no loader, an optimizer with no param groups, both
``loss_fn`` and ``step_fn``, ``accumulation_steps < 1``, a study whose sampler is not an
``LRRangeSampler``, no attach at all, a rate suggested under another name); ``range_test``
(no param groups, an empty loader, a non-scalar loss, a loss that is not a tensor, a batch
that is not a pair, ``accumulation_steps < 1``, the first group at rate 0); records (a
future schema version, a corrupted or malformed record read strictly, the same read
non-strictly and by ``sweeps_dataframe``, ``get_sweeps`` of a non-trial; a suggestion that
is a list, a suggested rate that is a string, a reversed band, settings that are a list,
string losses, decreasing rates, more steps than the settings allow, a mistyped trial
number or chosen rate, a record key renamed to ``lrrange:sweep:007``; all but the band,
the step count and the info fields also through every reader: both frames, the four plots'
data and drawing, and the CLI's ``sweeps`` and ``plot``); a user's
``sweep_fn`` returning a non-Sweep or a step returning ``None``; ``LRReestimator`` with no
trigger or a trigger < 1, a model or optimizer of the wrong type, ``range_test_options``
that set what it owns, a string for ``plateau_threshold`` or ``max_change``; inputs given
as a namedtuple; LBFGS without ``step_fn``; the rate suggested under ``torch.no_grad()``;
``scheduler.step()`` before ``optimizer.step()`` after a sweep; ``plot_sweep`` with a
string trial number; the command line given a mistyped SQLite URL, an empty SQLite or
journal file, another program's database, an output under a regular file or in ``/proc``,
an unknown image format, ``--sma 0`` or ``--dpi 0``. Also: a one-shot iterator as a
loader, a sweep whose info holds a ``torch.device``, a ``GridSampler`` base that ignores the
band, a malformed stored band, an ``LRRangeSampler`` inside another, a re-estimation after
``study.tell``.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator
import contextlib
import io
import json
import logging
from pathlib import Path
import re
import sqlite3
import sys
from typing import Any
import warnings

import optuna
from optuna.trial import TrialState
import pytest
import torch

import optuna_lrrange as ol
from optuna_lrrange import RangeTestConfig, run_range_test, suggest
from optuna_lrrange._records import RecordWarning, encode, read_records
from optuna_lrrange.cli import main as cli_main
from optuna_lrrange.pytorch import range_test
from optuna_lrrange.reestimate import LRReestimator


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off for this module's tests only, restored afterwards."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(verbosity)


REASON = "recorded reason"
LOGGED = "logged warning"
EXIT_2 = "exit status 2"
ACCEPTED = "accepted"

LRS = [1e-5 * 10 ** (i / 10) for i in range(30)]
LOSSES = [1.0 - 0.01 * i for i in range(30)]


# ------------------------------------------------------------------------- helpers


def good_sweep(config: RangeTestConfig) -> ol.Sweep:
    return run_range_test(lambda lr: 1.0 / (1.0 + lr), config)


def tiny() -> tuple[torch.nn.Module, torch.optim.Optimizer, list[Any]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    return model, optimizer, [(x[:16], y[:16]), (x[16:], y[16:])]


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(out, y)


def run_trial(
    objective: Callable[[optuna.Trial], float],
    sampler: optuna.samplers.BaseSampler | None = None,
    storage: str | None = None,
) -> optuna.trial.FrozenTrial:
    sampler = (
        ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=0), num_iter=20)
        if sampler is None
        else sampler
    )
    study = optuna.create_study(sampler=sampler, storage=storage)
    study.optimize(objective, n_trials=1)
    return study.trials[-1]


def suggesting(suggest_lr: Callable[[optuna.Trial], Any]) -> Callable[[Path], Any]:
    """A study whose objective attaches a sweep, then asks for the rate as ``suggest_lr``."""

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=good_sweep)
        suggest_lr(trial)
        return 0.0

    return lambda tmp_path: run_trial(objective)


def attaching(**kwargs: Any) -> Callable[[Path], Any]:
    """A study whose objective calls ``attach(trial, **kwargs)`` (``tiny`` objects by name)."""

    def objective(trial: optuna.Trial) -> float:
        model, optimizer, batches = tiny()
        named = {"MODEL": model, "OPTIMIZER": optimizer, "BATCHES": batches}
        arguments = {k: named.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
        if arguments.pop("empty_groups", False):
            optimizer.param_groups.clear()
        ol.attach(trial, **arguments)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return lambda tmp_path: run_trial(objective)


def torch_range_test(loss_fn: Any = mse, loader: Any = "BATCHES", **kwargs: Any) -> Any:
    def run(tmp_path: Path) -> Any:
        model, optimizer, batches = tiny()
        if kwargs.pop("empty_groups", False):
            optimizer.param_groups.clear()
        if kwargs.pop("zero_lr", False):
            optimizer.param_groups[0]["lr"] = 0.0
        return range_test(
            model,
            optimizer,
            loss_fn,
            batches if loader == "BATCHES" else loader,
            num_iter=10,
            **kwargs,
        )

    return run


def study_with_record(tmp_path: Path, text: str, key: str = "lrrange:sweep:0") -> optuna.Study:
    """An SQLite study: trial 0 with a good sweep, trial 1 (the best) holding ``text`` under
    ``key`` as its only record."""
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        sampler=ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=0), num_iter=20),
    )

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=good_sweep)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study.optimize(objective, n_trials=1)
    trial = study.ask()
    trial.suggest_float("lr", 1e-6, 1.0, log=True)
    trial.set_user_attr(key, text)
    study.tell(trial, -1.0)
    return study


def future_record() -> str:
    data = json.loads(encode(good_sweep(RangeTestConfig(num_iter=20)))[0])
    data["schema"] = 99
    return json.dumps(data)


def get_sweeps_of_trial_1(text: str, key: str = "lrrange:sweep:0") -> Callable[[Path], Any]:
    return lambda tmp_path: ol.get_sweeps(study_with_record(tmp_path, text, key).trials[1])


def good_record(**changes: Any) -> str:
    """A sweep record as the sampler writes it, with ``changes`` to its fields."""
    sweep = good_sweep(RangeTestConfig(num_iter=20))
    data = json.loads(encode(sweep, sweep.suggest())[0])
    return json.dumps({**data, **changes})


def with_suggestion(**changes: Any) -> str:
    sweep = good_sweep(RangeTestConfig(num_iter=20))
    suggestion = json.loads(encode(sweep, sweep.suggest())[0])["suggestion"]
    return good_record(suggestion={**suggestion, **changes})


def schema_1(**changes: Any) -> str:
    data = json.loads(good_record())
    data = {k: data[k] for k in ("stop_reason", "config", "info", "suggestion")}
    sweep = good_sweep(RangeTestConfig(num_iter=20))
    return json.dumps({"schema": 1, "lrs": sweep.lrs, "losses": sweep.losses, **data, **changes})


def every_reader_skips(text: str, key: str = "lrrange:sweep:0") -> Callable[[Path], Any]:
    """Every reader of a study holding ``text`` under ``key`` on its best trial: the frames,
    the four plots (their data and their drawing) and the CLI's ``sweeps`` and ``plot``. Each
    skips the record with a RecordWarning and reads the good trial."""

    def run(tmp_path: Path) -> None:
        from optuna_lrrange import cli, visualization

        study = study_with_record(tmp_path, text, key)
        url = f"sqlite:///{tmp_path / 'study.db'}"
        name = study.study_name
        readers: dict[str, Callable[[], Any]] = {
            "sweeps_dataframe": lambda: set(ol.sweeps_dataframe(study)["number"]) == {0},
            "sweeps_summary": lambda: list(ol.sweeps_summary(study)["number"]) == [0],
            "sweep": lambda: visualization.get_sweep_plot_info(study).title.startswith("Trial 0"),
            "loss_change": lambda: len(visualization.get_loss_change_plot_info(study).lrs) > 0,
            "sweeps": lambda: len(visualization.get_sweeps_plot_info(study).lines) == 1,
            "bands": lambda: (
                [e.number for e in visualization.get_bands_plot_info(study).entries] == [0]
            ),
            "plot_sweep": lambda: visualization.plot_sweep(study) is not None,
            "plot_loss_change": lambda: visualization.plot_loss_change(study) is not None,
            "plot_sweeps": lambda: visualization.plot_sweeps(study) is not None,
            "plot_bands": lambda: visualization.plot_bands(study) is not None,
            "cli sweeps": lambda: (
                cli.main(
                    ["sweeps", "--storage", url, "--study", name, "-o", str(tmp_path / "s.csv")]
                )
                == 0
            ),
            "cli plot": lambda: (
                cli.main(
                    ["plot", "--storage", url, "--study", name, "--kind", "sweep"]
                    + ["-o", str(tmp_path / "p.png")]
                )
                == 0
            ),
        }
        caught: list[warnings.WarningMessage] = []
        for what, read in readers.items():
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                assert read(), what
            assert [str(w.message) for w in seen if w.category is RecordWarning], what
            assert all(f"trial 1: skipped user attribute {key!r}" in str(w.message) for w in seen)
            caught += seen
        # What the readers warned, passed on for the catalogue's check of the message.
        warnings.warn(caught[0].message, stacklevel=1)

    return run


def read_non_strict(tmp_path: Path) -> None:
    study = study_with_record(tmp_path, '{"schema": 1, "lrs": [0.1')
    trials = study.trials
    assert len(read_records(trials[0].user_attrs, strict=False)) == 1
    assert read_records(trials[1].user_attrs, strict=False) == []


def dataframe_skips(tmp_path: Path) -> None:
    study = study_with_record(tmp_path, "garbage")
    frame = ol.sweeps_dataframe(study)
    assert set(frame["number"]) == {0} and len(frame) == 20
    assert len(ol.sweeps_summary(study)) == 1


def attach_after_suggest(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
        ol.attach(trial, sweep_fn=good_sweep)
        return lr

    return run_trial(objective)


def attach_without_lrrange_sampler(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=good_sweep)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return run_trial(objective, sampler=optuna.samplers.RandomSampler(seed=0))


def attach_frozen_trial(tmp_path: Path) -> Any:
    frozen = optuna.trial.create_trial(value=0.0)
    return ol.attach(frozen, sweep_fn=good_sweep)  # type: ignore[arg-type]


def sweep_fn_returning(value: Any) -> Callable[[Path], Any]:
    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=lambda config: value)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return lambda tmp_path: run_trial(objective, storage=f"sqlite:///{tmp_path / 's.db'}")


def step_returning_none(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=lambda config: run_range_test(lambda lr: None, config))
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return run_trial(objective)


def no_attach(tmp_path: Path) -> Any:
    return run_trial(lambda trial: trial.suggest_float("lr", 1e-6, 1.0, log=True))


def rate_under_another_name(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=good_sweep)
        return trial.suggest_float("learning_rate", 1e-6, 1.0, log=True)

    return run_trial(objective)


def reestimator(**kwargs: Any) -> Callable[[Path], Any]:
    def build(tmp_path: Path) -> Any:
        model, optimizer, batches = tiny()
        return LRReestimator(model, optimizer, mse, batches, **kwargs)

    return build


def sweep_fn_with_info(info: dict[str, Any]) -> Callable[[Path], Any]:
    """A study whose sweep function returns a good sweep carrying ``info``."""

    def sweep_fn(config: RangeTestConfig) -> ol.Sweep:
        sweep = good_sweep(config)
        return ol.Sweep(sweep.lrs, sweep.losses, sweep.stop_reason, sweep.config, info)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=sweep_fn)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return lambda tmp_path: run_trial(objective, storage=f"sqlite:///{tmp_path / 's.db'}")


def grid_base_sampler(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=good_sweep)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    # The band placement: with the offset placement a grid over `lr` is refused outright
    # (test_sampler_offset.py).
    grid = optuna.samplers.GridSampler({"lr": [1e-6]})
    with pytest.warns(UserWarning, match="out of range"):  # GridSampler's own notice
        return run_trial(objective, ol.LRRangeSampler(grid, num_iter=20, placement="band"))


def malformed_band_reused(tmp_path: Path) -> Any:
    """Trial 0's stored band is ``[0.01]``; trial 1 would reuse it (``sweep_every=3``)."""

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=good_sweep)
        lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
        if trial.number == 0:
            trial.set_user_attr("lrrange:band", [0.01])
        return lr

    sampler = ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=0), num_iter=20, sweep_every=3)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=2)
    return study.trials[-1]


def reestimate_after_tell(tmp_path: Path) -> Any:
    study = optuna.create_study()
    trial = study.ask()
    model, optimizer, batches = tiny()
    reest = LRReestimator(model, optimizer, mse, batches, every_epochs=1, trial=trial)
    study.tell(trial, 0.0)
    return reest.reestimate()


def cli(*args: str) -> Callable[[Path], tuple[int, str]]:
    """``optuna-lrrange ARGS`` run in ``tmp_path``; its exit status and stderr.

    ``{url}`` is an SQLite study 's' with a sweep; ``{tmp}`` the folder, which also holds a
    regular file ``file``, empty files ``empty.db`` and ``empty.log``, and ``other.db``, an
    SQLite database of another program. The command must leave every file as it was.
    """

    def run(tmp_path: Path) -> tuple[int, str]:
        study = study_with_record(tmp_path, encode(good_sweep(RangeTestConfig(num_iter=20)))[0])
        (tmp_path / "file").write_text("a file, not a folder")
        (tmp_path / "empty.db").touch()
        (tmp_path / "empty.log").touch()
        with contextlib.closing(sqlite3.connect(tmp_path / "other.db")) as db, db:
            db.execute("create table notes (text)")
        url = f"sqlite:///{tmp_path / 'study.db'}"
        argv = [a.format(tmp=tmp_path, url=url, study=study.study_name) for a in args]
        if any(a.startswith("/proc/") for a in argv) and not sys.platform.startswith("linux"):
            pytest.skip("/proc is Linux's")  # pragma: no cover
        before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli_main(argv)
        after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
        assert after == before, "a failed command must create or change no file"
        return code, err.getvalue()

    return run


def reading(*args: str) -> Callable[[Path], tuple[int, str]]:
    """``optuna-lrrange sweeps --storage ARGS[0] --study s -o -``, for storage errors."""
    return cli("sweeps", "--storage", *args, "--study", "s", "-o", "-")


def exporting(*args: str) -> Callable[[Path], tuple[int, str]]:
    """``optuna-lrrange sweeps`` of the good study with ``ARGS``."""
    return cli("sweeps", "--storage", "{url}", "--study", "{study}", *args)


def plotting(*args: str) -> Callable[[Path], tuple[int, str]]:
    """``optuna-lrrange plot --kind bands`` of the good study with ``ARGS``."""
    return cli("plot", "--storage", "{url}", "--study", "{study}", "--kind", "bands", *args)


Pair = namedtuple("Pair", ["a", "b"])


class PairModel(torch.nn.Module):
    """A model whose input is a namedtuple, read by field name."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
        self.seen: list[str] = []

    def forward(self, inputs: Pair) -> torch.Tensor:
        self.seen.append(type(inputs).__name__)
        return self.a(inputs.a) + self.b(inputs.b)


def namedtuple_inputs(tmp_path: Path) -> str:
    model, x, y = PairModel(), torch.randn(16, 4), torch.randn(16, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(Pair(x, x * 2), y)]
    sweep = range_test(model, optimizer, mse, batches, num_iter=10, accumulation_steps=2)
    return f"{len(sweep)} steps; the model got {sorted(set(model.seen))}"


def lbfgs_range_test(tmp_path: Path) -> Any:
    model, _, batches = tiny()
    return range_test(model, torch.optim.LBFGS(model.parameters()), mse, batches, num_iter=10)


def attach_lbfgs(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        model, _, batches = tiny()
        ol.attach(trial, model, torch.optim.LBFGS(model.parameters()), mse, batches)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return run_trial(objective)


def suggest_under_no_grad(tmp_path: Path) -> Any:
    def objective(trial: optuna.Trial) -> float:
        model, optimizer, batches = tiny()
        ol.attach(trial, model, optimizer, mse, batches)
        with torch.no_grad():
            return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    return run_trial(objective)


def plot_sweep_trial_as_str(tmp_path: Path) -> Any:
    study = study_with_record(tmp_path, encode(good_sweep(RangeTestConfig(num_iter=20)))[0])
    return ol.plot_sweep(study, trial="0")  # type: ignore[arg-type]


def scheduler_step_first_after_a_sweep(tmp_path: Path) -> None:
    model, optimizer, batches = tiny()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    range_test(model, optimizer, mse, batches, num_iter=10)
    scheduler.step()  # before any optimizer.step() of the user's: torch must still warn


# ------------------------------------------------------------------------- the catalogue

CATALOGUE: list[tuple[str, Callable[[Path], Any], Any, str]] = [
    # --- how the learning rate is suggested
    (
        "lr_as_int",
        suggesting(lambda t: t.suggest_int("lr", 1, 10)),
        ValueError,
        r"must be suggested as `trial\.suggest_float\('lr', low, high, log=True\)`, "
        r"but got IntDistribution",
    ),
    (
        "lr_as_categorical",
        suggesting(lambda t: t.suggest_categorical("lr", [0.1, 0.01])),
        ValueError,
        r"log=True\)`, but got CategoricalDistribution\(choices=\(0\.1, 0\.01\)\)",
    ),
    (
        "lr_linear_float",
        suggesting(lambda t: t.suggest_float("lr", 1e-5, 1.0)),
        ValueError,
        r"log=True\)`, but got FloatDistribution\(high=1\.0, log=False, low=1e-05",
    ),
    (
        "lr_stepped_float",
        suggesting(lambda t: t.suggest_float("lr", 0.1, 1.0, step=0.1)),
        ValueError,
        r"log=True\)`, but got FloatDistribution\(.*step=0\.1\)",
    ),
    (
        "lr_log_low_zero",
        suggesting(lambda t: t.suggest_float("lr", 0.0, 1.0, log=True)),
        ValueError,
        r"`low > 0` must hold for `log=True`, but got \(low=0\.0, high=1\.0\)",
    ),
    (
        "lr_log_low_negative",
        suggesting(lambda t: t.suggest_float("lr", -1.0, 1.0, log=True)),
        ValueError,
        r"`low > 0` must hold for `log=True`, but got \(low=-1\.0, high=1\.0\)",
    ),
    # --- range-test settings
    (
        "start_lr_eq_end_lr",
        lambda p: RangeTestConfig(start_lr=1.0, end_lr=1.0),
        ValueError,
        r"`start_lr < end_lr` must hold, but got \(start_lr=1\.0, end_lr=1\.0\)",
    ),
    (
        "start_lr_gt_end_lr",
        lambda p: ol.LRRangeSampler(start_lr=1.0, end_lr=1e-3),
        ValueError,
        r"`start_lr < end_lr` must hold, but got \(start_lr=1\.0, end_lr=0\.001\)",
    ),
    (
        "start_lr_zero",
        lambda p: RangeTestConfig(start_lr=0.0),
        ValueError,
        r"`start_lr > 0` must hold, but got start_lr=0\.0",
    ),
    (
        "end_lr_inf",
        lambda p: RangeTestConfig(end_lr=float("inf")),
        ValueError,
        r"`end_lr` must be a finite real number, but got inf",
    ),
    (
        "too_few_steps",
        lambda p: RangeTestConfig(num_iter=5),
        ValueError,
        r"`num_iter >= 10` must hold, but got num_iter=5",
    ),
    (
        "num_iter_float",
        lambda p: RangeTestConfig(num_iter=100.0),
        ValueError,
        r"`num_iter` must be an int, but got 100\.0",
    ),
    (
        "diverge_factor_1",
        lambda p: RangeTestConfig(diverge_factor=1.0),
        ValueError,
        r"`diverge_factor > 1` must hold, but got diverge_factor=1\.0",
    ),
    (
        "diverge_factor_negative",
        lambda p: ol.LRRangeSampler(diverge_factor=-4),
        ValueError,
        r"`diverge_factor > 1` must hold, but got diverge_factor=-4",
    ),
    (
        "unknown_mode",
        lambda p: RangeTestConfig(mode="cosine"),
        ValueError,
        r"`mode` must be one of \('exp', 'linear'\), but got 'cosine'",
    ),
    (
        "smooth_beta_1",
        lambda p: RangeTestConfig(smooth_beta=1.0),
        ValueError,
        r"`0 <= smooth_beta < 1` must hold, but got smooth_beta=1\.0",
    ),
    # --- LRRangeSampler arguments
    (
        "bad_base_sampler",
        lambda p: ol.LRRangeSampler("tpe"),
        TypeError,
        r"`base_sampler` must be an optuna BaseSampler or None, but got str",
    ),
    (
        "base_sampler_class_not_instance",
        lambda p: ol.LRRangeSampler(optuna.samplers.TPESampler),
        TypeError,
        r"`base_sampler` must be an optuna BaseSampler or None, but got ABCMeta",
    ),
    (
        "unknown_sampler_option",
        lambda p: ol.LRRangeSampler(num_iters=50),
        TypeError,
        r"range-test options must be among \[.*'num_iter'.*\], but got \['num_iters'\]",
    ),
    (
        "config_and_options",
        lambda p: ol.LRRangeSampler(config=RangeTestConfig(), num_iter=50),
        ValueError,
        r"pass either `config` or keyword options, but got both \(options=\['num_iter'\]\)",
    ),
    (
        "config_wrong_type",
        lambda p: ol.LRRangeSampler(config={"num_iter": 50}),
        TypeError,
        r"`config` must be a RangeTestConfig or None, but got dict",
    ),
    (
        "sampler_unknown_method",
        lambda p: ol.LRRangeSampler(method="magic"),
        ValueError,
        r"`method` must be one of \[.*'steepest_band'.*\] or None, but got 'magic'",
    ),
    (
        "sweep_every_0",
        lambda p: ol.LRRangeSampler(sweep_every=0),
        ValueError,
        r"`sweep_every >= 1` must hold, but got sweep_every=0",
    ),
    (
        "sweep_every_float",
        lambda p: ol.LRRangeSampler(sweep_every=2.5),
        ValueError,
        r"`sweep_every >= 1` must hold, but got sweep_every=2\.5",
    ),
    (
        "empty_param_name",
        lambda p: ol.LRRangeSampler(param_name=""),
        TypeError,
        r"`param_name` must be a non-empty str, but got ''",
    ),
    (
        "resweep_on_params_str",
        lambda p: ol.LRRangeSampler(resweep_on_params="x"),
        TypeError,
        r"`resweep_on_params` must be a bool or a sequence of parameter names, but got 'x'",
    ),
    # --- suggest and run_range_test
    (
        "suggest_unknown_method",
        lambda p: suggest(LRS, LOSSES, "magic"),
        ValueError,
        r"`method` must be one of \[.*\] or None, but got 'magic'",
    ),
    (
        "sweep_suggest_unknown_method",
        lambda p: good_sweep(RangeTestConfig(num_iter=20)).suggest("fastai"),
        ValueError,
        r"`method` must be one of \[.*\] or None, but got 'fastai'",
    ),
    (
        "lrs_not_increasing",
        lambda p: suggest(LRS[::-1], LOSSES),
        ValueError,
        r"`lrs` must be strictly increasing, but it is not",
    ),
    (
        "lrs_non_positive",
        lambda p: suggest([0.0, *LRS[1:]], LOSSES),
        ValueError,
        r"every learning rate must be positive and finite, but got",
    ),
    (
        "lrs_losses_unequal",
        lambda p: suggest(LRS, LOSSES[:-1]),
        ValueError,
        r"must be 1-D and of equal length, but got shapes \(30,\) and \(29,\)",
    ),
    (
        "step_returns_none",
        lambda p: run_range_test(lambda lr: None),
        TypeError,
        r"`step` must return the loss as a float \(anything `float\(\)` accepts\), "
        r"but got NoneType None",
    ),
    (
        "step_returns_text",
        lambda p: run_range_test(lambda lr: "low"),
        TypeError,
        r"`step` must return the loss as a float .*, but got str 'low'",
    ),
    (
        "run_config_and_options",
        lambda p: run_range_test(lambda lr: 1.0, RangeTestConfig(), num_iter=20),
        ValueError,
        r"pass either `config` or keyword options, but got both \(options=\['num_iter'\]\)",
    ),
    # --- the hand-off to attach
    (
        "attach_no_model",
        attaching(),
        TypeError,
        r"`model` \(with optimizer, loss_fn, loader\) or `sweep_fn` must be given",
    ),
    (
        "attach_model_none",
        attaching(model=None, optimizer="OPTIMIZER", loss_fn=mse, loader="BATCHES"),
        TypeError,
        r"`model` \(with optimizer, loss_fn, loader\) or `sweep_fn` must be given",
    ),
    (
        "attach_model_wrong_type",
        attaching(model=[1.0], optimizer="OPTIMIZER", loss_fn=mse, loader="BATCHES"),
        TypeError,
        r"`model` must be a torch\.nn\.Module, but got list",
    ),
    (
        "attach_optimizer_wrong_type",
        attaching(model="MODEL", optimizer=0.1, loss_fn=mse, loader="BATCHES"),
        TypeError,
        r"`optimizer` must be a torch\.optim\.Optimizer, but got float",
    ),
    (
        "attach_model_and_sweep_fn",
        attaching(model="MODEL", sweep_fn=good_sweep),
        TypeError,
        r"pass either `sweep_fn` or the PyTorch objects .*, but got both",
    ),
    (
        "attach_sweep_fn_not_callable",
        attaching(sweep_fn="not callable"),
        TypeError,
        r"`sweep_fn` must be callable, but got str",
    ),
    (
        "attach_no_loader",
        attaching(model="MODEL", optimizer="OPTIMIZER", loss_fn=mse),
        TypeError,
        r"`loader` must be an iterable of batches, but got None",
    ),
    (
        "attach_range_test_setting",
        attaching(
            model="MODEL", optimizer="OPTIMIZER", loss_fn=mse, loader="BATCHES", num_iter=50
        ),
        TypeError,
        r"range-test settings belong to LRRangeSampler\(\.\.\.\), not attach\(\), "
        r"but got \['num_iter'\]",
    ),
    (
        "attach_unknown_option",
        attaching(
            model="MODEL", optimizer="OPTIMIZER", loss_fn=mse, loader="BATCHES", accumulate=4
        ),
        TypeError,
        r"`adapter_options` must be among \[.*\], but got \['accumulate'\]",
    ),
    (
        "attach_no_param_groups",
        attaching(
            model="MODEL", optimizer="OPTIMIZER", loss_fn=mse, loader="BATCHES", empty_groups=True
        ),
        ValueError,
        r"the optimizer must have at least one param group, but got none",
    ),
    (
        "attach_loss_fn_and_step_fn",
        attaching(
            model="MODEL",
            optimizer="OPTIMIZER",
            loss_fn=mse,
            loader="BATCHES",
            step_fn=lambda b: 0.0,
        ),
        ValueError,
        r"at most one of `loss_fn` and `step_fn` must be given, but got \(loss_fn=",
    ),
    (
        "attach_accumulation_steps_0",
        attaching(
            model="MODEL",
            optimizer="OPTIMIZER",
            loss_fn=mse,
            loader="BATCHES",
            accumulation_steps=0,
        ),
        ValueError,
        r"`accumulation_steps >= 1` must hold, but got 0",
    ),
    (
        "attach_after_suggest",
        attach_after_suggest,
        RuntimeError,
        r"`optuna_lrrange\.attach` must be called before `trial\.suggest_float\('lr', \.\.\.\)`, "
        r"but trial 0 already holds lr=",
    ),
    (
        "attach_frozen_trial",
        attach_frozen_trial,
        TypeError,
        r"`trial` must be the running optuna\.trial\.Trial, but got FrozenTrial",
    ),
    (
        "attach_not_lrrange_sampler",
        attach_without_lrrange_sampler,
        UserWarning,
        r"the study's sampler is RandomSampler, not an LRRangeSampler, so no range test will run",
    ),
    (
        "no_attach",
        no_attach,
        REASON,
        r"^no_probe: call optuna_lrrange\.attach\(trial, \.\.\.\) before "
        r"trial\.suggest_float\('lr', \.\.\.\)$",
    ),
    (
        "rate_under_another_name",
        rate_under_another_name,
        LOGGED,
        r"attach was called but `lr` was never suggested, so no range test ran.*"
        r"LRRangeSampler\(param_name='lr'\)",
    ),
    # --- range_test on a torch model
    (
        "range_test_no_param_groups",
        torch_range_test(empty_groups=True),
        ValueError,
        r"the optimizer must have at least one param group, but got none",
    ),
    (
        "range_test_empty_loader",
        torch_range_test(loader=[]),
        ValueError,
        r"`loader` must yield at least one batch, but it yielded none",
    ),
    (
        "range_test_loss_not_scalar",
        torch_range_test(loss_fn=lambda out, y: (out - y) ** 2),
        ValueError,
        r"`loss_fn` must return a scalar \(0-d\) loss, but got shape \(16, 1\)",
    ),
    (
        "range_test_loss_not_tensor",
        torch_range_test(loss_fn=lambda out, y: 0.5),
        TypeError,
        r"`loss_fn` must return a torch\.Tensor, but got float",
    ),
    (
        "range_test_batch_not_pair",
        torch_range_test(loader=[torch.zeros(16, 4)]),
        TypeError,
        r"each batch must be an \(x, y\) pair or an \(x1, \.\.\., xn, y\) tuple .*, but got "
        r"Tensor",
    ),
    (
        "range_test_pair_batch_without_loss_fn",
        torch_range_test(loss_fn=None),
        TypeError,
        r"with no `loss_fn`, each batch must be a dict of the model's keyword arguments .*, "
        r"but got tuple",
    ),
    (
        "range_test_dict_batch_with_loss_fn",
        torch_range_test(loader=[{"x": torch.zeros(16, 4)}]),
        TypeError,
        r"each batch must be an \(x, y\) pair .*, but got dict",
    ),
    (
        "range_test_model_returns_no_loss",
        torch_range_test(loss_fn=None, loader=[{"input": torch.zeros(16, 4)}]),
        ValueError,
        r"`model\(\*\*batch\)` must return a scalar \(0-d\) loss, but got shape \(16, 1\)",
    ),
    (
        "range_test_accumulation_steps_0",
        torch_range_test(accumulation_steps=0),
        ValueError,
        r"`accumulation_steps >= 1` must hold, but got 0",
    ),
    (
        "range_test_first_group_lr_0",
        torch_range_test(zero_lr=True),
        ValueError,
        r"the first param group's learning rate must be nonzero .*, but got lrs=\[0\.0\]",
    ),
    (
        "range_test_step_fn_returns_text",
        torch_range_test(loss_fn=None, step_fn=lambda batch: "low"),
        TypeError,
        r"`step_fn` must return the loss as a float or a 0-d tensor, but got str",
    ),
    (
        "range_test_one_shot_iterator",
        torch_range_test(loader=iter([(torch.zeros(16, 4), torch.zeros(16, 1))] * 48)),
        ValueError,
        r"`loader` must be re-iterable \(a list or a DataLoader, not a one-shot iterator\), "
        r"but got list_iterator",
    ),
    # --- records in storage
    (
        "future_schema",
        get_sweeps_of_trial_1(future_record()),
        ValueError,
        r"reads sweep records of schema <= 2, but got schema 99: upgrade optuna-lrrange",
    ),
    (
        "corrupt_record_strict",
        get_sweeps_of_trial_1('{"schema": 1, "lrs": [0.1'),
        ValueError,
        r"cannot read user attribute 'lrrange:sweep:0': a sweep record must be a JSON string, "
        r"but got '\{\"schema\": 1, \"lrs\": \[0\.1'",
    ),
    (
        "malformed_record_strict",
        get_sweeps_of_trial_1('{"schema": 1}'),
        ValueError,
        r"cannot read user attribute 'lrrange:sweep:0': a sweep record is malformed: "
        r"`config` must be an object with the fields \['diverge_factor', 'end_lr', 'mode', "
        r"'num_iter', 'smooth_beta', 'start_lr'\], but got None",
    ),
    (
        "record_not_an_object",
        get_sweeps_of_trial_1("[1, 2]"),
        ValueError,
        r"a sweep record must be a JSON object, but got list",
    ),
    (
        "corrupt_record_non_strict",
        read_non_strict,
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:0': a sweep record must be a JSON string",
    ),
    (
        "corrupt_record_in_dataframe",
        dataframe_skips,
        RecordWarning,
        r"trial 1: skipped user attribute 'lrrange:sweep:0'",
    ),
    (
        "record_suggestion_not_an_object",
        get_sweeps_of_trial_1(good_record(suggestion=[1, 2])),
        ValueError,
        r"a sweep record is malformed: `suggestion` must be an object or null, but got \[1, 2\]",
    ),
    (
        "record_suggestion_not_an_object_read_by_every_reader",
        every_reader_skips(good_record(suggestion=[1, 2])),
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:0'",
    ),
    (
        "record_key_renamed",
        get_sweeps_of_trial_1(good_record(), key="lrrange:sweep:007"),
        ValueError,
        r"cannot read user attribute 'lrrange:sweep:007': not a key of a sweep record",
    ),
    (
        "record_key_renamed_read_by_every_reader",
        every_reader_skips(good_record(), key="lrrange:sweep:007"),
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:007'",
    ),
    (
        "record_suggestion_lr_a_string",
        get_sweeps_of_trial_1(with_suggestion(lr="0.1")),
        ValueError,
        r"`suggestion.lr` must be a positive finite number, but got '0\.1'",
    ),
    (
        "record_suggestion_lr_a_string_read_by_every_reader",
        every_reader_skips(with_suggestion(lr="0.1")),
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:0'",
    ),
    (
        "record_band_reversed",
        get_sweeps_of_trial_1(with_suggestion(band=[0.1, 0.01])),
        ValueError,
        r"`low <= high` must hold in `suggestion.band`, but got \(0\.1, 0\.01\)",
    ),
    (
        "record_config_a_list",
        get_sweeps_of_trial_1(good_record(config=[])),
        ValueError,
        r"`config` must be an object with the fields \[.*\], but got \[\]",
    ),
    (
        "record_config_a_list_read_by_every_reader",
        every_reader_skips(good_record(config=[])),
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:0'",
    ),
    (
        "record_losses_strings",
        get_sweeps_of_trial_1(schema_1(losses=["1.0"] * 20)),
        ValueError,
        r"`losses` must hold numbers only, but got '1\.0' at 0",
    ),
    (
        "record_losses_strings_read_by_every_reader",
        every_reader_skips(good_record(losses=["0.5"] * 20)),
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:0'",
    ),
    (
        "record_rates_decreasing",
        get_sweeps_of_trial_1(schema_1(lrs=[10 ** (-i / 5) for i in range(20)])),
        ValueError,
        r"`lrs` must be strictly increasing, but got 1\.0 then 0\.63\d* at 1",
    ),
    (
        "record_rates_decreasing_read_by_every_reader",
        every_reader_skips(schema_1(lrs=[10 ** (-i / 5) for i in range(20)])),
        RecordWarning,
        r"skipped user attribute 'lrrange:sweep:0'",
    ),
    (
        "record_more_steps_than_its_settings",
        get_sweeps_of_trial_1(good_record(n=21, losses=[0.5] * 21)),
        ValueError,
        r"`n <= num_iter` must hold, but got n=21, num_iter=20",
    ),
    (
        "record_trial_number_a_string",
        get_sweeps_of_trial_1(good_record(info={"trial_number": "1"})),
        ValueError,
        r"`info.trial_number` must be an int, but got '1'",
    ),
    (
        "record_chosen_lr_a_string",
        get_sweeps_of_trial_1(good_record(info={"chosen_lr": "fast"})),
        ValueError,
        r"`info.chosen_lr` must be a finite number, but got 'fast'",
    ),
    (
        "get_sweeps_not_a_trial",
        lambda p: ol.get_sweeps({"lrrange:sweep:0": "{}"}),
        TypeError,
        r"`trial` must be an optuna Trial or FrozenTrial, but got dict",
    ),
    # --- a user's sweep function
    (
        "sweep_fn_returns_dict",
        sweep_fn_returning({"lrs": [], "losses": []}),
        REASON,
        r"^sweep_failed: TypeError: the sweep function must return a Sweep, but got dict\.; "
        r"sampled in the full range$",
    ),
    (
        "sweep_fn_returns_none",
        sweep_fn_returning(None),
        REASON,
        r"^sweep_failed: TypeError: the sweep function must return a Sweep, but got NoneType\.; "
        r"sampled in the full range$",
    ),
    (
        "sweep_step_returns_none",
        step_returning_none,
        REASON,
        r"^sweep_failed: TypeError: `step` must return the loss as a float",
    ),
    (
        "sweep_fn_info_not_json",
        sweep_fn_with_info({"device": torch.device("cpu")}),
        REASON,
        r"^sweep_failed: TypeError: a sweep record holds only JSON-native values, but got "
        r"device\(type='cpu'\)",
    ),
    (
        "base_sampler_ignores_the_band",
        grid_base_sampler,
        REASON,
        r"^base_outside_band: GridSampler returned 1e-06 outside \[",
    ),
    (
        "stored_band_malformed",
        malformed_band_reused,
        LOGGED,
        r"^Trial 1: skipped trial 0's band, which is malformed \(`lrrange:band` must be None "
        r"or \[low, high\] with 0 < low < high, but got \[0\.01\]\)",
    ),
    (
        "sampler_inside_sampler",
        lambda p: ol.LRRangeSampler(ol.LRRangeSampler()),
        ValueError,
        r"`base_sampler` must not be or wrap an LRRangeSampler \(every trial would sweep "
        r"twice\), but got LRRangeSampler",
    ),
    # --- LRReestimator
    (
        "reestimator_no_trigger",
        reestimator(),
        ValueError,
        r"one of `every_epochs`, `every_steps`, `on_plateau` must be set, but got none",
    ),
    (
        "reestimator_every_epochs_0",
        reestimator(every_epochs=0),
        ValueError,
        r"`every_epochs >= 1` must hold, but got every_epochs=0",
    ),
    (
        "reestimate_after_tell",
        reestimate_after_tell,
        RuntimeError,
        r"the trial must be running to record a re-estimation on it, but trial 0 is COMPLETE",
    ),
    (
        "reestimator_start_lr",
        reestimator(every_epochs=1, start_lr=1e-4),
        ValueError,
        r"`start_lr` is set from the current rate and `span`, but got start_lr=0\.0001",
    ),
    (
        "reestimator_model_str",
        lambda p: LRReestimator("x", tiny()[1], mse, tiny()[2], every_epochs=1),
        TypeError,
        r"`model` must be a torch\.nn\.Module, but got str\.$",
    ),
    (
        "reestimator_optimizer_none",
        lambda p: LRReestimator(tiny()[0], None, mse, tiny()[2], every_epochs=1),
        TypeError,
        r"`optimizer` must be a torch\.optim\.Optimizer, but got NoneType\.$",
    ),
    (
        "reestimator_range_test_options_restore_false",
        reestimator(every_epochs=1, range_test_options={"restore": False}),
        ValueError,
        r"`range_test_options` must be among \[.*\], but got \['restore'\]: the rest is "
        r"LRReestimator's own \(it always restores the training state",
    ),
    (
        "reestimator_plateau_threshold_str",
        reestimator(on_plateau=2, plateau_threshold="a"),
        ValueError,
        r"`plateau_threshold >= 0` must hold, but got plateau_threshold='a'\.$",
    ),
    (
        "reestimator_max_change_str",
        reestimator(every_epochs=1, max_change="2"),
        ValueError,
        r"`max_change > 1` must hold, but got max_change='2'\.$",
    ),
    # --- PyTorch specifics
    (
        "namedtuple_inputs",
        namedtuple_inputs,
        ACCEPTED,
        r"^10 steps; the model got \['Pair'\]$",
    ),
    (
        "range_test_lbfgs_without_step_fn",
        lbfgs_range_test,
        ValueError,
        r"with `loss_fn`, the optimizer's `step\(\)` must take no closure, but LBFGS\.step "
        r"requires one; pass `step_fn=` in place of `loss_fn`: a step that calls "
        r"`optimizer\.step\(closure\)` and returns the loss, e\.g\. `def step_fn\(batch\)",
    ),
    (
        "attach_lbfgs_without_step_fn",
        attach_lbfgs,
        ValueError,
        r"LBFGS\.step requires one; pass `step_fn=` in place of `loss_fn`",
    ),
    (
        "rate_suggested_under_no_grad",
        suggest_under_no_grad,
        REASON,
        r"^sweep_failed: RuntimeError: gradients must be enabled for the range test's training "
        r"steps, but it was called under `torch\.no_grad\(\)`",
    ),
    (
        "scheduler_step_first_after_a_sweep",
        scheduler_step_first_after_a_sweep,
        UserWarning,
        r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`",
    ),
    (
        "plot_sweep_trial_as_str",
        plot_sweep_trial_as_str,
        TypeError,
        r"`trial` must be an int \(a trial number\) or None, but got str '0'\.$",
    ),
    # --- the command line (each a one-line message and exit status 2; no file changes)
    (
        "cli_sqlite_typo",
        reading("sqlite+pysqlite:///{tmp}/typo.db"),
        EXIT_2,
        r"no SQLite file at '.*typo\.db' \(from --storage 'sqlite\+pysqlite:///",
    ),
    (
        "cli_sqlite_uri_typo",
        reading("sqlite:///file:{tmp}/typo.db?uri=true"),
        EXIT_2,
        r"no SQLite file at '.*typo\.db'",
    ),
    (
        "cli_empty_sqlite_file",
        reading("sqlite:///{tmp}/empty.db"),
        EXIT_2,
        r"--storage must name an existing Optuna storage, but '.*empty\.db' is an empty file",
    ),
    (
        "cli_empty_journal_file",
        reading("journal:{tmp}/empty.log"),
        EXIT_2,
        r"--storage must name an existing Optuna storage, but '.*empty\.log' is an empty file",
    ),
    (
        "cli_database_of_another_program",
        reading("sqlite:///{tmp}/other.db"),
        EXIT_2,
        r"--storage must name an existing Optuna storage, but 'sqlite:///.*other\.db' holds no "
        r"Optuna tables \(missing: studies, version_info, alembic_version\)\.$",
    ),
    (
        "cli_output_under_a_file",
        exporting("-o", "{tmp}/file/sweeps.csv"),
        EXIT_2,
        r"-o must be a path whose folder can be created, but got '.*/file/sweeps\.csv' "
        r"\('.*/file' is not a folder\)\.$",
    ),
    (
        "cli_output_in_proc",
        exporting("-o", "/proc/sweeps.csv"),
        EXIT_2,
        r"cannot write -o '/proc/sweeps\.csv': ",
    ),
    (
        "cli_plot_output_in_proc",
        plotting("-o", "/proc/bands.png"),
        EXIT_2,
        r"cannot write -o '/proc/bands\.png': ",
    ),
    (
        "cli_plot_unknown_format",
        plotting("-o", "{tmp}/bands.xyz"),
        EXIT_2,
        r"-o must end in an image format matplotlib writes \(.*png.*\), but got '.*bands\.xyz'",
    ),
    (
        "cli_sma_0",
        exporting("--sma", "0", "-o", "-"),
        EXIT_2,
        r"`--sma >= 1` must hold, but got 0\.$",
    ),
    (
        "cli_dpi_0",
        plotting("--dpi", "0", "-o", "{tmp}/bands.png"),
        EXIT_2,
        r"`--dpi >= 1` must hold, but got 0\.$",
    ),
]


def test_the_catalogue_is_long_and_its_ids_unique() -> None:
    ids = [row[0] for row in CATALOGUE]
    assert len(ids) == len(set(ids)) >= 20


@pytest.mark.parametrize(
    ("call", "expected", "message"),
    [pytest.param(*row[1:], id=row[0]) for row in CATALOGUE],
)
def test_bad_input_is_answered_clearly(
    call: Callable[[Path], Any], expected: Any, message: str, tmp_path: Path
) -> None:
    if expected == REASON:
        trial = call(tmp_path)
        assert trial.state == TrialState.COMPLETE
        assert re.search(message, trial.user_attrs["lrrange:reason"]), trial.user_attrs
    elif expected == LOGGED:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = records.append  # type: ignore[method-assign]
        logger = logging.getLogger("optuna.lrrange")
        logger.addHandler(handler)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            trial = call(tmp_path)
        finally:
            optuna.logging.set_verbosity(verbosity)
            logger.removeHandler(handler)
        assert trial.state == TrialState.COMPLETE
        assert any(re.search(message, r.getMessage()) for r in records), records
    elif expected == EXIT_2:
        code, err = call(tmp_path)
        assert code == 2 and err.startswith("optuna-lrrange: error: "), err
        assert err.count("\n") == 1, err  # one line, no traceback
        assert re.search(message, err.strip()), err
    elif expected == ACCEPTED:
        assert re.search(message, call(tmp_path))
    elif issubclass(expected, Warning):
        with pytest.warns(expected, match=message):
            call(tmp_path)
    else:
        with pytest.raises(expected, match=message):
            call(tmp_path)
