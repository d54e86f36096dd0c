"""Sweeps in optuna-dashboard: each sweep's plot as an artifact of its trial, and a trial note.

``LRRangeSampler(..., artifact_store=store)`` and ``LRReestimator(..., artifact_store=store)``
call :func:`publish_trial` after every sweep they record; ``optuna-lrrange dashboard`` calls
it for every trial of an existing study. For each of the trial's sweeps it uploads the plot
of :func:`optuna_lrrange.plot_sweep` as a PNG artifact, once
(``optuna.artifacts.upload_artifact``: any Optuna artifact store, any storage), and writes
the trial's note (``optuna_dashboard.save_note``): the band, the suggestion, the rate the
trial used and the plot, for every sweep. Text the user wrote in the note before the section
this module writes is kept.

While the trial runs, the plot is an artifact of the trial (``lrrange-sweep-<i>.png``), shown
in the trial's artifact list. A finished trial takes no new artifacts (Optuna refuses to
change it), so a back-filled plot is an artifact of the study instead
(``lrrange-trial-<number>-sweep-<i>.png``); the trial's note shows it all the same.

optuna-dashboard shows both on the trial's page when started with the same artifact store::

    optuna-dashboard sqlite:///study.db --artifact-dir artifacts

A failed upload never fails the trial: it is logged as a warning on the ``optuna.lrrange``
logger and recorded in the trial's ``lrrange:dashboard_error`` user attribute (cleared by a
later upload while the trial runs; a finished trial keeps it as the record of what failed).
"""

from __future__ import annotations

from collections.abc import Callable
import logging
import os
from pathlib import Path
import tempfile
from typing import TYPE_CHECKING, Any, TypeVar
import warnings

from optuna_lrrange._records import read_trial_records
from optuna_lrrange._sampler import REASON_KEY

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore
    from optuna.trial import FrozenTrial

__all__ = ["ERROR_KEY", "NOTE_HEADING", "check_artifact_store", "publish_trial"]

#: The user attribute that records why the last upload failed (``None`` once one succeeds).
ERROR_KEY = "lrrange:dashboard_error"
#: The heading of the note's section this module writes; text above it is the user's.
NOTE_HEADING = "## Learning-rate range test (optuna-lrrange)"
#: Artifact file names: ``lrrange-sweep-<i>.png`` for the trial's sweep ``i`` (a trial
#: artifact), ``lrrange-trial-<number>-sweep-<i>.png`` (a study artifact, back-filled).
FILE_PREFIX = "lrrange-sweep-"

_logger = logging.getLogger("optuna.lrrange")

T = TypeVar("T")


def check_artifact_store(artifact_store: Any) -> None:
    """Fails at once, not at every sweep, on a wrong store or a missing extra.

    Raises:
        TypeError: ``artifact_store`` is not an Optuna artifact store.
        ImportError: optuna-dashboard or matplotlib is not installed.
    """
    if not all(callable(getattr(artifact_store, m, None)) for m in ("write", "open_reader")):
        raise TypeError(
            "`artifact_store` must be an Optuna artifact store (for example "
            "optuna.artifacts.FileSystemArtifactStore(DIR)), but got "
            f"{type(artifact_store).__name__}."
        )
    for module in ("optuna_dashboard", "matplotlib"):
        try:
            __import__(module)
        except ImportError as e:
            raise ImportError(
                f"`artifact_store` needs {module.replace('_', '-')}: "
                "`pip install optuna-lrrange[dashboard]`."
            ) from e


