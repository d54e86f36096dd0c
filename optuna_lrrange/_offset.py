"""The sampler's ``"offset"`` placement: the glue between Optuna and ``core._placement``.

With ``LRRangeSampler(placement="offset")``, the default, :func:`optuna_lrrange.attach`
suggests a second parameter, ``"<param_name>:offset"``, with the same distribution in
every trial (``core.OFFSET_RANGE``, in decades), so the base sampler's joint model
(multivariate TPE, GP, CMA-ES) sees it with every other parameter. When the objective
then asks for the rate, the sampler sweeps, finds the sweep's anchor (its drop point) and
returns ``anchor * 10 ** offset`` clipped into ``[low, high]`` (and bisected below where
trials of the same configuration diverged); the rate itself never reaches the base
sampler. Recorded on the trial, besides the band mode's keys:

    ``lrrange:placement``  ``"offset"``
    ``lrrange:anchor``     the anchor the rate was placed from (the trial's own sweep's, a
                           reused one's, or the study's median when the trial's sweep gave
                           none), or ``None`` when the rate was sampled in the full range
    ``lrrange:offset``     the offset the rate was placed at, or ``None`` when it was not
                           used
    ``lrrange:cap``        the divergence cap in force on the offset's draws (written
                           when the offset was drawn), or ``None``

``lrrange:band_used`` holds the rates the offset's range reaches from the anchor (inside
``[low, high]``; for a rate moved below a divergence, the interval it bisects), and
``lrrange:source`` the trial whose sweep gave the anchor (``None`` for the study's median).
"""

from __future__ import annotations

from dataclasses import replace
import math
import threading
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.samplers import BaseSampler, GridSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optuna_lrrange._records import get_sweeps, write_sweep
from optuna_lrrange.core import _placement

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import Trial

    from optuna_lrrange._sampler import LRRangeSampler
    from optuna_lrrange.core import Sweep

PLACEMENT_KEY = "lrrange:placement"
ANCHOR_KEY = "lrrange:anchor"
OFFSET_KEY = "lrrange:offset"
CAP_KEY = "lrrange:cap"

#: Reasons recorded in ``lrrange:reason`` by the offset placement.
NO_ANCHOR = "no_anchor"
CLIPPED = "clipped"
ANCHOR_MOVED = "anchor_moved"
SETTLED = "settled"
RATE_CAPPED = "rate_capped"

#: The offset's distribution, identical in every trial.
OFFSET_DISTRIBUTION = FloatDistribution(*_placement.OFFSET_RANGE)

# The offset a trial with a fixed rate must carry (set by attach, read by the sampler).
_wanted: dict[tuple[int, int], float] = {}
_wanted_lock = threading.Lock()


def offset_name(param_name: str) -> str:
    """The offset parameter's name: ``"<param_name>:offset"``."""
    return f"{param_name}:offset"


def want_offset(key: tuple[int, int], value: float) -> None:
    with _wanted_lock:
        _wanted[key] = value


def forget(key: tuple[int, int]) -> None:
    with _wanted_lock:
        _wanted.pop(key, None)


def _take_wanted(key: tuple[int, int]) -> float | None:
    with _wanted_lock:
        return _wanted.pop(key, None)


def check_grid(base_sampler: BaseSampler | None, param_name: str) -> None:
    """Refuses a ``GridSampler`` that grids the rate instead of its offset.

    With the offset placement the rate never reaches the base sampler: a grid must hold
    the offset (then each grid point is an offset from the trial's anchor), and a grid
    value of the rate would go unused. Without this check every trial fails in
    ``attach`` with ``GridSampler``'s own message about a parameter the objective never
    named.
    """
    grid = getattr(base_sampler, "_search_space", None)
    if not isinstance(base_sampler, GridSampler) or not isinstance(grid, dict):
        return
    name = offset_name(param_name)
    if name not in grid or param_name in grid:
        raise ValueError(
            f"With LRRangeSampler(placement='offset'), a GridSampler's grid must hold `{name}` "
            f"and not `{param_name}` (the rate is the sweep's anchor x 10**offset, the offset "
            f"in decades within {_placement.OFFSET_RANGE}), but got a grid over "
            f"{sorted(grid)}: grid `{name}` instead, or use placement='band'."
        )


