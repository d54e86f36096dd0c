"""Sweep records written by LRRangeSampler: round trips on every storage, size, strict JSON,
the parts of a long sweep, and records written by the previous schema."""

from __future__ import annotations

from collections.abc import Callable
import json
import math
import os
import random
import struct
from typing import Any
import warnings

from _servers import open_storage, storage_spec
import optuna
from optuna.samplers import TPESampler
import pytest

import optuna_lrrange as ol
from optuna_lrrange import RangeTestConfig, Suggestion, Sweep, run_range_test
from optuna_lrrange._records import (
    MAX_STORED_CHARS,
    RecordWarning,
    decode,
    encode,
    read_records,
    write_sweep,
)

#: MySQL's and MariaDB's TEXT column, which holds Optuna's user attribute values.
MYSQL_TEXT_BYTES = 65_535

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy_sweep(a: float) -> Callable[[RangeTestConfig], Sweep]:
    """A sweep of gradient descent on ``a * w**2 / 2`` with a little noise: 100 steps."""

    def sweep(config: RangeTestConfig) -> Sweep:
        w = [1.0]

        def step(lr: float) -> float:
            w[0] *= 1 - lr * a
            return 0.5 * a * w[0] ** 2 + 0.01 * (1 + math.sin(1e3 * lr))

        return run_range_test(step, config)

    return sweep


def _plain_json(value: object) -> bool:
    """Whether ``value`` is made of JSON-native Python types only."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


@pytest.mark.parametrize("placement", ["offset", "band"])
def test_records_round_trip_on_every_storage(
    storage_url: str | None,
    storage_factory: Callable[[], optuna.storages.BaseStorage],
    placement: str,
) -> None:
    live: dict[int, list[Sweep]] = {}
    sampler = ol.LRRangeSampler(
        TPESampler(seed=0), config=RangeTestConfig(end_lr=100.0), placement=placement
    )
    study = optuna.create_study(study_name="records", storage=storage_factory(), sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=toy_sweep(10.0**trial.number))
        lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
        live[trial.number] = ol.get_sweeps(trial)  # a live Trial reads fresh from storage
        return lr

    study.optimize(objective, n_trials=3)
    reloaded = optuna.load_study(study_name="records", storage=storage_factory())
    assert len(reloaded.trials) == 3
    for frozen in reloaded.trials:
        (sweep,) = ol.get_sweeps(frozen)
        assert live[frozen.number] == [sweep]
        assert dict(live[frozen.number][0].info) == dict(sweep.info)
        assert len(sweep) == 100 or sweep.stop_reason != "completed"
        info = sweep.info
        assert info["kind"] == "trial"
        assert (info["trial_number"], info["trial_id"]) == (frozen.number, frozen._trial_id)
        assert info["param_name"] == "lr" and (info["low"], info["high"]) == (1e-6, 1.0)
        assert info["chosen_lr"] == frozen.params["lr"]
        assert info["band_used"] == frozen.user_attrs["lrrange:band_used"]
        assert info["reason"] is None and info["seconds"] >= 0
        lo, hi = frozen.user_attrs["lrrange:band_used"]
        assert lo <= frozen.params["lr"] <= hi
        lrrange = {k: v for k, v in frozen.user_attrs.items() if k.startswith("lrrange:")}
        keys = {
            "lrrange:sweep:0",
            "lrrange:schema",
            "lrrange:band",
            "lrrange:suggestion",
            "lrrange:band_used",
            "lrrange:source",
            "lrrange:reason",
        }
        if placement == "offset":
            keys |= {"lrrange:placement", "lrrange:anchor", "lrrange:offset", "lrrange:cap"}
            assert lrrange["lrrange:placement"] == "offset"
            assert info["anchor"] == lrrange["lrrange:anchor"] is not None
            assert info["offset"] == lrrange["lrrange:offset"] == frozen.params["lr:offset"]
        assert set(lrrange) == keys
        assert _plain_json(lrrange)
        assert lrrange["lrrange:source"] == frozen.number


def test_a_100_step_record_fits_in_8_kb() -> None:
    study = optuna.create_study(sampler=ol.LRRangeSampler(TPESampler(seed=0), end_lr=1e6))

    def objective(trial: optuna.Trial) -> float:
        # Never diverges inside the schedule: all 100 steps are taken and recorded.
        ol.attach(trial, sweep_fn=lambda c: run_range_test(lambda lr: 1.0 / (1.0 + lr), c))
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study.optimize(objective, n_trials=1)
    text = study.trials[0].user_attrs["lrrange:sweep:0"]
    sweep, suggestion = decode(text)
    assert len(sweep) == 100 and sweep.stop_reason == "completed"
    assert len(text) <= 8 * 1024
    assert json.loads(text)["info"]["chosen_lr"] == study.trials[0].params["lr"]
    assert encode(sweep, suggestion) == [text]  # decode and encode are inverse


def test_reused_and_fallback_trials_record_why(storage: optuna.storages.BaseStorage) -> None:
    study = optuna.create_study(
        storage=storage, sampler=ol.LRRangeSampler(TPESampler(seed=0), sweep_every=2)
    )

    def objective(trial: optuna.Trial) -> float:
        if trial.number != 2:  # trial 2 forgets to attach; trial 3 reuses nothing of it
            ol.attach(trial, sweep_fn=toy_sweep(100.0))
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study.optimize(objective, n_trials=4)
    attrs = [t.user_attrs for t in study.trials]
    assert [a["lrrange:source"] for a in attrs] == [0, 0, None, 3]
    assert attrs[1]["lrrange:band_used"] == attrs[0]["lrrange:band_used"]
    assert "lrrange:sweep:0" not in attrs[1] and "lrrange:band" not in attrs[1]
    assert attrs[2]["lrrange:reason"].startswith("no_probe")
    assert attrs[2]["lrrange:band_used"] == [1e-6, 1.0]
    assert [len(ol.get_sweeps(t)) for t in study.trials] == [1, 0, 0, 1]


# ------------------------------------------------------------------ size, parts, strict JSON


def strict_json(text: str) -> Any:
    """``json.loads`` as a strict parser reads JSON: bare NaN and Infinity are errors."""

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def noisy_sweep(num_iter: int, seed: int = 0) -> Sweep:
    """A sweep that takes all ``num_iter`` steps, with noisy losses (full-length floats)."""
    rng = random.Random(seed)
    config = RangeTestConfig(num_iter=num_iter, end_lr=1e6)
    return run_range_test(lambda lr: 1.0 / (1.0 + lr) + 1e-3 * rng.random(), config)


def bits(values: tuple[float, ...]) -> list[bytes]:
    """Each float's 8 bytes: equality of these is bitwise equality, NaN included."""
    return [struct.pack("<d", v) for v in values]


