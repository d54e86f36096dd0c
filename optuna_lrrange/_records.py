"""Sweeps <-> JSON-safe user attributes of a trial, under ``lrrange:`` keys.

A sweep is recorded as strict JSON text (non-finite numbers as the strings ``"NaN"``,
``"Infinity"``, ``"-Infinity"``, so any JSON parser reads it), in as few user attributes as
the storage allows. Each value, as Optuna's SQL storage writes it (``json.dumps`` of the
string), is at most :data:`MAX_STORED_CHARS` characters: MySQL's and MariaDB's ``TEXT``
column, which holds user attributes, takes 65,535 bytes. A 100-step sweep is one value of
about 2.5 KB; a longer one continues in numbered parts. The rates are not stored when they
are the schedule of the recorded settings (as every sweep of ``run_range_test`` is): they are
recomputed on reading, bitwise the same with the same ``libm``, within a rounding of
``pow`` elsewhere. Every number is a plain Python float: numpy scalars and arrays pass the
in-memory storage but break SQL and journal storages.

The parts are written first and the head last, so a worker killed while recording leaves
the whole record or no head (its parts are then ignored), and a reader never sees a summary
without its sweep. A string is cheap for Optuna to copy; large nested attributes are not.

Keys:
    ``lrrange:sweep:<i>``      the i-th sweep of the trial (the head, see :func:`encode`)
    ``lrrange:sweep:<i>:<j>``  part ``j`` (1, 2, ...) of the i-th sweep's steps, when they
                               do not all fit in the head
    ``lrrange:band``           ``[low, high]`` of the trial's own sweep (the one taken before
                               the learning rate was sampled), or ``None``
    ``lrrange:suggestion``     that sweep's suggested rate, or ``None``
    ``lrrange:schema``         the newest schema version among the trial's records

Every reader goes through :func:`decode`, which checks a record field by field; an
unreadable record is an error for :func:`get_sweeps` and is skipped with a
:class:`RecordWarning` by the analysis, the plots and the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
import functools
import json
import math
import operator
import re
from typing import TYPE_CHECKING, Any
import warnings

from optuna_lrrange.core import RangeTestConfig, Suggestion, Sweep

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.trial import BaseTrial, FrozenTrial

#: Schema 2: strict JSON, rates recomputed from the settings, steps split across parts.
#: Schema 1 (one value, every rate listed, bare ``NaN`` tokens) is still read.
SCHEMA_VERSION = 2
PREFIX = "lrrange:"
SWEEP_PREFIX = "lrrange:sweep:"
BAND_KEY = "lrrange:band"
SUGGESTION_KEY = "lrrange:suggestion"
SCHEMA_KEY = "lrrange:schema"

#: The longest value a record writes, in characters of Optuna's stored form (``json.dumps``
#: of the string, all ASCII): below MySQL's 65,535-byte ``TEXT`` column, with room to spare.
MAX_STORED_CHARS = 60_000

#: ``"lrs"`` of a record whose rates are the schedule of its settings.
SCHEDULE = "schedule"

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_KEY = re.compile(r"lrrange:sweep:(0|[1-9][0-9]*)(?::([1-9][0-9]*))?")
_dumps = functools.partial(json.dumps, separators=(",", ":"), allow_nan=False)


class RecordWarning(UserWarning):
    """A stored record could not be read and was skipped."""


class _NewerSchemaError(ValueError):
    """A record written by a newer optuna-lrrange: the whole trial is left unread."""


def _marker(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _plain(value: Any) -> Any:
    """``value`` as strict-JSON-native types: numpy values and tuples converted, and
    non-finite floats as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
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
        return float(value) if math.isfinite(value) else _marker(value)
    raise TypeError(f"a sweep record holds only JSON-native values, but got {value!r}.")


def _stored_chars(value: Any) -> int:
    """The length of ``value`` as Optuna's SQL storage stores it (``json.dumps`` of it)."""
    return len(json.dumps(value))