# ------------------------------------------------------------------ what the study has seen


def own_anchors(study: Study, exclude: int | None = None) -> list[float]:
    """The anchors of the trials whose own sweep gave one (``lrrange:source`` is itself),
    as the sweeps gave them: an anchor moved into the trial's range is left out."""
    out = []
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
        a = t.user_attrs.get(ANCHOR_KEY)
        own = t.user_attrs.get("lrrange:source") == t.number
        reason = t.user_attrs.get("lrrange:reason")
        moved = isinstance(reason, str) and ANCHOR_MOVED in reason
        if own and a is not None and not moved and t._trial_id != exclude:
            out.append(float(a))
    return out


def settled(
    sampler: LRRangeSampler, study: Study, trial: FrozenTrial
) -> tuple[float, list[int]] | None:
    """``(anchor, trials)``: the settled anchor the trial takes instead of sweeping and the
    trials whose sweeps gave it, or ``None`` when it must sweep.

    Only trials whose parameters equal this trial's (every parameter it holds when the rate
    is asked, the rate's own offset aside) count: their sweeps' anchors, and how many of
    them took a settled anchor since the newest of those sweeps.
    """
    if not sampler._narrow_sweeps:
        return None
    offset = offset_name(sampler.param_name)
    mine = {k: v for k, v in trial.params.items() if k != offset}
    swept: list[tuple[int, float]] = []
    took: list[int] = []
    for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
        if t._trial_id == trial._trial_id or any(
            k not in t.params or t.params[k] != v for k, v in mine.items()
        ):
            continue
        reason = t.user_attrs.get("lrrange:reason")
        a = t.user_attrs.get(ANCHOR_KEY)
        if isinstance(reason, str) and reason.startswith(SETTLED):
            took.append(t.number)
        elif (
            t.user_attrs.get("lrrange:source") == t.number
            and a is not None
            and not (isinstance(reason, str) and ANCHOR_MOVED in reason)
        ):
            swept.append((t.number, float(a)))
    swept.sort()
    newest = swept[-1][0] if swept else -1
    a = _placement.settled_anchor([x for _, x in swept], sum(n > newest for n in took))
    if a is None:
        return None
    return a, [n for n, _ in swept[-_placement.SETTLE_SWEEPS :]]


def _own_sweep(t: FrozenTrial) -> Sweep | None:
    for s in get_sweeps(t):
        if s.info.get("kind") == "trial" and s.info.get("trial_number") == t.number:
            return s
    return None


def swept_itself(t: FrozenTrial) -> bool:
    """Whether ``t`` recorded a sweep of its own, whether or not it gave an anchor.

    ``lrrange:source`` is ``None`` on a trial whose sweep gave no anchor, but the sweep
    ran: ``sweep_every`` counts it, as the band placement counts a sweep without a band.
    """
    return _own_sweep(t) is not None


def sweep_anchor(t: FrozenTrial) -> float | None:
    """The anchor of ``t``'s own sweep, found again from the sweep record itself.

    Not from ``lrrange:anchor``: the sweep record is stored before the trial's placement
    attributes, so another worker can see the one without the others yet.
    """
    sweep = _own_sweep(t)
    return None if sweep is None else _placement.anchor(sweep.lrs, sweep.losses)[0]


def _loss(study: Study, t: FrozenTrial) -> float:
    """The trial's result, lower is better; NaN for a failed or pruned one."""
    if t.state != TrialState.COMPLETE or t.values is None:
        return math.nan
    if len(study.directions) > 1:
        return 0.0  # no order between the results: only failures and prunes count
    v = float(t.values[0])
    return -v if study.direction == StudyDirection.MAXIMIZE else v


