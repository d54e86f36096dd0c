"""LRRangeSampler: a range test on the trial's own model places the learning rate.

The objective hands its model to the sampler with :func:`attach`; the sampler finds it in
a process-local registry under the trial's storage and id when the objective asks for the
learning rate and runs the range test. With the default placement, ``"offset"``, the rate
is placed at an offset from the sweep's drop point that the base sampler samples jointly
with the other parameters (:mod:`optuna_lrrange._offset`); with ``"band"``, the
distribution is narrowed to the steepest-descent band and the base sampler chooses inside
it. Everything is recorded on the trial in the study's storage, under ``lrrange:`` keys
(see :mod:`optuna_lrrange._records`), plus:

    ``lrrange:band_used``  ``[low, high]`` the rate was sampled from, or ``None`` when the
                           sampler did not sample it (a fixed rate) or the base sampler
                           returned a rate outside it (``GridSampler``)
    ``lrrange:source``     number of the trial whose sweep gave the band: the trial's own
                           number when it swept, another one when it reused a band, or
                           ``None`` when no sweep was used
    ``lrrange:reason``     why the rate was not sampled from the sweep's band (or its part
                           inside ``[low, high]``), or ``None``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
import itertools
import logging
import math
import sys
import threading
import time
from typing import TYPE_CHECKING, Any
import warnings
import weakref

from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, PartialFixedSampler, TPESampler
from optuna.trial import FixedTrial, FrozenTrial, Trial, TrialState

from optuna_lrrange import _offset
from optuna_lrrange._records import BAND_KEY, encode, write_sweep
from optuna_lrrange.core import RULES, RangeTestConfig, Suggestion, Sweep
from optuna_lrrange.core._config import resolve_config

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.study import Study

__all__ = ["LRRangeSampler", "attach"]

BAND_USED_KEY = "lrrange:band_used"
SOURCE_KEY = "lrrange:source"
REASON_KEY = "lrrange:reason"

#: Reasons recorded in ``lrrange:reason`` (each followed by ": details" where there are any).
NO_PROBE = "no_probe"
SWEEP_FAILED = "sweep_failed"
NO_BAND = "no_band"
BAND_OUTSIDE_RANGE = "band_outside_range"
BASE_OUTSIDE_BAND = "base_outside_band"
FIXED = "fixed"

#: Where the rate goes: ``"band"`` samples it inside the sweep's band (through the base
#: sampler's ``sample_independent``); ``"offset"`` places it at an offset from the sweep's
#: anchor that the base sampler samples jointly with the other parameters.
PLACEMENTS = ("band", "offset")
DEFAULT_PLACEMENT = "offset"

_logger = logging.getLogger("optuna.lrrange")

SweepFn = Callable[[RangeTestConfig], Sweep]


# --------------------------------------------------------------------------- the registry

_registry: dict[tuple[int, int], tuple[int, SweepFn]] = {}
_registry_lock = threading.Lock()
_tokens = itertools.count()


def _key(storage: BaseStorage, trial_id: int) -> tuple[int, int]:
    # Trial ids are unique within one storage only (two in-memory storages both start at 0).
    return (id(storage), trial_id)


def _register(key: tuple[int, int], sweep_fn: SweepFn) -> int:
    token = next(_tokens)
    with _registry_lock:
        _registry[key] = (token, sweep_fn)
    return token


def _unregister(key: tuple[int, int], token: int | None = None) -> None:
    """Drops the probe under ``key`` (only if it is still the one ``token`` names)."""
    with _registry_lock:
        entry = _registry.get(key)
        if entry is not None and (token is None or entry[0] == token):
            del _registry[key]


def _lookup(key: tuple[int, int]) -> SweepFn | None:
    with _registry_lock:
        entry = _registry.get(key)
    return None if entry is None else entry[1]


# ------------------------------------------------- quieting GP's and CMA-ES's fallback notice

_quiet = threading.local()


class _IndependentSamplingFilter(logging.Filter):
    """Drops a base sampler's "sampled independently" notice for the narrowed rate only.

    Active only inside :meth:`LRRangeSampler.sample_independent` for the learning rate, and
    only in the thread doing it: the same notice for any other parameter still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(_quiet, "param_name", None)
        if name is None or record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        return not (
            message.startswith(f"The parameter `{name}` in Trial#")
            and "is sampled independently" in message
        )