def _suggestion_dict(suggestion: Suggestion | None) -> dict[str, Any] | None:
    if suggestion is None:
        return None
    return {
        "lr": suggestion.lr,
        "band": list(suggestion.band) if suggestion.band is not None else None,
        "method": suggestion.method,
        "reason": suggestion.reason,
    }


def encode(sweep: Sweep, suggestion: Suggestion | None = None) -> list[str]:
    """One sweep (and what was made of it) as strict, compact JSON strings.

    Returns:
        The head, stored under ``lrrange:sweep:<i>``: ``{"schema": 2, "n": steps,
        "parts": k, "stop_reason", "config", "info", "suggestion", "lrs", "losses"}``, with
        ``"lrs": "schedule"`` when the rates are the settings' schedule; then the ``k - 1``
        parts ``{"lrs": [...], "losses": [...]}`` (``"lrs"`` only when listed) holding the
        steps that do not fit in the head, in order. Each is at most
        :data:`MAX_STORED_CHARS` characters as stored; ``decode(*encode(s, g))`` gives
        ``(s, g)`` back.

    Raises:
        ValueError: The sweep would not read back (see :func:`decode`), or its settings,
            ``info`` and suggestion alone exceed :data:`MAX_STORED_CHARS`.
        TypeError: ``info`` holds a value JSON cannot represent.
    """
    n = len(sweep)
    config = sweep.config
    listed = not (n <= config.num_iter and list(sweep.lrs) == config.schedule()[:n])
    lrs = _plain(list(sweep.lrs)) if listed else None
    losses = _plain(list(sweep.losses))
    head: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "n": n,
        "parts": n + 1,  # a bound while measuring: every part but the head holds a step
        "stop_reason": sweep.stop_reason,
        "config": _plain(config.to_dict()),
        "info": _plain(dict(sweep.info)),
        "suggestion": _plain(_suggestion_dict(suggestion)),
        "lrs": [] if listed else SCHEDULE,
        "losses": [],
    }
    empty_part: dict[str, Any] = {"lrs": [], "losses": []} if listed else {"losses": []}
    head_room = MAX_STORED_CHARS - _stored_chars(_dumps(head))
    if head_room < 0:
        raise ValueError(
            f"a sweep record's settings, info and suggestion must fit in {MAX_STORED_CHARS} "
            f"characters, but they take {MAX_STORED_CHARS - head_room}: keep Sweep.info small."
        )
    part_room = MAX_STORED_CHARS - _stored_chars(_dumps(empty_part))
    # What each step adds to a stored part: its numbers (a float is written as its repr, a
    # marker with its two quotes escaped: \"NaN\") and a comma each. An upper bound: the
    # last comma is never written.
    costs = [len(repr(v)) + 1 if isinstance(v, float) else len(v) + 5 for v in losses]
    if lrs is not None:
        costs = [c + len(repr(v)) + 1 for c, v in zip(costs, lrs, strict=True)]
    cuts, used, room = [0], 0, head_room
    for i, cost in enumerate(costs):
        if used + cost > room:
            cuts.append(i)
            used, room = 0, part_room
        used += cost
    cuts.append(n)
    texts = []
    for j, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
        part = dict(head, parts=len(cuts) - 1) if j == 0 else dict(empty_part)
        part["losses"] = losses[a:b]
        if lrs is not None:
            part["lrs"] = lrs[a:b]
        texts.append(_dumps(part))
    decode(*texts)  # what is written must read back
    return texts


