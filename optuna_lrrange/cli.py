"""The ``optuna-lrrange`` command: the demo study, and export and plots from a storage.

Commands::

    optuna-lrrange demo [--storage URL] [--study-name NAME] [--n-trials N] [--quick] [--out DIR]
    optuna-lrrange sweeps --storage URL --study NAME [--format csv|parquet] [--summary] -o FILE
    optuna-lrrange plot --storage URL --study NAME --kind {sweep,loss-change,overlay,bands}
                        [--trial N] [--index I] -o FILE.png
    optuna-lrrange dashboard --storage URL --artifact-dir DIR [--study NAME]

A storage is an RDB URL (``sqlite:///path.db``, ``postgresql://...``) or ``journal:PATH``
for a journal file. ``sweeps`` and ``plot`` only read: they never create or change a
storage (a missing or empty file, or a database without Optuna's tables, is an error, not a
new storage). A user error (a wrong URL, an unknown study name, an option out of range, an
output path that cannot be written) exits with status 2 and a one-line message on stderr
(no traceback). Messages go to the logger ``optuna.lrrange``, under optuna's own
hierarchy, so ``optuna.logging.set_verbosity`` governs it (a logger outside the
``optuna.`` hierarchy would ignore it); ``--verbose`` shows them.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
import contextlib
import importlib.util
import logging
from pathlib import Path
import sys
import time
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    import optuna

logger = logging.getLogger("optuna.lrrange")

DEFAULT_DEMO_STORAGE = "sqlite:///studies/demo/demo.db"
DEFAULT_DEMO_OUT = "studies/demo"
PLOT_KINDS = ("sweep", "loss-change", "overlay", "bands")


class CLIError(Exception):
    """A user error: reported on stderr with exit status 2, without a traceback."""


#: Tables every Optuna RDB storage holds; a reading command refuses a database without them
#: rather than let Optuna create them.
_OPTUNA_TABLES = ("studies", "version_info", "alembic_version")


def _sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names, in any spelling (``sqlite:///rel.db``,
    ``sqlite:////abs.db``, ``sqlite+pysqlite:///...``, ``sqlite:///file:x.db?uri=true``);
    ``None`` for an in-memory database or a URL of another backend.

    Raises:
        CLIError: The URL cannot be parsed.
    """
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception as e:
        raise CLIError(f"cannot open storage {url!r}: {e}") from None
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database.startswith("file:"):  # an SQLite URI filename (with ?uri=true)
        database = database[len("file:") :].split("?", 1)[0]
        if database.startswith("//"):
            database = database[2:]
    if database in ("", ":memory:"):
        return None
    return Path(database)


def _check_readable_file(path: Path, url: str, what: str) -> None:
    """Refuses a missing or empty storage file, before anything opens (and so creates) it."""
    if not path.is_file():
        raise CLIError(f"no {what} file at {str(path)!r} (from --storage {url!r}).")
    if path.stat().st_size == 0:
        raise CLIError(
            f"--storage must name an existing Optuna storage, but {str(path)!r} is an empty "
            f"file (from --storage {url!r})."
        )