_FILTER = _IndependentSamplingFilter()


def _quiet_independent_sampling_notice(sampler: BaseSampler) -> None:
    logger = logging.getLogger(type(sampler).__module__)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


# --------------------------------------------------------------------------- helpers


def _fixes(sampler: BaseSampler, param_name: str) -> bool:
    """Whether ``sampler`` is a ``PartialFixedSampler`` that fixes ``param_name``."""
    fixed = getattr(sampler, "_fixed_params", None)
    return (
        isinstance(sampler, PartialFixedSampler)
        and isinstance(fixed, dict)
        and (param_name in fixed)
    )


def _find_sampler(sampler: BaseSampler) -> tuple[LRRangeSampler | None, dict[str, Any]]:
    """The ``LRRangeSampler`` in a chain of wrappers, and the parameters fixed above it."""
    fixed: dict[str, Any] = {}
    current: Any = sampler
    for _ in range(16):
        if isinstance(current, LRRangeSampler):
            return current, fixed
        if not isinstance(current, BaseSampler):
            break
        if isinstance(current, PartialFixedSampler):
            fixed = {**getattr(current, "_fixed_params", {}), **fixed}
        current = getattr(current, "_base_sampler", None)
    return None, {}


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _stored_band(raw: Any) -> tuple[float, float] | None:
    """A band read back from storage; ``None`` when it is ``None`` or malformed."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        return None
    lo, hi = float(raw[0]), float(raw[1])
    return (lo, hi) if 0 < lo < hi < math.inf else None


#: The narrowest interval the rate is sampled from, in decades: TPE's Parzen estimator
#: divides by the interval's width, and a band of one point leaves nothing to choose.
MIN_DECADES = 0.2


def _widened(lo: float, hi: float, low: float, high: float) -> tuple[float, float]:
    """``[lo, hi]`` widened about its middle to ``MIN_DECADES``, kept inside ``[low, high]``."""
    if math.log10(hi / lo) >= MIN_DECADES:
        return lo, hi
    if math.log10(high / low) <= MIN_DECADES:
        return low, high
    start = (math.log10(lo) + math.log10(hi) - MIN_DECADES) / 2
    start = min(max(start, math.log10(low)), math.log10(high) - MIN_DECADES)
    return 10.0**start, min(high, 10.0 ** (start + MIN_DECADES))


def _fit(band: tuple[float, float], low: float, high: float) -> tuple[float, float, str | None]:
    """``band ∩ [low, high]``; a band that misses the range is moved against its nearer edge.

    The result is at least ``MIN_DECADES`` wide (unless ``[low, high]`` is narrower).
    Returns the interval and, when it is not the plain intersection, the reason.
    """
    lo, hi = max(band[0], low), min(band[1], high)
    if lo < hi:
        return *_widened(lo, hi, low, high), None
    width = min(math.log10(band[1] / band[0]), math.log10(high / low))
    if band[0] >= high:
        lo, hi, side = max(low, high / 10**width), high, "above"
    else:
        lo, hi, side = low, min(high, low * 10**width), "below"
    lo, hi = _widened(lo, hi, low, high)
    reason = (
        f"{BAND_OUTSIDE_RANGE}: band [{_fmt(band[0])}, {_fmt(band[1])}] lies {side} "
        f"[{_fmt(low)}, {_fmt(high)}]; sampled in [{_fmt(lo)}, {_fmt(hi)}] at its edge"
    )
    return lo, hi, reason


# --------------------------------------------------------------------------- the sampler


class LRRangeSampler(BaseSampler):
    """A sampler that places the learning rate with a range test on the trial's model.

    When the objective asks for the learning rate with
    ``trial.suggest_float(param_name, low, high, log=True)`` after calling
    :func:`attach`, the sampler runs a short learning-rate range test on the trial's own
    model (Smith 2015, section 3.3). With the default ``placement="offset"`` the rate is
    the sweep's drop point times ``10 ** offset``, kept inside ``[low, high]``, where the
    offset is a parameter ``attach`` suggests and ``base_sampler`` samples jointly with
    every other parameter, so the study learns where the best rate lies relative to each
    sweep. With ``placement="band"`` the sampler takes the steepest-descent band,
    intersects it with ``[low, high]`` and lets ``base_sampler`` sample inside it. The
    stored distribution stays the objective's. Every other parameter, and every hook,
    goes to ``base_sampler`` unchanged.

    A sweep that raises, never descends or diverges at once never fails the trial: the
    rate is placed from the study's median anchor (``"offset"``, once there is one) or
    sampled from the full ``[low, high]`` range, the reason is recorded as the trial's
    ``lrrange:reason`` user attribute and logged as a warning on the ``optuna.lrrange``
    logger. An anchor or band that misses ``[low, high]`` is moved inside, against the
    nearer edge.

    Args:
        base_sampler: The sampler that samples every parameter, the rate's offset (or
            the rate inside its band) included. ``TPESampler()`` by default.
        param_name: The name of the learning-rate parameter.
        config: The range-test settings; alternatively pass them as ``config_options``
            (``start_lr``, ``end_lr``, ``num_iter``, ``mode``, ``diverge_factor``,
            ``smooth_beta``), not both. The sweep should span ``[low, high]``.
        method: The suggestion rule recorded with each sweep (a name in
            ``optuna_lrrange.RULES``); ``None`` for the default. The band is the same
            whatever the rule.
        sweep_every: Sweep at most once in this many trial numbers: a trial sweeps only
            if none of the ``sweep_every - 1`` trials before it (by number, written by any
            worker) recorded a sweep of its own; otherwise it reuses the band of the newest
            such trial. 1 sweeps in every trial.
        sweep_fixed: Also sweep (in :func:`attach`) when the trial's learning rate is
            fixed (an enqueued or retried trial, or a ``PartialFixedSampler`` around this
            sampler), only to record it. The rate stays the fixed one.
        resweep_on_params: Reuse a band only from a trial whose other parameters equal
            this trial's: ``True`` compares every parameter suggested before the learning
            rate, a sequence of names compares those. Only matters with
            ``sweep_every > 1``.
        artifact_store: An Optuna artifact store (for example
            ``optuna.artifacts.FileSystemArtifactStore(DIR)``): after each sweep, its plot
            is uploaded as an artifact of the trial and the trial's note gets the band, the
            suggestion, the rate used and the plot, for optuna-dashboard (see
            :mod:`optuna_lrrange.dashboard`; needs the ``dashboard`` extra). A failed upload
            never fails the trial. ``None`` (the default) uploads nothing.
        placement: Where the rate goes. ``"offset"`` (the default): the parameter
            ``"<param_name>:offset"`` (decades from the sweep's drop point, the same
            distribution in every trial), suggested by :func:`attach`, is sampled by the
            base sampler with every other parameter, and the rate is the drop point
            times ``10 ** offset`` (see ``optuna_lrrange._offset``). ``"band"``: sampled
            by the base sampler inside the sweep's band, outside its joint model.
        narrow_sweeps: With ``placement="offset"``, let the sweeps get cheaper as the
            study learns: sweep a narrower range once earlier sweeps have shown where the
            drop lies, at the same points per decade; and once the newest sweeps of trials
            with the same other parameters agree, place further such trials from their
            median anchor without a sweep (reason ``settled: ...``), sweeping again every
            few trials. ``False`` sweeps every trial over the full range.
        config_options: Range-test settings, as the fields of
            :class:`~optuna_lrrange.RangeTestConfig`.
    """

    def __init__(
        self,
        base_sampler: BaseSampler | None = None,
        *,
        param_name: str = "lr",
        config: RangeTestConfig | None = None,
        method: str | None = None,
        sweep_every: int = 1,
        sweep_fixed: bool = False,
        resweep_on_params: bool | Sequence[str] = False,
        artifact_store: Any = None,
        placement: str = DEFAULT_PLACEMENT,
        narrow_sweeps: bool = True,
        **config_options: Any,
    ) -> None:
        if base_sampler is None:
            base_sampler = TPESampler()
        if not isinstance(base_sampler, BaseSampler):
            raise TypeError(
                "`base_sampler` must be an optuna BaseSampler or None, but got "
                f"{type(base_sampler).__name__}."
            )
        if _find_sampler(base_sampler)[0] is not None:
            raise ValueError(
                "`base_sampler` must not be or wrap an LRRangeSampler (every trial would sweep "
                f"twice), but got {type(base_sampler).__name__} holding one; use one "
                "LRRangeSampler with the settings you need."
            )
        if not isinstance(param_name, str) or not param_name:
            raise TypeError(f"`param_name` must be a non-empty str, but got {param_name!r}.")
        config = resolve_config(config, config_options)
        if method is not None and method not in RULES:
            raise ValueError(
                f"`method` must be one of {sorted(RULES)} or None, but got {method!r}."
            )
        if not isinstance(sweep_every, int) or isinstance(sweep_every, bool) or sweep_every < 1:
            raise ValueError(f"`sweep_every >= 1` must hold, but got sweep_every={sweep_every!r}.")
        if isinstance(resweep_on_params, str) or not (
            isinstance(resweep_on_params, bool)
            or all(isinstance(n, str) for n in resweep_on_params)
        ):
            raise TypeError(
                "`resweep_on_params` must be a bool or a sequence of parameter names, but got "
                f"{resweep_on_params!r}."
            )
        if placement not in PLACEMENTS:
            raise ValueError(f"`placement` must be one of {PLACEMENTS}, but got {placement!r}.")
        if placement == "offset":
            _offset.check_grid(base_sampler, param_name)
        self._base_sampler = base_sampler
        self._placement = placement
        self._narrow_sweeps = bool(narrow_sweeps)
        self._param_name = param_name
        self._config = config
        self._method = method
        self._sweep_every = sweep_every
        self._sweep_fixed = bool(sweep_fixed)
        self._resweep_on_params: bool | tuple[str, ...] = (
            resweep_on_params if isinstance(resweep_on_params, bool) else tuple(resweep_on_params)
        )
        if artifact_store is not None:
            from optuna_lrrange.dashboard import check_artifact_store

            check_artifact_store(artifact_store)
        self._artifact_store = artifact_store
        _quiet_independent_sampling_notice(base_sampler)

    @property
    def param_name(self) -> str:
        """The name of the learning-rate parameter."""
        return self._param_name

    @property
    def placement(self) -> str:
        """Where the rate goes: ``"band"`` or ``"offset"``."""
        return self._placement

    @property
    def config(self) -> RangeTestConfig:
        """The range-test settings."""
        return self._config

    # ------------------------------------------------------------------ forwarded hooks

    def reseed_rng(self) -> None:
        self._base_sampler.reseed_rng()

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        search_space = self._base_sampler.infer_relative_search_space(study, trial)
        # The learning rate is always sampled in sample_independent, where it is narrowed.
        search_space.pop(self._param_name, None)
        return search_space

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self._param_name in search_space:
            search_space = {k: v for k, v in search_space.items() if k != self._param_name}
        if self._placement == "offset":
            search_space = _offset.relative_space(self, study, trial, search_space)
        return self._base_sampler.sample_relative(study, trial, search_space)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._base_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        try:
            self._base_sampler.after_trial(study, trial, state, values)
        finally:
            key = _key(study._storage, trial._trial_id)
            probe = _lookup(key)
            _unregister(key)
            _offset.forget(key)
            if (
                probe is not None
                and state == TrialState.COMPLETE
                and self._param_name not in trial.params
            ):
                _logger.warning(
                    f"Trial {trial.number}: optuna_lrrange.attach was called but "
                    f"`{self._param_name}` was never suggested, so no range test ran; the "
                    f"sampler narrows the parameter named by LRRangeSampler(param_name="
                    f"{self._param_name!r})."
                )

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if self._placement == "offset" and param_name == _offset.offset_name(self._param_name):
            key = _key(study._storage, trial._trial_id)
            return _offset.sample_offset(self, study, trial, param_distribution, key)
        if param_name != self._param_name or _fixes(self._base_sampler, param_name):
            return self._base_sampler.sample_independent(
                study, trial, param_name, param_distribution
            )
        if not (
            isinstance(param_distribution, FloatDistribution)
            and param_distribution.log
            and param_distribution.step is None
        ):
            raise ValueError(
                f"LRRangeSampler narrows `{param_name}`: it must be suggested as "
                f"`trial.suggest_float({param_name!r}, low, high, log=True)`, but got "
                f"{param_distribution!r}."
            )
        if self._placement == "offset":
            return _offset.place_rate(self, study, trial, param_name, param_distribution)
        low, high = param_distribution.low, param_distribution.high
        storage = study._storage
        band, source, reason, record = self._band(study, trial)
        if band is None:
            lo, hi = low, high
        else:
            lo, hi, outside = _fit(band, low, high)
            reason = reason or outside
        if reason is not None:
            _logger.warning(
                f"Trial {trial.number}: `{param_name}` sampled in [{_fmt(lo)}, {_fmt(hi)}] "
                f"instead of the sweep's band ({reason})."
            )
        narrowed = FloatDistribution(lo, hi, log=True)
        _quiet.param_name = param_name
        try:
            value = self._base_sampler.sample_independent(study, trial, param_name, narrowed)
        finally:
            _quiet.param_name = None
        band_used: list[float] | None = [lo, hi]
        if not lo <= float(value) <= hi:
            # A base sampler that ignores the distribution it is given (GridSampler): the
            # record says so rather than claim the rate came from [lo, hi].
            ignored = (
                f"{BASE_OUTSIDE_BAND}: {type(self._base_sampler).__name__} returned "
                f"{_fmt(float(value))} outside [{_fmt(lo)}, {_fmt(hi)}]"
            )
            _logger.warning(f"Trial {trial.number}: `{param_name}` was not narrowed ({ignored}).")
            band_used, reason = None, ignored if reason is None else f"{reason}; {ignored}"
        if record is not None:
            sweep, suggestion = record
            info = {
                **dict(sweep.info),
                "param_name": param_name,
                "low": low,
                "high": high,
                "band_used": band_used,
                "chosen_lr": float(value),
                "reason": reason,
            }
            write_sweep(storage, trial._trial_id, replace(sweep, info=info), suggestion)
        storage.set_trial_user_attr(trial._trial_id, BAND_USED_KEY, band_used)
        storage.set_trial_user_attr(trial._trial_id, SOURCE_KEY, source)
        storage.set_trial_user_attr(trial._trial_id, REASON_KEY, reason)
        if record is not None:
            self._publish(study, trial._trial_id)
        return value

    def _publish(self, study: Study, trial_id: int) -> None:
        """The trial's sweep plot and note for optuna-dashboard, if asked for; never raises."""
        if self._artifact_store is not None:
            from optuna_lrrange.dashboard import publish_safely

            publish_safely(study, trial_id, self._artifact_store, self._param_name)

    # ------------------------------------------------------------------ the band

    def _band(
        self, study: Study, trial: FrozenTrial
    ) -> tuple[
        tuple[float, float] | None,
        int | None,
        str | None,
        tuple[Sweep, Suggestion] | None,
    ]:
        """``(band, source trial number, reason, (sweep, suggestion) to record)``."""
        reused = self._reusable(study, trial)
        if reused is not None:
            source, band = reused
            number = source.number
            if band is None:
                return None, number, f"{NO_BAND}: trial {number}'s sweep", None
            return band, number, None, None
        sweep_fn = _lookup(_key(study._storage, trial._trial_id))
        if sweep_fn is None:
            no_probe = (
                f"{NO_PROBE}: call optuna_lrrange.attach(trial, ...) before "
                f"trial.suggest_float({self._param_name!r}, ...)"
            )
            return None, None, no_probe, None
        sweep, suggestion, reason = self._run(sweep_fn, trial.number, trial._trial_id)
        if sweep is None or suggestion is None:
            return None, None, reason, None
        band = suggestion.band
        if band is None:
            reason = f"{NO_BAND}: {suggestion.reason}"
        return band, trial.number, reason, (sweep, suggestion)

    def _run(
        self,
        sweep_fn: SweepFn,
        number: int,
        trial_id: int,
        config: RangeTestConfig | None = None,
    ) -> tuple[Sweep | None, Suggestion | None, str | None]:
        """Runs one sweep (over ``config``, the sampler's by default); a failure comes back
        as ``(None, None, reason)``."""
        start = time.perf_counter()
        try:
            sweep = sweep_fn(self._config if config is None else config)
            if not isinstance(sweep, Sweep):
                raise TypeError(
                    f"the sweep function must return a Sweep, but got {type(sweep).__name__}."
                )
            suggestion = sweep.suggest(self._method)
            info = {
                **dict(sweep.info),
                "kind": "trial",
                "trial_number": number,
                "trial_id": trial_id,
                "seconds": time.perf_counter() - start,
            }
            sweep = replace(sweep, info=info)
            # The record is written after the rate is sampled: one that cannot be encoded
            # (a sweep_fn's info holding a torch.device) fails the sweep here instead.
            encode(sweep, suggestion)
        except Exception as e:
            return None, None, f"{SWEEP_FAILED}: {type(e).__name__}: {e}"
        return sweep, suggestion, None

    def _reusable(
        self, study: Study, trial: FrozenTrial
    ) -> tuple[FrozenTrial, tuple[float, float] | None] | None:
        """``(trial, its band)``: the trial whose sweep this trial reuses, or ``None`` when
        it must sweep.

        A trial whose stored band is malformed (not ``None`` nor two positive finite
        numbers, low < high) is skipped with a warning, as if it had not swept.
        """
        if self._sweep_every == 1:
            return None
        if self._resweep_on_params is True:
            # The offset is the rate's own coordinate, not another parameter.
            rate = {self._param_name}
            if self._placement == "offset":
                rate.add(_offset.offset_name(self._param_name))
            names: tuple[str, ...] = tuple(n for n in trial.params if n not in rate)
        elif self._resweep_on_params is False:
            names = ()
        else:
            names = self._resweep_on_params
        candidates = []
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            if not trial.number - self._sweep_every < t.number < trial.number:
                continue
            own = t.user_attrs.get(SOURCE_KEY) == t.number
            if not own and not (self._placement == "offset" and _offset.swept_itself(t)):
                continue
            if any(t.params.get(n) != trial.params.get(n) for n in names):
                continue
            candidates.append(t)
        for t in sorted(candidates, key=lambda t: t.number, reverse=True):
            raw = t.user_attrs.get(BAND_KEY)
            band = _stored_band(raw)
            if band is not None or raw is None:
                return t, band
            _logger.warning(
                f"Trial {trial.number}: skipped trial {t.number}'s band, which is malformed "
                f"(`{BAND_KEY}` must be None or [low, high] with 0 < low < high, but got "
                f"{raw!r:.80})."
            )
        return None

    def _sweep_fixed_trial(self, trial: Trial, sweep_fn: SweepFn, fixed_lr: Any) -> Sweep | None:
        """Records a sweep for a trial whose rate is fixed (``sweep_fixed=True``); returns it."""
        storage, trial_id = trial.study._storage, trial._trial_id
        sweep, suggestion, reason = self._run(sweep_fn, trial.number, trial_id)
        if sweep is not None and suggestion is not None:
            info = {**dict(sweep.info), "param_name": self._param_name, "chosen_lr": fixed_lr}
            info["reason"] = FIXED
            write_sweep(storage, trial_id, replace(sweep, info=info), suggestion)
            storage.set_trial_user_attr(trial_id, SOURCE_KEY, trial.number)
            self._publish(trial.study, trial_id)
        else:
            _logger.warning(f"Trial {trial.number}: the sweep of a fixed rate failed ({reason}).")
        storage.set_trial_user_attr(trial_id, BAND_USED_KEY, None)
        storage.set_trial_user_attr(trial_id, REASON_KEY, reason or FIXED)
        return sweep