def _load(text: Any, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} must be a JSON string, but got {text!r:.80}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, but got {type(data).__name__}.")
    return data


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(values: Any, name: str) -> list[float]:
    """``values`` as floats: numbers, ``null`` or a non-finite marker (``"NaN"``...)."""
    if not isinstance(values, list):
        raise ValueError(f"`{name}` must be a list of numbers, but got {values!r:.80}.")
    if set(map(type, values)) <= {float, int}:  # the common case, checked at C speed
        return list(map(float, values))
    out = []
    for i, v in enumerate(values):
        if _is_real(v):
            out.append(float(v))
        elif v is None:
            out.append(math.nan)
        elif isinstance(v, str) and v in _NON_FINITE:
            out.append(_NON_FINITE[v])
        else:
            raise ValueError(f"`{name}` must hold numbers only, but got {v!r:.40} at {i}.")
    return out


def _rate(value: Any, name: str) -> float:
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive finite number, but got {value!r:.40}.")
    return float(value)


def _check_rates(lrs: list[float]) -> None:
    if all(map(math.isfinite, lrs)) and all(map(operator.lt, lrs, lrs[1:])):
        if not lrs or lrs[0] > 0:
            return
    for i, lr in enumerate(lrs):
        _rate(lr, f"lrs[{i}]")
        if i and not lrs[i - 1] < lr:
            raise ValueError(
                f"`lrs` must be strictly increasing, but got {lrs[i - 1]!r} then {lr!r} at {i}."
            )


def _config(raw: Any) -> RangeTestConfig:
    fields = RangeTestConfig.__dataclass_fields__
    if not isinstance(raw, dict) or not raw.keys() >= fields.keys():
        raise ValueError(
            f"`config` must be an object with the fields {sorted(fields)}, but got {raw!r:.80}."
        )
    return RangeTestConfig.from_dict(raw)


def _info(raw: Any) -> dict[str, Any]:
    """The fields of ``info`` that readers use, checked; the rest is free-form."""
    info = {} if raw is None else raw
    if not isinstance(info, dict):
        raise ValueError(f"`info` must be an object, but got {raw!r:.80}.")
    for name in ("trial_number", "trial_id"):
        if name in info and not (isinstance(info[name], int) and not isinstance(info[name], bool)):
            raise ValueError(f"`info.{name}` must be an int, but got {info[name]!r:.40}.")
    if not isinstance(info.get("kind", ""), str):
        raise ValueError(f"`info.kind` must be a string, but got {info['kind']!r:.40}.")
    for name in ("step", "epoch", "chosen_lr"):
        value = info.get(name)
        if value is not None and not (_is_real(value) and math.isfinite(value)):
            raise ValueError(f"`info.{name}` must be a finite number, but got {value!r:.40}.")
    return info


def _suggestion(raw: Any) -> Suggestion | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"`suggestion` must be an object or null, but got {raw!r:.80}.")
    lr = None if raw.get("lr") is None else _rate(raw["lr"], "suggestion.lr")
    band = raw.get("band")
    if band is not None:
        if not (isinstance(band, list) and len(band) == 2):
            raise ValueError(f"`suggestion.band` must be [low, high], but got {band!r:.80}.")
        band = (_rate(band[0], "suggestion.band[0]"), _rate(band[1], "suggestion.band[1]"))
        if not band[0] <= band[1]:
            raise ValueError(f"`low <= high` must hold in `suggestion.band`, but got {band}.")
    method, reason = raw.get("method"), raw.get("reason")
    if not isinstance(method, str):
        raise ValueError(f"`suggestion.method` must be a string, but got {method!r:.40}.")
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"`suggestion.reason` must be a string or null, but got {reason!r:.40}.")
    return Suggestion(lr=lr, band=band, method=method, reason=reason)