def stored_length(text: str) -> int:
    """The length of ``text`` as Optuna's SQL storage writes it (``json.dumps``, ASCII)."""
    return len(json.dumps(text).encode())


@pytest.mark.parametrize("num_iter", [100, 1_600, 5_000, 50_000])
def test_every_value_of_a_record_fits_mysql_text_whatever_the_settings(num_iter: int) -> None:
    sweep = noisy_sweep(num_iter)
    suggestion = sweep.suggest()
    texts = encode(sweep, suggestion)
    assert len(sweep) == num_iter
    assert max(map(stored_length, texts)) <= MAX_STORED_CHARS < MYSQL_TEXT_BYTES
    # Nothing is dropped: every step reads back bitwise, whatever the number of parts.
    assert decode(*texts) == (sweep, suggestion)
    assert bits(decode(*texts)[0].losses) == bits(sweep.losses)
    head = strict_json(texts[0])
    assert (head["schema"], head["n"], head["parts"]) == (2, num_iter, len(texts))
    assert head["lrs"] == "schedule"  # the rates are recomputed from the settings
    losses = head["losses"] + [x for t in texts[1:] for x in strict_json(t)["losses"]]
    assert losses == list(sweep.losses)
    # A 100-step sweep stays one value; a long one is split into as few as fit.
    assert len(texts) == 1 if num_iter <= 1_600 else len(texts) > 1
    assert len(texts) <= sum(map(stored_length, texts)) // (MAX_STORED_CHARS - 200) + 1


def test_the_worst_case_record_fits_and_reads_back_bitwise() -> None:
    # Rates that are not a schedule of the settings are listed; every number takes the
    # longest form JSON gives a float, and the last loss is NaN (a string marker).
    n = 4_000
    lrs = [1.2345678901234567e-300 * (1 + i * 1e-4) for i in range(n)]
    losses = [-1.2345678901234567e-308 - i * 1e-320 for i in range(n - 1)] + [math.nan]
    sweep = Sweep(lrs, losses, "non_finite_loss", RangeTestConfig(num_iter=10), {"x": "y" * 9})
    texts = encode(sweep, None)
    assert max(map(stored_length, texts)) <= MAX_STORED_CHARS
    assert len(texts) >= 4
    back, suggestion = decode(*texts)
    assert suggestion is None and back.info == {"x": "y" * 9}
    assert bits(back.lrs) == bits(sweep.lrs) and bits(back.losses) == bits(sweep.losses)
    assert strict_json(texts[-1])["losses"][-1] == "NaN"


def test_settings_and_info_too_large_for_one_value_are_refused() -> None:
    sweep = replace_info(noisy_sweep(10), {"notes": "x" * MAX_STORED_CHARS})
    with pytest.raises(ValueError, match=r"must fit in 60000 characters, but they take \d+"):
        encode(sweep, None)