def _check_optuna_schema(url: str) -> None:
    """Refuses an RDB database that does not hold Optuna's tables, without writing to it.

    ``RDBStorage`` would create the tables (and stamp a schema version) in any database it
    opens; a reading command must leave a mistyped database as it found it.
    """
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
    except Exception as e:
        raise CLIError(f"cannot open storage {url!r}: {_first_line(e)}") from None
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    except Exception as e:
        raise CLIError(f"cannot open storage {url!r}: {_first_line(e)}") from None
    finally:
        engine.dispose()
    missing = [name for name in _OPTUNA_TABLES if name not in tables]
    if missing:
        raise CLIError(
            f"--storage must name an existing Optuna storage, but {url!r} holds no Optuna "
            f"tables (missing: {', '.join(missing)})."
        )


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def open_storage(url: str, *, create: bool = False) -> optuna.storages.BaseStorage:
    """The storage ``url`` names.

    Args:
        url: An RDB URL or ``journal:PATH``.
        create: Allow creating a new storage. Reading commands pass ``False``: then a
            missing or empty file, or a database without Optuna's tables, is an error, and
            nothing is created or written (a mistyped path never becomes a new database).

    Raises:
        CLIError: The URL cannot be opened.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:"):
        path = Path(url[len("journal:") :])
        if create:
            _make_parent(path, "--storage")
        else:
            _check_readable_file(path, url, "journal")
        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except Exception as e:
            raise CLIError(f"cannot open journal storage {url!r}: {e}") from None
    if "://" not in url:
        raise CLIError(
            f"--storage must be an RDB URL such as 'sqlite:///study.db' or 'journal:PATH', "
            f"but got {url!r}."
        )
    db = _sqlite_file(url)
    if create:
        if db is not None:
            _make_parent(db, "--storage")
    else:
        if db is not None:
            _check_readable_file(db, url, "SQLite")
        _check_optuna_schema(url)
    try:
        with _quiet_optuna():
            return RDBStorage(url, skip_table_creation=not create)
    except Exception as e:
        raise CLIError(f"cannot open storage {url!r}: {_first_line(e)}") from None


def _make_parent(path: Path, option: str) -> None:
    """Creates the folder ``path`` goes into; a clear error where it cannot be."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(
            f"{option} must be a path whose folder can be created, but got {str(path)!r} "
            f"({_os_reason(path, e)})."
        ) from None


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing one of ``folder`` and its ancestors if it is not a folder (so
    that ``folder`` cannot be created), else ``None``."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder if folder.exists() and not folder.is_dir() else None


def _check_folder(folder: Path, option: str, given: str) -> None:
    """Refuses, before any work, a folder that cannot be created (``given`` as typed)."""
    blocking = _blocking_file(folder)
    if blocking is not None:
        raise CLIError(
            f"{option} must be a path whose folder can be created, but got {given!r} "
            f"({str(blocking)!r} is not a folder)."
        )


def _os_reason(path: Path, error: OSError) -> str:
    """Why ``path`` could not be written: the ancestor that is not a folder, else the OS's
    reason without the errno."""
    blocking = _blocking_file(path.parent)
    if blocking is not None:
        return f"{str(blocking)!r} is not a folder"
    return error.strerror or str(error)


@contextlib.contextmanager
def _writing(path: Path, option: str) -> Iterator[None]:
    """Creates the folder ``path`` goes into; an ``OSError`` writing it becomes a
    :class:`CLIError` naming the path."""
    _make_parent(path, option)
    try:
        yield
    except OSError as e:
        raise CLIError(f"cannot write {option} {str(path)!r}: {_os_reason(path, e)}.") from None


def _check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise CLIError(f"`{option} >= 1` must hold, but got {value}.")


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Silences optuna's own logging while a storage is opened (it logs on failure)."""
    optuna_logger = logging.getLogger("optuna")
    level = optuna_logger.level
    optuna_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        optuna_logger.setLevel(level)


def load_study(url: str, name: str) -> optuna.Study:
    """The study ``name`` in the storage at ``url``.

    Raises:
        CLIError: The storage cannot be opened or holds no study of that name (the
            message lists the studies it holds).
    """
    import optuna

    storage = open_storage(url)
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as e:
        raise CLIError(f"cannot read studies from {url!r}: {e}") from None
    if name not in names:
        listed = ", ".join(repr(n) for n in sorted(names)) if names else "none"
        raise CLIError(f"no study named {name!r} in {url!r}; the studies there: {listed}.")
    return optuna.load_study(study_name=name, storage=storage)