def _steps(
    data: dict[str, Any], parts: tuple[str, ...], config: RangeTestConfig
) -> tuple[list[float], list[float]]:
    """``(lrs, losses)`` of a record: schema 1 lists them; schema 2 may split them."""
    if data["schema"] == 1:
        return _numbers(data.get("lrs"), "lrs"), _numbers(data.get("losses"), "losses")
    n, k = data.get("n"), data.get("parts")
    if not (isinstance(n, int) and isinstance(k, int) and n >= 0 and k >= 1):
        raise ValueError(f"`n >= 0` and `parts >= 1` must hold, but got n={n!r}, parts={k!r}.")
    if len(parts) < k - 1:
        raise ValueError(f"the record has {k} parts, but only {len(parts) + 1} were found.")
    chunks = [data] + [
        _load(p, f"part {j} of the record") for j, p in enumerate(parts[: k - 1], 1)
    ]
    losses = [x for c in chunks for x in _numbers(c.get("losses"), "losses")]
    if data.get("lrs") == SCHEDULE:
        if not n <= config.num_iter:
            raise ValueError(
                f"`n <= num_iter` must hold, but got n={n}, num_iter={config.num_iter}."
            )
        lrs = config.schedule()[:n]
    else:
        lrs = [x for c in chunks for x in _numbers(c.get("lrs"), "lrs")]
    if not len(lrs) == len(losses) == n:
        raise ValueError(
            f"`n` rates and losses must be recorded, but got n={n}, {len(lrs)} rates and "
            f"{len(losses)} losses."
        )
    return lrs, losses