def _finished(study: Study) -> list[FrozenTrial]:
    """The trials whose result is known: complete, pruned or failed."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return study._storage.get_all_trials(study._study_id, deepcopy=False, states=states)


def cap(study: Study, param_name: str) -> float | None:
    """The divergence cap learned from the finished trials placed from an anchor."""
    offsets, losses = [], []
    for t in _finished(study):
        a, lr = t.user_attrs.get(ANCHOR_KEY), t.params.get(param_name)
        if a is None or lr is None:
            continue
        offsets.append(math.log10(float(lr) / float(a)))
        losses.append(_loss(study, t))
    return _placement.divergence_cap(offsets, losses)


def below_divergence(
    study: Study, trial: FrozenTrial, param_name: str, value: float, low: float, high: float
) -> tuple[float, tuple[float, float], str] | None:
    """``(rate, (good, edge), why)`` for a rate at or above where its configuration's
    trials diverged (``core._placement.below_divergence``), else ``None``.

    The configuration is the trial's categorical parameters (a batch size, an optimizer,
    an architecture choice can move the rates that diverge by decades); the finished
    trials with the same values, whatever their other parameters, are the evidence.
    """
    own = {param_name, offset_name(param_name)}
    config = {
        n: v
        for n, v in trial.params.items()
        if n not in own and isinstance(trial.distributions.get(n), CategoricalDistribution)
    }
    rates, losses = [], []
    for t in _finished(study):
        lr = t.params.get(param_name)
        if not isinstance(lr, (int, float)) or not lr > 0:
            continue
        if any(t.params.get(n) != v for n, v in config.items()):
            continue
        rates.append(math.log10(float(lr)))
        losses.append(_loss(study, t))
    got = _placement.below_divergence(math.log10(value), rates, losses)
    if got is None:
        return None
    from optuna_lrrange._sampler import _fmt

    middle, good, edge = (10.0**x for x in got)
    rate = min(max(middle, low), high)
    where = ", ".join(f"{n}={v!r}" for n, v in config.items())
    why = (
        f"{RATE_CAPPED}: {_fmt(value)} is at or above {_fmt(edge)}, the lowest rate that went "
        f"very bad above every rate that went well (up to {_fmt(good)}) "
        f"{f'in the trials with {where}' if where else 'in the study'}: placed at "
        f"{_fmt(rate)}, between the two"
    )
    return rate, (max(good, low), min(edge, high)), why


def lr_is_fixed(sampler: LRRangeSampler, study: Study, trial: FrozenTrial) -> bool:
    """Whether the trial's rate is fixed (enqueued, or a ``PartialFixedSampler`` above)."""
    from optuna_lrrange._sampler import _find_sampler, _fixes

    name = sampler.param_name
    fixed = trial.system_attrs.get("fixed_params") or {}
    return (
        name in fixed
        or name in _find_sampler(study.sampler)[1]
        or _fixes(sampler._base_sampler, name)
    )


# ------------------------------------------------------------------ sampling the offset


def relative_space(
    sampler: LRRangeSampler,
    study: Study,
    trial: FrozenTrial,
    search_space: dict[str, BaseDistribution],
) -> dict[str, BaseDistribution]:
    """The base sampler's relative search space, with the offset kept below the cap.

    The offset's entry is narrowed to end at the divergence cap (the base sampler then
    samples inside it; the stored distribution stays the same in every trial), and
    dropped when the trial's rate is fixed: it then follows the fixed rate.
    """
    name = offset_name(sampler.param_name)
    if name not in search_space:
        return search_space
    if lr_is_fixed(sampler, study, trial):
        return {k: v for k, v in search_space.items() if k != name}
    limit = cap(study, sampler.param_name)
    study._storage.set_trial_user_attr(trial._trial_id, CAP_KEY, limit)
    lo, hi = _placement.capped_range(limit)
    if (lo, hi) == _placement.OFFSET_RANGE:
        return search_space
    return {**search_space, name: FloatDistribution(lo, hi)}