# --------------------------------------------------------------------------- commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from optuna_lrrange import _demo

    settings = _demo.QUICK if args.quick else _demo.FULL
    _check_positive(args.n_trials, "--n-trials")
    _check_folder(Path(args.out), "--out", args.out)
    if args.n_trials is not None:
        settings = _demo.DemoSettings(
            n_trials=args.n_trials,
            epochs=settings.epochs,
            num_iter=settings.num_iter,
            batch_size=settings.batch_size,
        )
    storage = open_storage(args.storage, create=True)
    print(
        f"Demo: {settings.n_trials} trials of a 1-D CNN on MNIST-1D "
        f"({settings.epochs} epochs each, {settings.num_iter}-step range test), "
        f"study {args.study_name!r} in {args.storage}",
        file=sys.stderr,
    )
    start = time.perf_counter()
    study = _demo.run_demo(
        storage,
        args.study_name,
        settings,
        seed=args.seed,
        show_progress_bar=not args.no_progress,
    )
    elapsed = time.perf_counter() - start
    with _writing(Path(args.out) / "plot.png", "--out"):
        plots = _demo.write_plots(study, args.out)
    print(_demo.summary(study, plots))
    print(f"\nRan {settings.n_trials} trials in {elapsed:.1f} s; storage: {args.storage}")
    return 0