def _quiet(fn: Callable[[], T]) -> T:
    """Runs ``fn`` without Optuna's experimental-feature warnings (artifacts are one)."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return fn()


def _fmt(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "none"


def _file_name(frozen: FrozenTrial, index: int) -> str:
    if frozen.state.is_finished():
        return f"lrrange-trial-{frozen.number}-sweep-{index}.png"
    return f"{FILE_PREFIX}{index}.png"


def _artifact_metas(owner: Any, storage: Any) -> list[Any]:
    import optuna

    return _quiet(lambda: optuna.artifacts.get_all_artifact_meta(owner, storage=storage))


def _uploaded(study: optuna.Study, frozen: FrozenTrial, store: ArtifactStore) -> dict[int, str]:
    """``{sweep index: URL path}`` of the trial's plots already uploaded.

    A plot counts only if ``store`` holds it: Optuna 5.0 records an artifact's metadata
    before it writes the file, so a failed upload leaves metadata that points at nothing.
    """
    storage = study._storage
    study_path = f"/artifacts/{study._study_id}"
    sources = (
        (frozen, FILE_PREFIX, f"{study_path}/{frozen._trial_id}"),
        (study, f"lrrange-trial-{frozen.number}-sweep-", study_path),
    )
    out: dict[int, str] = {}
    for owner, prefix, path in sources:
        for meta in _artifact_metas(owner, storage):
            name = meta.filename
            if name.startswith(prefix) and name.endswith(".png"):
                index = name[len(prefix) : -len(".png")]
                if index.isdigit() and int(index) not in out and _held(store, meta.artifact_id):
                    out[int(index)] = f"{path}/{meta.artifact_id}"
    return out


def _held(store: ArtifactStore, artifact_id: str) -> bool:
    """Whether ``store`` can open the artifact ``artifact_id``."""
    try:
        store.open_reader(artifact_id).close()
    except Exception:
        return False
    return True


def _upload_plot(
    study: optuna.Study, frozen: FrozenTrial, store: ArtifactStore, index: int, param_name: str
) -> str:
    """Uploads the plot of sweep ``index``; returns its URL path in optuna-dashboard."""
    import optuna

    from optuna_lrrange.visualization import plot_sweep

    ax = plot_sweep(frozen, index=index, param_name=param_name)
    finished = frozen.state.is_finished()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, _file_name(frozen, index))
        ax.figure.savefig(path, dpi=100)  # type: ignore[union-attr]
        artifact_id = _quiet(
            lambda: optuna.artifacts.upload_artifact(
                artifact_store=store,
                file_path=path,
                study_or_trial=study if finished else frozen,
                storage=study._storage,
                mimetype="image/png",
            )
        )
    if finished:
        return f"/artifacts/{study._study_id}/{artifact_id}"
    return f"/artifacts/{study._study_id}/{frozen._trial_id}/{artifact_id}"


def note_section(frozen: FrozenTrial, plots: dict[int, str], param_name: str = "lr") -> str:
    """The Markdown of the trial note's range-test section."""
    lines = [NOTE_HEADING, ""]
    records = read_trial_records(frozen)
    for i, (sweep, suggestion) in enumerate(records):
        info = sweep.info
        kind = info.get("kind", "trial")
        used = frozen.params.get(param_name) if i == 0 and kind == "trial" else None
        if used is None:
            used = info.get("chosen_lr")
        where = f" at step {info['step']}" if info.get("step") is not None else ""
        where += f", epoch {info['epoch']}" if info.get("epoch") is not None else ""
        lines.append(f"### Sweep {i} ({kind}{where})")
        lines.append("")
        band = None if suggestion is None else suggestion.band
        lines.append(
            f"- band: [{_fmt(band[0])}, {_fmt(band[1])}]" if band is not None else "- band: none"
        )
        if suggestion is not None:
            text = f"- suggestion: {_fmt(suggestion.lr)} ({suggestion.method})"
            if suggestion.reason:
                text += f"; {suggestion.reason}"
            lines.append(text)
        lines.append(f"- rate used: {_fmt(used)}")
        if info.get("previous_lr") is not None:
            lines.append(f"- rate before: {_fmt(info['previous_lr'])}")
        reason = info.get("reason") or info.get("kept_reason")
        if reason:
            lines.append(f"- note: {reason}")
        lines.append(f"- {len(sweep)} steps, stopped: {sweep.stop_reason}")
        if i in plots:
            lines += ["", f"![sweep {i}]({plots[i]})"]
        lines.append("")
    if not records:
        reason = frozen.user_attrs.get(REASON_KEY)
        lines.append(f"No sweep of its own ({reason})." if reason else "No sweep of its own.")
    return "\n".join(lines).rstrip() + "\n"