def sample_offset(
    sampler: LRRangeSampler,
    study: Study,
    trial: FrozenTrial,
    param_distribution: BaseDistribution,
    key: tuple[int, int],
) -> float:
    """The offset of a trial whose base sampler did not sample it jointly.

    A trial with a fixed rate gets the offset that rate sits at (set by ``attach``); any
    other draw comes from the base sampler's independent sampler inside the prior
    interval, lowered below the divergence cap.
    """
    name = offset_name(sampler.param_name)
    if param_distribution != OFFSET_DISTRIBUTION:
        raise ValueError(
            f"`{name}` is the offset LRRangeSampler(placement='offset') suggests, with "
            f"{OFFSET_DISTRIBUTION!r}, but got {param_distribution!r}: rename the objective's "
            "parameter."
        )
    wanted = _take_wanted(key)
    if wanted is not None:
        return wanted
    limit = cap(study, sampler.param_name)
    lo, hi = _placement.prior_interval(limit)
    study._storage.set_trial_user_attr(trial._trial_id, CAP_KEY, limit)
    from optuna_lrrange._sampler import _quiet

    _quiet.param_name = name
    try:
        value = sampler._base_sampler.sample_independent(
            study, trial, name, FloatDistribution(lo, hi)
        )
    finally:
        _quiet.param_name = None
    return float(value)


def suggest_offset(sampler: LRRangeSampler, trial: Trial) -> None:
    """Suggests the offset in ``attach``, before the objective asks for the rate."""
    name = offset_name(sampler.param_name)
    retried = "failed_trial" in trial.study._storage.get_trial_system_attrs(trial._trial_id)
    if name in trial.params and not retried:
        raise RuntimeError(
            f"`{name}` must be suggested only by optuna_lrrange.attach with "
            "LRRangeSampler(placement='offset'), but trial "
            f"{trial.number} already holds {name}={trial.params[name]!r}: rename the "
            "objective's parameter."
        )
    trial.suggest_float(name, *_placement.OFFSET_RANGE)


def suggest_fixed(
    sampler: LRRangeSampler,
    trial: Trial,
    key: tuple[int, int],
    lr: Any,
    sweep: Sweep | None,
) -> None:
    """Suggests the offset of a trial whose rate is fixed: the offset that rate sits at.

    The anchor is the trial's own sweep's (``sweep_fixed=True``) or else the study's
    median; with neither, the offset is drawn as in any trial and not recorded as used.
    """
    storage, trial_id = trial.study._storage, trial._trial_id
    a, source = None, None
    if sweep is not None:
        a, _ = _placement.anchor(sweep.lrs, sweep.losses)
        source = trial.number if a is not None else None
    if a is None:
        a = _placement.median_anchor(own_anchors(trial.study, exclude=trial_id))
    wanted = None
    if a is not None and isinstance(lr, (int, float)) and lr > 0:
        lo, hi = _placement.OFFSET_RANGE
        wanted = min(max(math.log10(float(lr) / a), lo), hi)
        want_offset(key, wanted)
    offset = trial.suggest_float(offset_name(sampler.param_name), *_placement.OFFSET_RANGE)
    forget(key)
    used = wanted is not None and offset == wanted
    storage.set_trial_user_attr(trial_id, PLACEMENT_KEY, "offset")
    storage.set_trial_user_attr(trial_id, ANCHOR_KEY, a if used else None)
    storage.set_trial_user_attr(trial_id, OFFSET_KEY, offset if used else None)
    storage.set_trial_user_attr(trial_id, "lrrange:source", source if used else None)


# ------------------------------------------------------------------ placing the rate