def _cmd_sweeps(args: argparse.Namespace) -> int:
    fmt = args.format
    if fmt is None:
        fmt = "parquet" if str(args.output).endswith(".parquet") else "csv"
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise CLIError(
            "--format parquet needs pyarrow, which is not installed: `pip install pyarrow` "
            "(or use --format csv)."
        )
    _check_positive(args.sma, "--sma")
    if args.output == "-" and fmt != "csv":
        raise CLIError("writing to stdout ('-o -') needs --format csv.")
    if args.output != "-":
        _check_folder(Path(args.output).parent, "-o", args.output)
    study = load_study(args.storage, args.study)
    from optuna_lrrange.analysis import sweeps_dataframe, sweeps_summary

    frame = sweeps_summary(study) if args.summary else sweeps_dataframe(study, sma=args.sma)
    out = args.output
    if out == "-":
        frame.to_csv(sys.stdout, index=False)
        return 0
    with _writing(Path(out), "-o"):
        if fmt == "csv":
            frame.to_csv(out, index=False)
        else:
            frame.to_parquet(out, index=False)
    what = "sweeps" if args.summary else "sweep steps"
    print(f"wrote {len(frame)} rows ({what}) to {out}", file=sys.stderr)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    if args.trial is not None and args.kind in ("overlay", "bands"):
        raise CLIError(f"--trial applies to --kind sweep and loss-change, not {args.kind}.")
    _check_positive(args.dpi, "--dpi")
    _check_image_format(args.output)
    _check_folder(Path(args.output).parent, "-o", args.output)
    study = load_study(args.storage, args.study)
    import optuna_lrrange

    try:
        if args.kind == "sweep":
            ax = optuna_lrrange.plot_sweep(study, trial=args.trial, index=args.index)
        elif args.kind == "loss-change":
            ax = optuna_lrrange.plot_loss_change(study, trial=args.trial, index=args.index)
        elif args.kind == "overlay":
            ax = optuna_lrrange.plot_sweeps(study, param_name=args.param_name)
        else:
            ax = optuna_lrrange.plot_bands(study, param_name=args.param_name)
    except ValueError as e:
        raise CLIError(str(e)) from None
    with _writing(Path(args.output), "-o"):
        cast("Figure", ax.figure).savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _check_image_format(output: str) -> None:
    """Refuses, before any work, a file name whose extension matplotlib cannot write."""
    if importlib.util.find_spec("matplotlib") is None:
        return  # the plot function raises the error that names the extra to install
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(output).suffix.lower().lstrip(".")
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    if suffix and suffix not in formats:
        raise CLIError(
            f"-o must end in an image format matplotlib writes ({', '.join(formats)}), "
            f"but got {output!r}."
        )


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import optuna

    from optuna_lrrange.dashboard import check_artifact_store, file_system_store, publish_study

    if args.study is None:
        storage = open_storage(args.storage)
        studies = [
            optuna.load_study(study_name=name, storage=storage)
            for name in sorted(optuna.get_all_study_names(storage))
        ]
    else:
        studies = [load_study(args.storage, args.study)]
    store = file_system_store(args.artifact_dir)
    check_artifact_store(store)
    failed = 0
    for study in studies:
        trials, plots, errors = publish_study(study, store, param_name=args.param_name)
        print(
            f"study {study.study_name!r}: {trials} trials with sweeps, {plots} plots uploaded "
            f"to {args.artifact_dir}, notes written",
            file=sys.stderr,
        )
        for number, error in errors:
            print(f"  trial {number}: not published: {error}", file=sys.stderr)
        failed += len(errors)
    print(
        f"view: optuna-dashboard {args.storage} --artifact-dir {args.artifact_dir}",
        file=sys.stderr,
    )
    return 1 if failed else 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``optuna-lrrange``."""
    parser = argparse.ArgumentParser(
        prog="optuna-lrrange",
        description="The learning-rate range test inside Optuna studies.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what happens (optuna's INFO level)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the demo study (a CNN on MNIST-1D) and plot it",
        description="Runs a real study: a 1-D CNN on MNIST-1D (generated locally), "
        "LRRangeSampler over TPE, lr on [1e-5, 1] (log) plus channels and weight decay; "
        "then writes four plots and prints a summary.",
    )
    demo.add_argument("--storage", default=DEFAULT_DEMO_STORAGE, help="storage URL (%(default)s)")
    demo.add_argument("--study-name", default="demo", help="study name (%(default)s)")
    demo.add_argument("--n-trials", type=int, default=None, help="trials (30; 6 with --quick)")
    demo.add_argument("--quick", action="store_true", help="a few small trials (seconds)")
    demo.add_argument("--out", default=DEFAULT_DEMO_OUT, help="folder for the plots (%(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of TPE and torch (%(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)

    sweeps = sub.add_parser(
        "sweeps",
        help="export every sweep of a study as CSV or parquet",
        description="Exports sweeps_dataframe (one row per step) or, with --summary, "
        "sweeps_summary (one row per sweep).",
    )
    sweeps.add_argument("--storage", required=True, help="storage URL")
    sweeps.add_argument("--study", required=True, help="study name")
    sweeps.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default=None,
        help="output format (default: from the file name, else csv)",
    )
    sweeps.add_argument("--summary", action="store_true", help="one row per sweep")
    sweeps.add_argument("--sma", type=int, default=20, help="loss-change SMA window (20)")
    sweeps.add_argument("-o", "--output", required=True, help="output file ('-': stdout)")
    sweeps.set_defaults(func=_cmd_sweeps)

    plot = sub.add_parser("plot", help="draw one plot of a study as an image file")
    plot.add_argument("--storage", required=True, help="storage URL")
    plot.add_argument("--study", required=True, help="study name")
    plot.add_argument("--kind", choices=PLOT_KINDS, required=True, help="which plot")
    plot.add_argument(
        "--trial",
        type=int,
        default=None,
        help="trial number for sweep and loss-change (default: the best)",
    )
    plot.add_argument(
        "--index",
        type=int,
        default=0,
        help="which sweep of the trial (0: the first; -1: the last)",
    )
    plot.add_argument("--param-name", default="lr", help="the lr parameter (%(default)s)")
    plot.add_argument("--dpi", type=int, default=110, help="resolution (%(default)s)")
    plot.add_argument("-o", "--output", required=True, help="output image (.png, .svg, .pdf)")
    plot.set_defaults(func=_cmd_plot)

    dashboard = sub.add_parser(
        "dashboard",
        help="upload every sweep's plot and a note to each trial, for optuna-dashboard",
        description="Back-fills a study for optuna-dashboard: uploads each sweep's plot as "
        "an artifact of its trial (once) and writes the trial's note (band, suggestion, rate "
        "used, plot). Then run `optuna-dashboard URL --artifact-dir DIR`.",
    )
    dashboard.add_argument("--storage", required=True, help="storage URL")
    dashboard.add_argument("--artifact-dir", required=True, help="the artifact folder")
    dashboard.add_argument("--study", default=None, help="study name (default: every study)")
    dashboard.add_argument("--param-name", default="lr", help="the lr parameter (%(default)s)")
    dashboard.set_defaults(func=_cmd_dashboard)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``optuna-lrrange``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)
    try:
        return int(args.func(args))
    except CLIError as e:
        print(f"optuna-lrrange: error: {e}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(f"optuna-lrrange: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optuna-lrrange: interrupted", file=sys.stderr)
        return 130
    finally:
        optuna.logging.set_verbosity(verbosity)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
