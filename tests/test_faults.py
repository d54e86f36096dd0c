"""Faults: killed workers, and sweeps that go wrong inside one process.

Covered here, on SQLite files (real ``RDBStorage``) and real torch models, no mocks:

* A worker killed with SIGKILL in the middle of a sweep leaves no sweep record (a sweep is
  written once, after it ends, as one JSON string); with RDB heartbeats
  (``heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback``) the dead trial turns
  FAIL and is retried when another worker next calls ``optimize()``, and the retry sweeps
  its own model.
* A worker killed after its rate was stored (while "training"): the retry inherits the
  dead attempt's user attributes and its rate; ``attach`` accepts that fixed rate;
  ``get_sweeps(retry)`` returns only the retry's own sweep, ``inherited=True`` adds the
  dead attempt's, and ``sweeps_dataframe`` / ``sweeps_summary`` count every sweep once.
* A worker killed after its sweep was recorded but before Optuna stored the rate: the retry
  inherits the record but no rate, so it sweeps again; ``get_sweeps(retry)`` returns its
  own sweep only.
* A trial that never got a heartbeat (its worker killed in its first milliseconds) is never
  failed by Optuna's stale-trial check; ``study.tell(number, state=FAIL)`` ends it.
* Workers killed at random moments while recording sweeps in a tight loop never leave a
  half or undecodable record, nor a band summary without its sweep; the SQLite file passes
  ``PRAGMA integrity_check``.
* Inside one process, through ``LRRangeSampler`` + ``attach``: a loss that is NaN at the
  first step, a loss that explodes, a one-shot loader shorter than the sweep, an exception
  from the user's ``step_fn``, and ``torch.OutOfMemoryError`` from ``step_fn``. Each leaves
  the model and optimizer bitwise as they were (parameters, gradients, buffers, optimizer
  state, param-group rates, training mode), the trial COMPLETE with its ``lrrange:reason``
  recorded, and the study consistent (every trial COMPLETE, every record decodable).
"""

from __future__ import annotations

from collections.abc import Iterator
import copy
import os
from pathlib import Path
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
import pytest
import torch

import optuna_lrrange as ol
from optuna_lrrange import run_range_test
from optuna_lrrange._records import BAND_KEY, SWEEP_PREFIX, decode, read_records


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines off for this module's tests only, restored afterwards."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(verbosity)


ROOT = Path(__file__).resolve().parent.parent
STUDY = "faults"
GRACE = 2  # seconds without a heartbeat before a RUNNING trial is stale

# Heartbeats and the retry callback are experimental in Optuna 5.0 (not deprecated).
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

WORKER = (
    textwrap.dedent(
        """
    import sys, time
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    import optuna_lrrange as ol
    from optuna_lrrange import run_range_test

    url, mode, marker = sys.argv[1:4]
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    class Storage(RDBStorage):
        def set_trial_user_attr(self, trial_id, key, value):
            super().set_trial_user_attr(trial_id, key, value)
            # "between-writes": stop after the sampler's last write (the sweep record, then
            # the band summary ending with the reason), before Optuna stores the rate.
            if mode == "between-writes" and key == "lrrange:reason":
                hang()

    storage = Storage(
        url, heartbeat_interval=1, grace_period=GRACE,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )
    study = optuna.load_study(
        study_name="STUDY", storage=storage,
        sampler=ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=0)),
    )

    def hang():
        # The heartbeat thread records its first beat on its own schedule; a worker killed
        # before that leaves a trial without a heartbeat, which no stale check ever fails.
        import sqlite3
        db = sqlite3.connect(url[len("sqlite:///"):])
        while not db.execute("SELECT COUNT(*) FROM trial_heartbeats").fetchone()[0]:
            time.sleep(0.02)
        db.close()
        open(marker, "w").close()
        time.sleep(600)

    def sweep_fn(config):
        w, calls = [1.0], [0]

        def step(lr):
            calls[0] += 1
            if mode == "in-sweep" and calls[0] == 20:
                hang()
            w[0] *= 1 - lr
            return 0.5 * w[0] ** 2 + 0.01

        return run_range_test(step, config)

    def objective(trial):
        ol.attach(trial, sweep_fn=sweep_fn)
        lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
        if mode == "after-sweep":
            hang()  # "training"
        return lr

    def first_done(study, trial):
        open(marker, "a").close()

    study.optimize(objective, n_trials=1 if mode != "loop" else 100000, callbacks=[first_done])
    """
    )
    .replace("GRACE", str(GRACE))
    .replace("STUDY", STUDY)
)