def place_rate(
    sampler: LRRangeSampler,
    study: Study,
    trial: FrozenTrial,
    param_name: str,
    distribution: FloatDistribution,
) -> float:
    """Sweeps (or reuses a sweep), finds the anchor and places the rate at the offset."""
    from optuna_lrrange._sampler import (
        NO_BAND,
        NO_PROBE,
        _fmt,
        _key,
        _logger,
        _lookup,
        _quiet,
    )

    storage, trial_id = study._storage, trial._trial_id
    low, high = distribution.low, distribution.high
    offset = trial.params.get(offset_name(param_name))
    a: float | None = None
    source: int | None = None
    reason: str | None = None
    record = None
    narrowed = False
    sweep_fn = _lookup(_key(storage, trial_id))
    if offset is None or sweep_fn is None:
        reason = (
            f"{NO_PROBE}: call optuna_lrrange.attach(trial, ...) before "
            f"trial.suggest_float({param_name!r}, ...)"
        )
    else:
        reusable = sampler._reusable(study, trial)
        settled_on = None if reusable is not None else settled(sampler, study, trial)
        if settled_on is not None:
            a, numbers = settled_on
            reason = (
                f"{SETTLED}: the sweeps of trials {numbers}, with the same parameters, agree; "
                f"placed from their median anchor {_fmt(a)} without a sweep"
            )
        elif reusable is not None:
            reused = reusable[0]
            a = sweep_anchor(reused)  # its own sweep's, not a median it borrowed
            source = reused.number if a is not None else None
            reason = None if a is not None else f"{NO_ANCHOR}: trial {reused.number}'s sweep"
        else:
            config = sampler.config
            span = None
            if sampler._narrow_sweeps and config.mode == "exp":
                span = _placement.sweep_span(
                    own_anchors(study, exclude=trial_id),
                    config.start_lr,
                    config.end_lr,
                    config.num_iter,
                )
            if span is not None:
                config = replace(config, start_lr=span[0], end_lr=span[1], num_iter=span[2])
                narrowed = True
            sweep, suggestion, failed = sampler._run(sweep_fn, trial.number, trial_id, config)
            if sweep is None or suggestion is None:
                reason = failed
            else:
                record = (sweep, suggestion)
                a, why = _placement.anchor(sweep.lrs, sweep.losses)
                source = trial.number if a is not None else None
                reason = None if a is not None else f"{NO_ANCHOR}: {NO_BAND}: {why}"
        if a is None:
            a = _placement.median_anchor(own_anchors(study, exclude=trial_id))
            if a is not None:
                reason = f"{reason}; placed from the study's median anchor {_fmt(a)}"
    if a is None or offset is None:
        if offset is not None:
            reason = f"{reason}; sampled in the full range"
        _quiet.param_name = param_name
        try:
            value = float(
                sampler._base_sampler.sample_independent(study, trial, param_name, distribution)
            )
        finally:
            _quiet.param_name = None
        band_used = [low, high]
        used_offset = None
    else:
        moved = _placement.in_reach(a, low, high)
        if moved != a:
            note = (
                f"{ANCHOR_MOVED}: every offset of the prior from the anchor {_fmt(a)} lands "
                f"outside [{_fmt(low)}, {_fmt(high)}]; placed from {_fmt(moved)}"
            )
            reason = note if reason is None else f"{reason}; {note}"
            a = moved
        value = _placement.place(a, float(offset), low, high)
        band_used = list(_placement.reachable(a, low, high))
        used_offset = float(offset)
        raw_rate = a * 10.0**used_offset
        if value != raw_rate:
            note = (
                f"{CLIPPED}: anchor {_fmt(a)} x 10**{used_offset:.3g} = {_fmt(raw_rate)} lies "
                f"outside [{_fmt(low)}, {_fmt(high)}]"
            )
            reason = note if reason is None else f"{reason}; {note}"
    capped = below_divergence(study, trial, param_name, value, low, high)
    if capped is not None:
        value, interval, note = capped
        band_used = list(interval)  # the rate is its middle
        reason = note if reason is None else f"{reason}; {note}"
    if reason is not None and not reason.startswith((CLIPPED, SETTLED, RATE_CAPPED)):
        _logger.warning(f"Trial {trial.number}: `{param_name}` = {_fmt(value)} ({reason}).")
    if record is not None:
        sweep, suggestion = record
        info = {
            **dict(sweep.info),
            "param_name": param_name,
            "low": low,
            "high": high,
            "band_used": band_used,
            "chosen_lr": value,
            "reason": reason,
            "placement": "offset",
            "anchor": a,
            "offset": used_offset,
            "narrowed": narrowed,
        }
        write_sweep(storage, trial_id, replace(sweep, info=info), suggestion)
    storage.set_trial_user_attr(trial_id, PLACEMENT_KEY, "offset")
    storage.set_trial_user_attr(trial_id, ANCHOR_KEY, None if used_offset is None else a)
    storage.set_trial_user_attr(trial_id, OFFSET_KEY, used_offset)
    storage.set_trial_user_attr(trial_id, "lrrange:band_used", band_used)
    storage.set_trial_user_attr(trial_id, "lrrange:source", source)
    storage.set_trial_user_attr(trial_id, "lrrange:reason", reason)
    if record is not None:
        sampler._publish(study, trial_id)
    return value