def publish_trial(
    study: optuna.Study,
    trial: FrozenTrial | int,
    artifact_store: ArtifactStore,
    *,
    param_name: str = "lr",
) -> list[str]:
    """Uploads the plot of every sweep of a trial not yet uploaded, and rewrites its note.

    Args:
        study: The trial's study.
        trial: The trial, or its id in the study's storage.
        artifact_store: Any Optuna artifact store; optuna-dashboard must be started with
            the same one to show the plots.
        param_name: The learning-rate parameter (its value is the rate the trial used).

    Returns:
        The URL paths of the plots uploaded now (none when every plot was there already).

    Raises:
        Exception: Whatever the upload or the storage raised; the sampler and the
            re-estimator call :func:`publish_safely`, which never raises.
    """
    import optuna
    from optuna_dashboard import get_note, save_note

    storage = study._storage
    trial_id = trial if isinstance(trial, int) else trial._trial_id
    frozen = storage.get_trial(trial_id)
    plots = _uploaded(study, frozen, artifact_store)
    new = []
    for index in range(len(read_trial_records(frozen))):
        if index not in plots:
            plots[index] = _upload_plot(study, frozen, artifact_store, index, param_name)
            new.append(plots[index])
    live = optuna.trial.Trial(study, trial_id)
    old = get_note(live)
    user_part = old.split(NOTE_HEADING, 1)[0].rstrip()
    section = note_section(frozen, plots, param_name)
    body = f"{user_part}\n\n{section}" if user_part else section
    if body != old:
        save_note(live, body)
    if frozen.user_attrs.get(ERROR_KEY) is not None and not frozen.state.is_finished():
        storage.set_trial_user_attr(trial_id, ERROR_KEY, None)
    return new


def publish_safely(
    study: optuna.Study, trial_id: int, artifact_store: ArtifactStore, param_name: str
) -> str | None:
    """:func:`publish_trial` that never raises: a failure is logged and recorded.

    Returns:
        ``None``, or the failure as recorded in ``lrrange:dashboard_error``.
    """
    try:
        publish_trial(study, trial_id, artifact_store, param_name=param_name)
        return None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    number = trial_id
    try:
        number = study._storage.get_trial_number_from_id(trial_id)
        study._storage.set_trial_user_attr(trial_id, ERROR_KEY, error)
    except Exception as e:  # the storage itself failed: the log is all there is
        error += f" (and recording it failed: {type(e).__name__}: {e})"
    _logger.warning(
        f"Trial {number}: the sweep plot was not uploaded to the artifact store ({error}); "
        "the trial goes on. Run `optuna-lrrange dashboard` later to upload it."
    )
    return error


def publish_study(
    study: optuna.Study, artifact_store: ArtifactStore, *, param_name: str = "lr"
) -> tuple[int, int, list[tuple[int, str]]]:
    """Back-fills a study: :func:`publish_trial` for every trial that holds a sweep.

    Returns:
        ``(trials published, plots uploaded, [(trial number, error), ...])``.
    """
    trials = published = 0
    errors = []
    for frozen in study.get_trials(deepcopy=False):
        if not read_trial_records(frozen):
            continue
        try:
            published += len(
                publish_trial(study, frozen._trial_id, artifact_store, param_name=param_name)
            )
            trials += 1
        except Exception as e:
            errors.append((frozen.number, f"{type(e).__name__}: {e}"))
    return trials, published, errors


def file_system_store(directory: str | Path) -> ArtifactStore:
    """A ``FileSystemArtifactStore`` in ``directory`` (created if missing)."""
    from optuna.artifacts import FileSystemArtifactStore

    Path(directory).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))
