"""Sweeps <-> JSON-safe user attributes of a trial, under ``lrrange:`` keys.

One sweep is one user attribute holding one compact JSON string: a single write, so a
worker killed mid-sweep leaves either the whole record or none, and a string is cheap for
Optuna to copy (large nested attributes are not). Every number is a plain Python float:
numpy scalars and arrays pass the in-memory storage but break SQL and journal storages.

Keys:
    ``lrrange:sweep:<i>``  the i-th sweep of the trial (JSON string, see ``encode``)
    ``lrrange:band``       ``[low, high]`` of the trial's own sweep (the one taken before
                           the learning rate was sampled), or ``None``
    ``lrrange:suggestion`` that sweep's suggested rate, or ``None``
    ``lrrange:schema``     the schema version these keys follow
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import math
from typing import TYPE_CHECKING, Any
import warnings

from optuna_lrrange.core import RangeTestConfig, Suggestion, Sweep

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.trial import BaseTrial, FrozenTrial

SCHEMA_VERSION = 1
PREFIX = "lrrange:"
SWEEP_PREFIX = "lrrange:sweep:"
BAND_KEY = "lrrange:band"
SUGGESTION_KEY = "lrrange:suggestion"
SCHEMA_KEY = "lrrange:schema"


class RecordWarning(UserWarning):
    """A stored record could not be read and was skipped."""


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and arrays turned into JSON-native types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"a sweep record holds only JSON-native values, but got {value!r}.")


def _suggestion_dict(suggestion: Suggestion | None) -> dict[str, Any] | None:
    if suggestion is None:
        return None
    return {
        "lr": suggestion.lr,
        "band": list(suggestion.band) if suggestion.band is not None else None,
        "method": suggestion.method,
        "reason": suggestion.reason,
    }


def encode(sweep: Sweep, suggestion: Suggestion | None = None) -> str:
    """One sweep (and what was made of it) as a compact JSON string."""
    data = {
        "schema": SCHEMA_VERSION,
        "lrs": list(sweep.lrs),
        "losses": list(sweep.losses),
        "stop_reason": sweep.stop_reason,
        "config": sweep.config.to_dict(),
        "info": dict(sweep.info),
        "suggestion": _suggestion_dict(suggestion),
    }
    return json.dumps(_plain(data), separators=(",", ":"))


def decode(text: str) -> tuple[Sweep, Suggestion | None]:
    """The inverse of :func:`encode`.

    Raises:
        ValueError: The record was written by a newer schema version, or is not a sweep
            record (malformed JSON, missing or mistyped fields).
    """
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"a sweep record must be a JSON string, but got {text!r:.80}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"a sweep record must be a JSON object, but got {type(data).__name__}.")
    schema = data.get("schema")
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise ValueError(
            f"this optuna-lrrange reads sweep records of schema <= {SCHEMA_VERSION}, but got "
            f"schema {schema}: upgrade optuna-lrrange to read this study."
        )
    if schema != SCHEMA_VERSION:
        raise ValueError(f"a sweep record must carry schema {SCHEMA_VERSION}, but got {schema!r}.")
    try:
        sweep = Sweep(
            lrs=tuple(data["lrs"]),
            losses=tuple(math.nan if v is None else v for v in data["losses"]),
            stop_reason=data["stop_reason"],
            config=RangeTestConfig.from_dict(data["config"]),
            info=dict(data.get("info") or {}),
        )
        raw = data.get("suggestion")
        suggestion = None
        if raw is not None:
            band = raw.get("band")
            suggestion = Suggestion(
                lr=raw.get("lr"),
                band=(float(band[0]), float(band[1])) if band is not None else None,
                method=str(raw["method"]),
                reason=raw.get("reason"),
            )
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"a sweep record is malformed: {e!r}") from e
    return sweep, suggestion


def sweep_indices(user_attrs: Mapping[str, Any]) -> list[int]:
    """The indices ``i`` of the ``lrrange:sweep:<i>`` keys present, in order."""
    out = []
    for key in user_attrs:
        if key.startswith(SWEEP_PREFIX) and key[len(SWEEP_PREFIX) :].isdigit():
            out.append(int(key[len(SWEEP_PREFIX) :]))
    return sorted(out)


def write_sweep(
    storage: BaseStorage,
    trial_id: int,
    sweep: Sweep,
    suggestion: Suggestion | None,
) -> int:
    """Appends ``sweep`` to the trial's records in ``storage``; returns its index.

    The record goes first, in one write; the summary keys follow, so a reader never sees a
    summary without its sweep. Only a sweep of kind ``"trial"`` (the default) updates the
    summary: re-estimations during training are appended without changing it.
    """
    attrs = storage.get_trial(trial_id).user_attrs
    indices = sweep_indices(attrs)
    index = indices[-1] + 1 if indices else 0
    storage.set_trial_user_attr(trial_id, f"{SWEEP_PREFIX}{index}", encode(sweep, suggestion))
    if SCHEMA_KEY not in attrs:
        storage.set_trial_user_attr(trial_id, SCHEMA_KEY, SCHEMA_VERSION)
    if sweep.info.get("kind", "trial") != "trial":
        return index
    band = None if suggestion is None or suggestion.band is None else list(suggestion.band)
    storage.set_trial_user_attr(trial_id, BAND_KEY, _plain(band))
    lr = None if suggestion is None else suggestion.lr
    storage.set_trial_user_attr(trial_id, SUGGESTION_KEY, _plain(lr))
    return index


def read_records(
    user_attrs: Mapping[str, Any],
    trial_number: int | None = None,
    *,
    inherited: bool = False,
    strict: bool = True,
) -> list[tuple[Sweep, Suggestion | None]]:
    """Decodes the sweep records among ``user_attrs``, oldest first.

    Args:
        user_attrs: A trial's user attributes.
        trial_number: The trial's number. A retried trial inherits the user attributes of
            its failed attempt; records written under another trial number are the
            attempt's and are left out unless ``inherited`` is true.
        inherited: Keep records written by an earlier attempt of the trial.
        strict: Raise on an unreadable record; otherwise warn and skip it. A record of a
            newer schema always raises.
    """
    out = []
    for index in sweep_indices(user_attrs):
        key = f"{SWEEP_PREFIX}{index}"
        try:
            sweep, suggestion = decode(user_attrs[key])
        except ValueError as e:
            if "upgrade optuna-lrrange" in str(e) or strict:
                raise ValueError(f"cannot read user attribute {key!r}: {e}") from e
            warnings.warn(f"skipped user attribute {key!r}: {e}", RecordWarning, stacklevel=2)
            continue
        writer = sweep.info.get("trial_number")
        if not inherited and trial_number is not None and writer is not None:
            if writer != trial_number:
                continue
        out.append((sweep, suggestion))
    return out


def read_trial_records(
    trial: FrozenTrial, *, inherited: bool = False
) -> list[tuple[Sweep, Suggestion | None]]:
    """A trial's readable records, for analysis: nothing unreadable ever raises.

    An unreadable record is skipped with a :class:`RecordWarning` naming the trial; a trial
    whose records need a newer optuna-lrrange is skipped whole, with the same warning.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RecordWarning)
        try:
            records = read_records(
                trial.user_attrs, trial.number, inherited=inherited, strict=False
            )
        except ValueError as e:
            records = []
            warnings.warn(str(e), RecordWarning, stacklevel=1)
    for w in caught:
        warnings.warn(f"trial {trial.number}: {w.message}", RecordWarning, stacklevel=3)
    return records


def get_sweeps(trial: BaseTrial, *, inherited: bool = False) -> list[Sweep]:
    """The sweeps recorded on a trial, oldest first, as :class:`Sweep` objects.

    Args:
        trial: A live ``optuna.trial.Trial`` (read fresh from its storage, so sweeps the
            sampler wrote are included) or a ``FrozenTrial``.
        inherited: Also return the sweeps of a failed earlier attempt that a retried
            trial inherited.

    Each sweep's ``info`` says where it was taken (``kind``: ``"trial"`` for the sweep
    before the learning rate was sampled, ``"reestimate"`` for one during training).
    """
    from optuna.trial import FrozenTrial, Trial

    if isinstance(trial, Trial):
        frozen = trial.study._storage.get_trial(trial._trial_id)
    elif isinstance(trial, FrozenTrial):
        frozen = trial
    else:
        raise TypeError(
            f"`trial` must be an optuna Trial or FrozenTrial, but got {type(trial).__name__}."
        )
    return [s for s, _ in read_records(frozen.user_attrs, frozen.number, inherited=inherited)]