def replace_info(sweep: Sweep, info: dict[str, Any]) -> Sweep:
    return Sweep(sweep.lrs, sweep.losses, sweep.stop_reason, sweep.config, info)


@pytest.mark.parametrize(("last", "marker"), [(math.nan, "NaN"), (math.inf, "Infinity")])
def test_a_non_finite_loss_is_stored_as_strict_json_and_read_back(
    last: float, marker: str, storage: optuna.storages.BaseStorage
) -> None:
    study = optuna.create_study(
        storage=storage, sampler=ol.LRRangeSampler(TPESampler(seed=0), num_iter=20)
    )

    def sweep_fn(config: RangeTestConfig) -> Sweep:
        losses = iter([1.0, 0.8, 0.5, 0.3, last])
        return run_range_test(lambda lr: next(losses), config)

    def objective(trial: optuna.Trial) -> float:
        ol.attach(trial, sweep_fn=sweep_fn)
        return trial.suggest_float("lr", 1e-6, 1.0, log=True)

    study.optimize(objective, n_trials=1)
    attrs = study.trials[0].user_attrs
    assert strict_json(attrs["lrrange:sweep:0"])["losses"] == [1.0, 0.8, 0.5, 0.3, marker]
    (sweep,) = ol.get_sweeps(study.trials[0])
    assert sweep.stop_reason == "non_finite_loss"
    assert bits(sweep.losses) == bits((1.0, 0.8, 0.5, 0.3, last))
    # What the storage writes for every lrrange: value is strict JSON too.
    for value in attrs.values():
        json.dumps(value, allow_nan=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
def test_a_long_sweep_round_trips_through_every_sql_storage(backend: str, tmp_path) -> None:
    """20,000 steps through the sampler, and a worst-case record written beside it: every
    value as stored is at most MAX_STORED_CHARS (MariaDB refuses over 65,535 bytes)."""
    import sqlalchemy

    with storage_spec(backend, tmp_path) as spec:
        name = f"long-{backend}-{os.getpid()}-{tmp_path.name}"  # unique on a shared server
        sampler = ol.LRRangeSampler(TPESampler(seed=0), num_iter=20_000, end_lr=1e6)
        storage = open_storage(spec)
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler)
        live: list[Sweep] = []
        n = 6_000
        worst = Sweep(
            [1.2345678901234567e-300 * (1 + i * 1e-4) for i in range(n)],
            [-1.2345678901234567e-308] * (n - 1) + [math.nan],
            "non_finite_loss",
            RangeTestConfig(num_iter=10),
            {"kind": "reestimate", "trial_number": 0},
        )

        def objective(trial: optuna.Trial) -> float:
            ol.attach(trial, sweep_fn=lambda c: noisy_sweep(c.num_iter))
            lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
            live.extend(ol.get_sweeps(trial))
            write_sweep(trial.study._storage, trial._trial_id, worst, None)  # "training"
            return lr

        study.optimize(objective, n_trials=1)
        trial = study.trials[0]
        assert trial.state == optuna.trial.TrialState.COMPLETE

        again = optuna.load_study(study_name=name, storage=open_storage(spec)).trials[0]
        first, second = ol.get_sweeps(again)
        assert len(first) == 20_000 and first == live[0]
        assert dict(first.info) == dict(live[0].info)
        assert bits(second.lrs) == bits(worst.lrs) and bits(second.losses) == bits(worst.losses)
        parts = [k for k in again.user_attrs if k.startswith("lrrange:sweep:")]
        assert len(parts) > 2
        with storage.engine.connect() as connection:
            longest = connection.execute(
                sqlalchemy.text(
                    "SELECT MAX(LENGTH(value_json)) FROM trial_user_attributes"
                    " WHERE trial_id = :id"
                ),
                {"id": trial._trial_id},
            ).scalar()
        assert MAX_STORED_CHARS - 1_000 < longest <= MAX_STORED_CHARS