def heartbeat_storage(url: str) -> RDBStorage:
    return RDBStorage(
        url,
        heartbeat_interval=1,
        grace_period=GRACE,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )


def start_worker(tmp_path: Path, url: str, mode: str, marker: Path) -> subprocess.Popen[bytes]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), url, mode, str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_when(proc: subprocess.Popen[bytes], marker: Path, delay: float = 0.0) -> None:
    """SIGKILLs ``proc`` ``delay`` seconds after ``marker`` appears."""
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "worker never reached the marker"
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    proc.stderr.close()


def assert_records_whole(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Every ``lrrange:sweep:*`` is a JSON string that decodes; a band has its sweep."""
    n = 0
    for t in trials:
        keys = [k for k in t.user_attrs if k.startswith(SWEEP_PREFIX)]
        for key in keys:
            assert isinstance(t.user_attrs[key], str), (t.number, key)
            sweep, _ = decode(t.user_attrs[key])  # 100-step records: one value each
            assert len(sweep.lrs) == len(sweep.losses) > 0
            n += 1
        read_records(t.user_attrs, strict=True)
        if BAND_KEY in t.user_attrs:
            assert keys, f"trial {t.number} has a band summary without its sweep"
    return n


def sweep_objective(trial: optuna.Trial) -> float:
    ol.attach(trial, sweep_fn=lambda c: run_range_test(lambda lr: 1.0 / (1.0 + lr), c))
    return trial.suggest_float("lr", 1e-6, 1.0, log=True)


# ----------------------------------------------------------------- killed workers


def test_worker_killed_mid_sweep_leaves_no_record_and_is_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name=STUDY, storage=url)
    marker = tmp_path / "marker"
    kill_when(start_worker(tmp_path, url, "in-sweep", marker), marker)

    (dead,) = optuna.load_study(study_name=STUDY, storage=url).trials
    assert dead.state == TrialState.RUNNING  # no heartbeat check has run yet
    # No sweep, band or placement record; only the divergence cap its offset was drawn under.
    assert [k for k in dead.user_attrs if k.startswith("lrrange:")] == ["lrrange:cap"]
    assert "lr" not in dead.params

    time.sleep(GRACE + 1)
    study = optuna.load_study(
        study_name=STUDY,
        storage=heartbeat_storage(url),
        sampler=ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=1)),
    )
    study.optimize(sweep_objective, n_trials=1)

    dead, retry = study.trials
    assert dead.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    # The retry had no rate yet: it swept its own model and sampled inside the band.
    (own,) = ol.get_sweeps(retry)
    assert own.info["trial_number"] == retry.number
    assert retry.user_attrs["lrrange:source"] == retry.number
    assert ol.get_sweeps(retry, inherited=True) == [own]
    assert assert_records_whole(study.trials) == 1


def test_worker_killed_after_its_sweep_retry_inherits_and_counts_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name=STUDY, storage=url)
    marker = tmp_path / "marker"
    kill_when(start_worker(tmp_path, url, "after-sweep", marker), marker)

    (dead,) = optuna.load_study(study_name=STUDY, storage=url).trials
    assert dead.state == TrialState.RUNNING
    (dead_sweep,) = ol.get_sweeps(dead)
    assert dead_sweep.info["trial_number"] == 0

    time.sleep(GRACE + 1)
    study = optuna.load_study(
        study_name=STUDY,
        storage=heartbeat_storage(url),
        sampler=ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=1), sweep_fixed=True),
    )
    study.optimize(sweep_objective, n_trials=1)

    dead, retry = study.trials
    assert (dead.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    # The retry holds the dead attempt's rate and user attributes ...
    assert retry.params["lr"] == dead.params["lr"]
    assert retry.user_attrs["lrrange:sweep:0"] == dead.user_attrs["lrrange:sweep:0"]
    # ... and, with sweep_fixed=True, records a sweep of its own next to the inherited one.
    assert retry.user_attrs["lrrange:reason"] == "fixed"
    (own,) = ol.get_sweeps(retry)
    assert own.info["trial_number"] == retry.number
    both = ol.get_sweeps(retry, inherited=True)
    assert [s.info["trial_number"] for s in both] == [0, 1]
    assert both[0] == dead_sweep

    frame = ol.sweeps_dataframe(study)
    per_sweep = frame.groupby(["number", "sweep"]).size()
    assert sorted(per_sweep.index) == [(0, 0), (1, 0)]  # two sweeps, each once
    summary = ol.sweeps_summary(study)
    assert sorted(summary["number"]) == [0, 1]
    assert len(ol.sweeps_summary(study, inherited=True)) == 3  # opt-in: the copy too
    assert assert_records_whole(study.trials) == 3  # stored: dead's, its copy, retry's own


def test_worker_killed_between_its_sweep_record_and_its_rate_is_swept_again(
    tmp_path: Path,
) -> None:
    # The sampler writes the sweep record, then returns the rate, which Optuna then stores:
    # a kill between the two leaves a record but no rate, so the retry is not fixed.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name=STUDY, storage=url)
    marker = tmp_path / "marker"
    kill_when(start_worker(tmp_path, url, "between-writes", marker), marker)

    (dead,) = optuna.load_study(study_name=STUDY, storage=url).trials
    assert dead.state == TrialState.RUNNING and "lr" not in dead.params
    (dead_sweep,) = ol.get_sweeps(dead)

    time.sleep(GRACE + 1)
    study = optuna.load_study(
        study_name=STUDY,
        storage=heartbeat_storage(url),
        sampler=ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=1)),
    )
    study.optimize(sweep_objective, n_trials=1)

    dead, retry = study.trials
    assert (dead.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    # The retry inherited the record but no rate: it swept again and sampled its own rate.
    assert retry.user_attrs["lrrange:reason"] != "fixed"
    (own,) = ol.get_sweeps(retry)  # still one sweep: its own
    assert own.info["trial_number"] == retry.number
    assert own.info["chosen_lr"] == retry.params["lr"]
    assert retry.user_attrs["lrrange:source"] == retry.number
    assert ol.get_sweeps(retry, inherited=True) == [dead_sweep, own]
    assert assert_records_whole(study.trials) == 3  # dead's, its copy, the retry's own


def test_a_trial_without_a_heartbeat_is_never_failed_by_optuna(tmp_path: Path) -> None:
    # Optuna's stale-trial check skips RUNNING trials that have no heartbeat row yet: a
    # worker killed before its heartbeat thread's first beat leaves its trial RUNNING
    # whatever the grace period. ``ask`` without a heartbeat leaves the same state. If
    # this starts to fail, Optuna changed: update the README's recommendations.
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name=STUDY, storage=url).ask()
    time.sleep(GRACE + 1)
    study = optuna.load_study(
        study_name=STUDY,
        storage=heartbeat_storage(url),
        sampler=ol.LRRangeSampler(optuna.samplers.RandomSampler(seed=1)),
    )
    study.optimize(sweep_objective, n_trials=1)  # runs Optuna's stale-trial check first
    orphan, done = study.trials
    assert (orphan.state, done.state) == (TrialState.RUNNING, TrialState.COMPLETE)
    # What the README says to do once no worker can still be running it.
    study.tell(orphan.number, state=TrialState.FAIL)
    assert study.trials[0].state == TrialState.FAIL


def test_random_kills_while_recording_never_leave_a_half_record(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name=STUDY, storage=url)
    rng = random.Random(0)
    for i in range(3):
        marker = tmp_path / f"marker{i}"
        kill_when(start_worker(tmp_path, url, "loop", marker), marker, rng.uniform(0.05, 0.6))

    trials = optuna.load_study(study_name=STUDY, storage=url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 3
    assert sum(t.state == TrialState.RUNNING for t in trials) <= 3  # one per kill at most
    # Every trial sweeps until its configuration's sweeps agree; a settled one does not.
    settled = [t for t in complete if str(t.user_attrs["lrrange:reason"]).startswith("settled:")]
    assert assert_records_whole(trials) >= len(complete) - len(settled)
    for t in complete:
        # A worker that lives past the grace period retries the trial the last kill left
        # RUNNING. The retry inherits its user attributes (a sweep, if it was recorded) and
        # its rate (if it was sampled); it sweeps its own model only when it has no rate.
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
        own = ol.get_sweeps(t)
        every = ol.get_sweeps(t, inherited=True)
        n_inherited = len(every) - len(own)
        assert every[n_inherited:] == own
        assert all(s.info["trial_number"] == retried for s in every[:n_inherited])
        if t in settled and not every:
            continue  # placed from the settled sweeps of earlier trials, recorded by number
        if own:
            (sweep,) = own
        else:
            assert retried is not None, f"trial {t.number} is no retry and has no sweep"
            (sweep,) = every
        assert t.user_attrs[BAND_KEY] is None or len(t.user_attrs[BAND_KEY]) == 2
        assert sweep.info["chosen_lr"] == t.params["lr"]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ----------------------------------------------------------- faults inside one sweep

N_ITER = 30


def make_model() -> tuple[torch.nn.Module, torch.optim.Optimizer, list[Any]]:
    """A small BatchNorm net with Adam (two param groups), trained a few steps: state set."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = x @ torch.randn(4, 1, generator=gen) + 0.1 * torch.randn(64, 1, generator=gen)
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.Adam(
        [
            {"params": model[0].parameters(), "lr": 1e-3},
            {"params": [*model[1].parameters(), *model[3].parameters()], "lr": 2e-3},
        ]
    )
    for xb, yb in batches[:3]:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        optimizer.step()
    model.eval()  # the sweep switches to train mode; the restore must switch back
    return model, optimizer, batches


def state_of(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "lrs": [g["lr"] for g in optimizer.param_groups],
        "training": [m.training for m in model.modules()],
    }


def assert_bitwise_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), f"{where} changed"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            assert_bitwise_equal(u, v, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(out, y)


def nan_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return mse(out, y) * float("nan")  # NaN from the first step: NaN grads, NaN weights


def step_fn_failing_with(error: BaseException) -> Any:
    def factory(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Any:
        calls = [0]

        def step_fn(batch: Any) -> torch.Tensor:
            calls[0] += 1
            if calls[0] > 5:  # a few real steps first: the weights have moved
                raise error
            optimizer.zero_grad()
            loss = mse(model(batch[0]), batch[1])
            loss.backward()
            optimizer.step()
            return loss

        return step_fn

    return factory


FAULTS = {
    # name: (attach keywords given (model, optimizer, batches), sampler options, reason regex)
    "nan_at_first_step": (
        lambda m, o, b: {"loss_fn": nan_loss, "loader": b},
        {},
        r"^no_anchor: no_band: diverged_at_once; sampled in the full range$",
    ),
    "loss_explodes": (  # rates from 30 upwards: Adam throws the weights far at once
        lambda m, o, b: {"loss_fn": mse, "loader": b},
        {"start_lr": 30.0, "end_lr": 1e5},
        r"^no_anchor: no_band: diverged_at_once; sampled in the full range$",
    ),
    "loader_runs_out": (
        lambda m, o, b: {"loss_fn": mse, "loader": iter(b[:3])},
        {},
        r"^sweep_failed: ValueError: `loader` must be re-iterable",
    ),
    "step_fn_raises": (
        lambda m, o, b: {
            "step_fn": step_fn_failing_with(RuntimeError("user step failed"))(m, o),
            "loader": b,
        },
        {},
        r"^sweep_failed: RuntimeError: user step failed; sampled in the full range$",
    ),
    "out_of_memory": (
        lambda m, o, b: {
            "step_fn": step_fn_failing_with(
                torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            )(m, o),
            "loader": b,
        },
        {},
        r"^sweep_failed: OutOfMemoryError: CUDA out of memory",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failing_sweep_restores_the_model_and_completes_the_trial(
    fault: str, tmp_path: Path
) -> None:
    arguments, options, reason = FAULTS[fault]
    states: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def objective(trial: optuna.Trial) -> float:
        model, optimizer, batches = make_model()
        before = state_of(model, optimizer)
        if trial.number == 0:
            ol.attach(trial, model, optimizer, **arguments(model, optimizer, batches))
        else:  # a healthy trial after the fault
            ol.attach(trial, model, optimizer, mse, batches)
        lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
        states[trial.number] = (before, state_of(model, optimizer))
        return lr

    url = f"sqlite:///{tmp_path / 'study.db'}"
    sampler = ol.LRRangeSampler(
        optuna.samplers.RandomSampler(seed=0), **{"num_iter": N_ITER, "start_lr": 1e-6, **options}
    )
    study = optuna.create_study(storage=url, sampler=sampler)
    study.optimize(objective, n_trials=2)

    for before, after in states.values():
        assert_bitwise_equal(before, after)
    trials = optuna.load_study(study_name=study.study_name, storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    faulty, healthy = trials
    assert faulty.user_attrs["lrrange:reason"] is not None
    assert re.search(reason, faulty.user_attrs["lrrange:reason"])
    assert faulty.user_attrs["lrrange:band_used"] == [1e-6, 1.0]  # the full range
    assert 1e-6 <= faulty.params["lr"] <= 1.0
    assert len(ol.get_sweeps(healthy)) == 1
    assert assert_records_whole(trials) >= 1