# --------------------------------------------------------------------------- attach

_CONFIG_FIELDS = frozenset(RangeTestConfig.__dataclass_fields__)
_ADAPTER_OPTIONS = frozenset(
    (
        "step_fn",
        "accumulation_steps",
        "scaler",
        "autocast_dtype",
        "device",
        "snapshot_device",
        "restore",
        "process_group",
    )
)


def _pytorch_sweep_fn(
    model: Any, optimizer: Any, loss_fn: Any, loader: Any, adapter_options: dict[str, Any]
) -> SweepFn:
    try:
        from optuna_lrrange.pytorch import _check_arguments, range_test
    except ImportError as e:  # pragma: no cover - torch is present in the test environment
        raise ImportError(
            "attach(trial, model, optimizer, ...) needs torch: `pip install optuna-lrrange[torch]`"
            ", or pass `sweep_fn=` for another framework."
        ) from e
    if loader is None:
        raise TypeError("`loader` must be an iterable of batches, but got None.")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, but got {type(loss_fn).__name__}.")
    config_keys = sorted(set(adapter_options) & _CONFIG_FIELDS)
    if config_keys:
        raise TypeError(
            "range-test settings belong to LRRangeSampler(...), not attach(), but got "
            f"{config_keys}."
        )
    unknown = sorted(set(adapter_options) - _ADAPTER_OPTIONS)
    if unknown:
        raise TypeError(
            f"`adapter_options` must be among {sorted(_ADAPTER_OPTIONS)}, but got {unknown}."
        )
    # Fail at attach, not silently at every sweep: the model and optimizer types, an
    # optimizer without param groups, both loss_fn and step_fn, accumulation_steps < 1.
    _check_arguments(
        model,
        optimizer,
        loss_fn,
        loader,
        adapter_options.get("step_fn"),
        adapter_options.get("accumulation_steps", 1),
    )

    def sweep_fn(config: RangeTestConfig) -> Sweep:
        return range_test(model, optimizer, loss_fn, loader, config=config, **adapter_options)

    return sweep_fn