def test_parts_are_written_before_the_head_and_leftover_parts_are_ignored() -> None:
    written: list[str] = []

    class Recording(optuna.storages.InMemoryStorage):
        def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
            written.append(key)
            super().set_trial_user_attr(trial_id, key, value)

    study = optuna.create_study(storage=Recording())
    trial = study.ask()
    sweep = noisy_sweep(5_000)
    texts = encode(sweep, sweep.suggest())
    # What a worker killed between two writes of a record leaves: a part without its head.
    trial.set_user_attr("lrrange:sweep:0:1", texts[1])
    written.clear()
    index = write_sweep(study._storage, trial._trial_id, sweep, sweep.suggest())
    assert index == 1  # above the leftover part: the two records' parts never mix
    assert written[:3] == ["lrrange:sweep:1:1", "lrrange:sweep:1", "lrrange:schema"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ol.get_sweeps(study.trials[0]) == [sweep]


def test_a_record_missing_a_part_is_refused_or_skipped_with_a_warning() -> None:
    sweep = noisy_sweep(5_000)
    head, part = encode(sweep, None)
    with pytest.raises(ValueError, match=r"the record has 2 parts, but only 1 were found"):
        decode(head)
    attrs = {"lrrange:sweep:0": head, "lrrange:sweep:1": head, "lrrange:sweep:1:1": part}
    with pytest.raises(ValueError, match=r"cannot read user attribute 'lrrange:sweep:0'"):
        read_records(attrs)
    with pytest.warns(RecordWarning, match=r"skipped user attribute 'lrrange:sweep:0'"):
        assert read_records(attrs, strict=False) == [(sweep, None)]


# ------------------------------------------------------------------ schema 1, still read

#: Written by the schema-1 encoder (optuna-lrrange before records were split): every rate
#: listed, and a bare NaN token for the non-finite loss that ended the sweep.
V1_NAN = (
    '{"schema":1,"lrs":[0.001,0.00231012970008316,0.00533669923120631,0.01232846739442066,'
    "0.02848035868435802,0.0657933224657568,0.15199110829529333],"
    '"losses":[1.0,0.9,0.7,0.4,0.3,0.35,NaN],"stop_reason":"non_finite_loss",'
    '"config":{"start_lr":0.001,"end_lr":10.0,"num_iter":12,"mode":"exp","diverge_factor":4.0,'
    '"smooth_beta":0.98},"info":{"kind":"trial","trial_number":0,"trial_id":1,"chosen_lr":0.01},'
    '"suggestion":{"lr":null,"band":null,"method":"descent_band","reason":"diverged_at_once"}}'
)
V1_REESTIMATE = (
    '{"schema":1,"lrs":[0.0001,0.00035938136638046273,0.0012915496650148838,'
    "0.004641588833612778,0.016681005372000585,0.059948425031894126,0.21544346900318828,"
    '0.7742636826811272,2.782559402207123,10.0],"losses":[0.999,0.9964,0.9872,0.9556,0.857,'
    '0.6252,0.317,0.1144,0.0347,0.0099],"stop_reason":"completed","config":{"start_lr":0.0001,'
    '"end_lr":10.0,"num_iter":10,"mode":"exp","diverge_factor":4.0,"smooth_beta":0.98},'
    '"info":{"kind":"reestimate","trial_number":3,"step":40,"chosen_lr":0.05},'
    '"suggestion":{"lr":0.30823992397451433,"band":[0.09747402255566064,3.0823992397451434],'
    '"method":"descent_band","reason":null}}'
)


def test_schema_1_records_are_still_read() -> None:
    sweep, suggestion = decode(V1_NAN)
    assert sweep.lrs == (
        0.001,
        0.00231012970008316,
        0.00533669923120631,
        0.01232846739442066,
        0.02848035868435802,
        0.0657933224657568,
        0.15199110829529333,
    )
    assert sweep.losses[:6] == (1.0, 0.9, 0.7, 0.4, 0.3, 0.35) and math.isnan(sweep.losses[6])
    assert sweep.stop_reason == "non_finite_loss"
    assert sweep.config == RangeTestConfig(start_lr=0.001, end_lr=10.0, num_iter=12)
    assert dict(sweep.info) == {
        "kind": "trial",
        "trial_number": 0,
        "trial_id": 1,
        "chosen_lr": 0.01,
    }
    assert suggestion == Suggestion(None, None, "descent_band", "diverged_at_once")

    sweep, suggestion = decode(V1_REESTIMATE)
    assert sweep.losses[-1] == 0.0099 and len(sweep) == 10
    assert sweep.info["step"] == 40
    assert suggestion == Suggestion(
        0.30823992397451433, (0.09747402255566064, 3.0823992397451434), "descent_band"
    )
    # Written again, it becomes schema 2 and reads back the same.
    assert decode(*encode(sweep, suggestion)) == (sweep, suggestion)


def test_a_study_holding_schema_1_records_reads_through_every_reader(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'old.db'}")
    for text in (V1_NAN, V1_REESTIMATE):
        trial = study.ask()
        trial.set_user_attr("lrrange:sweep:0", text)
        trial.set_user_attr("lrrange:schema", 1)
        study.tell(trial, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [len(ol.get_sweeps(t)) for t in study.trials] == [1, 1]
        assert len(ol.sweeps_dataframe(study)) == 7 + 10
        assert list(ol.sweeps_summary(study)["kind"]) == ["trial", "reestimate"]