def decode(text: str, *parts: str) -> tuple[Sweep, Suggestion | None]:
    """The inverse of :func:`encode`: every reader's one way in, and its checks.

    Args:
        text: The head of the record (``lrrange:sweep:<i>``).
        parts: Its parts (``lrrange:sweep:<i>:1``, ``:2``, ...), in order; parts beyond
            the head's count are ignored.

    Reads schema 2 and schema 1. Checks that the rates are positive, finite and strictly
    increasing, that every loss is a number (or ``null``, or a non-finite marker), that the
    settings are complete and valid, and that the suggestion and the ``info`` fields the
    readers use (``kind``, ``trial_number``, ``trial_id``, ``step``, ``epoch``,
    ``chosen_lr``) have their types.

    Raises:
        ValueError: The record was written by a newer schema version, or is not a sweep
            record (malformed JSON, missing, mistyped or inconsistent fields).
    """
    data = _load(text, "a sweep record")
    schema = data.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
        raise _NewerSchemaError(
            f"this optuna-lrrange reads sweep records of schema <= {SCHEMA_VERSION}, but got "
            f"schema {schema}: upgrade optuna-lrrange to read this study."
        )
    if schema not in (1, 2) or isinstance(schema, bool):
        raise ValueError(f"a sweep record must carry schema 1 or 2, but got {schema!r}.")
    try:
        config = _config(data.get("config"))
        lrs, losses = _steps(data, parts, config)
        _check_rates(lrs)
        sweep = Sweep(
            lrs=tuple(lrs),
            losses=tuple(losses),
            stop_reason=data.get("stop_reason"),  # type: ignore[arg-type]
            config=config,
            info=_info(data.get("info")),
        )
        suggestion = _suggestion(data.get("suggestion"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"a sweep record is malformed: {e}") from e
    return sweep, suggestion


def _scan(user_attrs: Mapping[str, Any]) -> tuple[dict[int, list[str]], list[str]]:
    """``({i: [head key, part keys 1, 2, ... in a row]}, [keys no record owns])``."""
    heads: set[int] = set()
    parts: dict[int, set[int]] = {}
    stray = []
    for key in user_attrs:
        if not key.startswith(SWEEP_PREFIX):
            continue
        match = _KEY.fullmatch(key)
        if match is None:
            stray.append(key)
        elif match.group(2) is None:
            heads.add(int(match.group(1)))
        else:
            parts.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    records = {}
    for i in sorted(heads):
        keys = [f"{SWEEP_PREFIX}{i}"]
        while len(keys) in parts.get(i, ()):
            keys.append(f"{SWEEP_PREFIX}{i}:{len(keys)}")
        records[i] = keys
    # Parts without a head are what a write interrupted before its head left: no record.
    return records, stray


def _earlier_attempts(trial: FrozenTrial) -> frozenset[int]:
    """The numbers of the failed attempts a trial retries (from Optuna's retry callbacks).

    ``RetryHeartbeatStaleTrialCallback`` (and the older ``RetryFailedTrialCallback``) create
    the retry with its attempt's user attributes, and mark it with the system attributes
    ``failed_trial`` (the first attempt) and ``retry_history`` (every earlier attempt). Both
    travel with the trial when a study's trials are copied into another with
    ``add_trials``, unlike trial numbers, which are given afresh.
    """
    attrs = trial.system_attrs
    numbers = [attrs.get("failed_trial")]
    history = attrs.get("retry_history")
    if isinstance(history, list):
        numbers += history
    return frozenset(n for n in numbers if isinstance(n, int) and not isinstance(n, bool))


def read_records(
    user_attrs: Mapping[str, Any],
    *,
    earlier_attempts: Collection[int] = (),
    strict: bool = True,
    skipped: Callable[[str], None] | None = None,
    left_out: list[str] | None = None,
) -> list[tuple[Sweep, Suggestion | None]]:
    """Decodes the sweep records among ``user_attrs``, oldest first.

    Args:
        user_attrs: A trial's user attributes.
        earlier_attempts: The numbers of the failed attempts the trial retries (see
            :func:`_earlier_attempts`): records written under one of them (their
            ``info.trial_number``) were inherited with the attempt's user attributes and
            are left out; the attempt's own trial still holds them.
        strict: Raise on an unreadable record; otherwise skip it with a
            :class:`RecordWarning` (or pass the message to ``skipped``). A record of a
            newer schema always raises.
        skipped: Receives the message of each skipped record instead of a warning.
        left_out: Receives the key of each record left out as inherited.
    """
    records, stray = _scan(user_attrs)
    stray_why = "not a key of a sweep record (lrrange:sweep:<i>, or :<i>:<j> for its parts)"
    problems = [(key, stray_why) for key in stray]
    out = []
    for keys in records.values():
        try:
            sweep, suggestion = decode(*(user_attrs[k] for k in keys))
        except _NewerSchemaError as e:
            raise _NewerSchemaError(f"cannot read user attribute {keys[0]!r}: {e}") from e
        except ValueError as e:
            problems.append((keys[0], str(e)))
            continue
        if sweep.info.get("trial_number") in earlier_attempts:
            if left_out is not None:
                left_out.append(keys[0])
            continue
        out.append((sweep, suggestion))
    for key, why in problems:
        if strict:
            raise ValueError(f"cannot read user attribute {key!r}: {why}")
        message = f"skipped user attribute {key!r}: {why}"
        if skipped is None:
            warnings.warn(message, RecordWarning, stacklevel=2)
        else:
            skipped(message)
    return out


def read_trial_records(
    trial: FrozenTrial, *, inherited: bool = False, left_out: list[str] | None = None
) -> list[tuple[Sweep, Suggestion | None]]:
    """A trial's readable records, for analysis: nothing unreadable ever raises.

    An unreadable record is skipped with a :class:`RecordWarning` naming the trial; a trial
    whose records need a newer optuna-lrrange is skipped whole, with the same warning.
    Records inherited by a retry from its failed attempt are left out unless ``inherited``
    (their keys go to ``left_out``).
    """

    def skipped(message: str) -> None:
        warnings.warn(f"trial {trial.number}: {message}", RecordWarning, stacklevel=4)

    earlier = () if inherited else _earlier_attempts(trial)
    try:
        return read_records(
            trial.user_attrs,
            earlier_attempts=earlier,
            strict=False,
            skipped=skipped,
            left_out=left_out,
        )
    except _NewerSchemaError as e:
        skipped(str(e))
        return []


def read_study_records(
    trials: Iterable[FrozenTrial], *, inherited: bool = False
) -> list[tuple[FrozenTrial, list[tuple[Sweep, Suggestion | None]]]]:
    """Every trial's readable records (see :func:`read_trial_records`), for the trials that
    hold any, in order.

    A record a retry inherited is left out because the attempt's own trial holds it too; if
    no trial among ``trials`` holds it as its own (a study that merged the retry but not its
    failed attempt), leaving it out would lose it: it is still left out, so that every
    reader counts the same sweeps, but with a :class:`RecordWarning`.
    """
    out = []
    own: set[Any] = set()
    inherited_keys: list[tuple[FrozenTrial, str]] = []
    for trial in trials:
        attrs = trial.user_attrs
        if not any(key.startswith(SWEEP_PREFIX) for key in attrs):
            continue
        left_out: list[str] = []
        out.append((trial, read_trial_records(trial, inherited=inherited, left_out=left_out)))
        heads = [f"{SWEEP_PREFIX}{i}" for i in _scan(attrs)[0]]
        own.update(attrs[key] for key in heads if key not in left_out)
        inherited_keys += [(trial, key) for key in left_out]
    for trial, key in inherited_keys:
        if trial.user_attrs[key] not in own:
            warnings.warn(
                f"trial {trial.number}: left out user attribute {key!r}, a sweep inherited "
                "from the failed attempt the trial retries, which no trial here holds as its "
                "own: pass inherited=True to count it.",
                RecordWarning,
                stacklevel=3,
            )
    return out


def write_sweep(
    storage: BaseStorage,
    trial_id: int,
    sweep: Sweep,
    suggestion: Suggestion | None,
) -> int:
    """Appends ``sweep`` to the trial's records in ``storage``; returns its index.

    The parts go first, then the head, then the summary keys: a reader never sees a head
    without its parts, nor a summary without its sweep. A new record takes an index above
    every ``lrrange:sweep:`` key present, a leftover part included, so parts are never
    mixed. Only a sweep of kind ``"trial"`` (the default) updates the summary:
    re-estimations during training are appended without changing it.
    """
    texts = encode(sweep, suggestion)
    attrs = storage.get_trial(trial_id).user_attrs
    used = [int(m.group(1)) for m in map(_KEY.fullmatch, attrs) if m is not None]
    index = max(used) + 1 if used else 0
    for j in range(1, len(texts)):
        storage.set_trial_user_attr(trial_id, f"{SWEEP_PREFIX}{index}:{j}", texts[j])
    storage.set_trial_user_attr(trial_id, f"{SWEEP_PREFIX}{index}", texts[0])
    if attrs.get(SCHEMA_KEY) != SCHEMA_VERSION:
        storage.set_trial_user_attr(trial_id, SCHEMA_KEY, SCHEMA_VERSION)
    if sweep.info.get("kind", "trial") != "trial":
        return index
    band = None if suggestion is None or suggestion.band is None else list(suggestion.band)
    storage.set_trial_user_attr(trial_id, BAND_KEY, _plain(band))
    lr = None if suggestion is None else suggestion.lr
    storage.set_trial_user_attr(trial_id, SUGGESTION_KEY, _plain(lr))
    return index


def get_sweeps(trial: BaseTrial, *, inherited: bool = False) -> list[Sweep]:
    """The sweeps recorded on a trial, oldest first, as :class:`Sweep` objects.

    Args:
        trial: A live ``optuna.trial.Trial`` (read fresh from its storage, so sweeps the
            sampler wrote are included) or a ``FrozenTrial``.
        inherited: Also return the sweeps of a failed earlier attempt that a retried
            trial inherited (Optuna's retry callbacks copy the attempt's user attributes).
            Sweeps a trial brought along when it was copied from another study
            (``add_trials``) are its own and always returned.

    Raises:
        ValueError: A record is unreadable (it names the user attribute and why).

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
    earlier = () if inherited else _earlier_attempts(frozen)
    return [s for s, _ in read_records(frozen.user_attrs, earlier_attempts=earlier)]