def _distributed_trial(trial: Any) -> bool:
    """Whether ``trial`` is an ``optuna_integration.TorchDistributedTrial``."""
    if "optuna_integration.pytorch_distributed" not in sys.modules:
        return False
    from optuna_lrrange._distributed import is_torch_distributed_trial

    return is_torch_distributed_trial(trial)


def _distributed_group(trial: Any, model: Any) -> Any:
    from optuna_lrrange._distributed import is_ddp

    return None if is_ddp(model) else trial._group


def attach(
    trial: Trial | FixedTrial,
    model: Any = None,
    optimizer: Any = None,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    loader: Any = None,
    *,
    sweep_fn: SweepFn | None = None,
    **adapter_options: Any,
) -> None:
    """Hands the trial's model to the study's :class:`LRRangeSampler`.

    Call it in the objective once the model and optimizer exist and before the learning
    rate is suggested; the sampler runs the range test when it is. The model is held only
    until the trial ends (or the ``Trial`` object is garbage-collected).

    Args:
        trial: The running trial. A ``FixedTrial`` (re-running the objective with fixed
            parameters, outside a study) is accepted and ignored. Under
            ``torch.distributed``, an ``optuna_integration.TorchDistributedTrial``, with
            ``attach`` called on every rank: the sampler on rank 0 runs the sweep on all
            ranks together (see :func:`optuna_lrrange.pytorch.range_test`'s
            ``process_group``; a plain model sweeps over the trial's group) when
            ``trial.suggest_float`` asks for the learning rate on every rank, and the
            value is broadcast as ``TorchDistributedTrial`` broadcasts every value.
        model: The ``torch.nn.Module`` to probe.
        optimizer: Its ``torch.optim.Optimizer``.
        loss_fn: ``loss_fn(model(x), y)``, the loss of a batch ``(x, y)`` (or
            ``(x1, ..., xn, y)``); ``None`` for dict batches whose model returns its own
            loss (``model(**batch).loss``, Hugging Face); or
            ``optuna_lrrange.pytorch.batch_loss(fn)`` for ``fn(model, batch)``. See
            :func:`optuna_lrrange.pytorch.range_test`.
        loader: The batches, as :func:`optuna_lrrange.pytorch.range_test` takes them.
        sweep_fn: Instead of the PyTorch objects, any framework's sweep:
            ``sweep_fn(config) -> Sweep``, for example
            ``lambda c: optuna_lrrange.run_range_test(my_step, c)``. It must leave the
            model as it found it, also when it raises.
        adapter_options: Further arguments of :func:`optuna_lrrange.pytorch.range_test`
            (``step_fn``, ``accumulation_steps``, ``scaler``, ``autocast_dtype``,
            ``device``, ``snapshot_device``, ``restore``).

    Raises:
        TypeError: The arguments are of the wrong types, or both or neither of
            ``sweep_fn`` and the PyTorch objects are given.
        RuntimeError: The learning rate was already suggested in this trial.
    """
    if isinstance(trial, FixedTrial):
        return
    distributed = _distributed_trial(trial)
    if distributed and model is not None and sweep_fn is None:
        # The sweep runs on every rank of the trial's group; a DDP model brings its own.
        adapter_options.setdefault("process_group", _distributed_group(trial, model))
    if not distributed and not isinstance(trial, Trial):
        raise TypeError(
            f"`trial` must be the running optuna.trial.Trial, but got {type(trial).__name__}."
        )
    if sweep_fn is not None:
        if any(v is not None for v in (model, optimizer, loss_fn, loader)) or adapter_options:
            raise TypeError(
                "pass either `sweep_fn` or the PyTorch objects (model, optimizer, loss_fn, "
                "loader, adapter options), but got both."
            )
        if not callable(sweep_fn):
            raise TypeError(f"`sweep_fn` must be callable, but got {type(sweep_fn).__name__}.")
        fn: SweepFn = sweep_fn
    elif model is None:
        raise TypeError("`model` (with optimizer, loss_fn, loader) or `sweep_fn` must be given.")
    else:
        fn = _pytorch_sweep_fn(model, optimizer, loss_fn, loader, adapter_options)
    if distributed:
        from optuna_lrrange._distributed import attach_ranks

        attach_ranks(trial, fn)
        return

    sampler, fixed_above = _find_sampler(trial.study.sampler)
    if sampler is None:
        warnings.warn(
            "optuna_lrrange.attach: the study's sampler is "
            f"{type(trial.study.sampler).__name__}, not an LRRangeSampler, so no range test "
            "will run: create the study with sampler=optuna_lrrange.LRRangeSampler(...).",
            UserWarning,
            stacklevel=2,
        )
        return
    name = sampler.param_name
    params = trial.params
    system_attrs = trial.study._storage.get_trial_system_attrs(trial._trial_id)
    fixed_params = {**fixed_above, **(system_attrs.get("fixed_params") or {})}
    if name in params and name not in fixed_params:
        if "failed_trial" not in system_attrs:
            raise RuntimeError(
                f"`optuna_lrrange.attach` must be called before `trial.suggest_float({name!r}, "
                f"...)`, but trial {trial.number} already holds {name}={params[name]!r}."
            )
        # A trial retried by Optuna's Retry*TrialCallback is created holding the parameters
        # of its failed attempt: its rate is fixed.
        fixed_params[name] = params[name]
    key = _key(trial.study._storage, trial._trial_id)
    if name in fixed_params:
        sweep = None
        if sampler._sweep_fixed:
            sweep = sampler._sweep_fixed_trial(trial, fn, fixed_params[name])
        else:
            trial.set_user_attr(REASON_KEY, FIXED)
        if sampler.placement == "offset":
            _offset.suggest_fixed(sampler, trial, key, fixed_params[name], sweep)
        return
    token = _register(key, fn)
    # The Trial object's end also ends the entry (ask without tell, an objective that
    # raises before the sampler's after_trial): arguments hold no reference to the model.
    weakref.finalize(trial, _unregister, key, token)
    if sampler.placement == "offset":
        _offset.suggest_offset(sampler, trial)
