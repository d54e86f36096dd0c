"""The ``optuna-lrrange`` command: export, plots, clear errors, and the demo study."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
import sqlite3
import subprocess
import sys
import uuid

import optuna
import pandas as pd
import pytest
import test_analysis as helpers

import optuna_lrrange as ol
from optuna_lrrange.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """An SQLite study named 's' with sweeps (and an empty study 'other'); its URL.

    Shared by the tests of this module, which only read it.
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'study.db'}"
    helpers.make_study(url)
    optuna.create_study(storage=url, study_name="other")
    return url


def test_sweeps_exports_the_dataframe_as_csv(stored, tmp_path, capsys):
    out = tmp_path / "out" / "sweeps.csv"
    assert main(["sweeps", "--storage", stored, "--study", "s", "-o", str(out)]) == 0
    written = pd.read_csv(out)
    expected = ol.sweeps_dataframe(optuna.load_study(study_name="s", storage=stored))
    assert list(written.columns) == list(expected.columns)
    assert len(written) == len(expected)
    pd.testing.assert_series_equal(written["lr"], expected["lr"], check_exact=False)
    assert f"wrote {len(expected)} rows" in capsys.readouterr().err


def test_sweeps_summary_to_stdout(stored, capsys):
    assert main(["sweeps", "--storage", stored, "--study", "s", "--summary", "-o", "-"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("number,state,value,")
    assert len(lines) == 1 + 4  # a header and one row per sweep


def test_parquet_needs_pyarrow(stored, tmp_path, capsys):
    out = tmp_path / "sweeps.parquet"
    code = main(["sweeps", "--storage", stored, "--study", "s", "-o", str(out)])
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 2
        assert "needs pyarrow" in capsys.readouterr().err and not out.exists()
    else:  # pragma: no cover - pyarrow is not installed here
        assert code == 0 and len(pd.read_parquet(out)) > 0


@pytest.mark.parametrize("kind", ["sweep", "loss-change", "overlay", "bands"])
def test_plot_writes_each_kind(stored, tmp_path, kind):
    out = tmp_path / f"{kind}.png"
    args = ["plot", "--storage", stored, "--study", "s", "--kind", kind, "-o", str(out)]
    if kind in ("sweep", "loss-change"):
        args += ["--trial", "1"]
    assert main(args) == 0
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--storage", "sqlite:///{tmp}/missing.db", "--study", "s"], "no SQLite file at"),
        (["--storage", "nonsense", "--study", "s"], "--storage must be an RDB URL"),
        (["--storage", "foo://bar", "--study", "s"], "cannot open storage 'foo://bar'"),
        (["--storage", "journal:{tmp}/none.log", "--study", "s"], "no journal file at"),
        (["--storage", "{url}", "--study", "nope"], "the studies there: 'other', 's'."),
    ],
)
def test_user_errors_exit_2_with_a_message(stored, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, url=stored) for a in args]
    code = main(["sweeps", *args, "-o", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("optuna-lrrange: error: ") and message in err
    assert not (tmp_path / "missing.db").exists()  # a reading command creates no file


def test_plot_errors_exit_2(stored, tmp_path, capsys):
    base = ["plot", "--storage", stored, "-o", str(tmp_path / "x.png")]
    assert main([*base, "--study", "s", "--kind", "sweep", "--trial", "9"]) == 2
    assert "`trial` must be the number of a trial" in capsys.readouterr().err
    assert main([*base, "--study", "other", "--kind", "sweep"]) == 2
    assert "must hold at least one sweep record" in capsys.readouterr().err
    assert main([*base, "--study", "s", "--kind", "bands", "--trial", "1"]) == 2
    assert "--trial applies to" in capsys.readouterr().err


#: Every spelling of an SQLite file URL (relative to the working folder, and absolute), and a
#: journal file: a reading command given one that names no storage must not create it.
STORAGE_SPELLINGS = [
    "sqlite:///{name}.db",
    "sqlite+pysqlite:///{name}.db",
    "sqlite:///file:{name}.db?uri=true",
    "sqlite:///{tmp}/{name}.db",
    "sqlite+pysqlite:///{tmp}/{name}.db",
    "journal:{name}.log",
    "journal:{tmp}/{name}.log",
]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in ``folder``: its bytes and modification time (ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("command", ["sweeps", "plot"])
@pytest.mark.parametrize("spelling", STORAGE_SPELLINGS)
def test_a_reading_command_creates_no_storage(tmp_path, monkeypatch, capsys, spelling, command):
    monkeypatch.chdir(tmp_path)
    url = spelling.format(name="typo", tmp=tmp_path)
    args = [command, "--storage", url, "--study", "s", "-o", str(tmp_path / "out" / "x.png")]
    if command == "plot":
        args += ["--kind", "bands"]
    assert main(args) == 2
    what = "journal" if url.startswith("journal:") else "SQLite"
    assert f"no {what} file at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no database, journal, lock or output folder


@pytest.mark.parametrize("spelling", STORAGE_SPELLINGS)
def test_a_reading_command_leaves_an_empty_file_unchanged(tmp_path, monkeypatch, capsys, spelling):
    monkeypatch.chdir(tmp_path)
    url = spelling.format(name="empty", tmp=tmp_path)
    empty = tmp_path / ("empty.log" if url.startswith("journal:") else "empty.db")
    empty.touch()
    os.utime(empty, ns=(1_000_000_000, 1_000_000_000))  # any write would move the mtime
    before = _snapshot(tmp_path)
    assert main(["sweeps", "--storage", url, "--study", "s", "-o", "x.csv"]) == 2
    err = capsys.readouterr().err
    assert "--storage must name an existing Optuna storage" in err and "is an empty file" in err
    assert _snapshot(tmp_path) == before


def test_a_reading_command_adds_no_tables_to_another_database(tmp_path, capsys):
    db = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("create table notes (text)")
    os.utime(db, ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot(tmp_path)
    assert main(["sweeps", "--storage", f"sqlite:///{db}", "--study", "s", "-o", "-"]) == 2
    assert (
        f"but 'sqlite:///{db}' holds no Optuna tables (missing: studies, version_info, "
        "alembic_version)" in capsys.readouterr().err
    )
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_reading_command_leaves_a_study_unchanged(stored, tmp_path, kind):
    folder = tmp_path / "storage"
    folder.mkdir()
    if kind == "sqlite":
        db = folder / "copy.db"
        db.write_bytes(Path(stored[len("sqlite:///") :]).read_bytes())
        url = f"sqlite:///{db}"
    else:
        db = folder / "copy.log"
        url = f"journal:{db}"
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(db))
        )
        optuna.copy_study(from_study_name="s", from_storage=stored, to_storage=storage)
    os.utime(db, ns=(1_000_000_000, 1_000_000_000))
    before = _snapshot(folder)
    assert main(["sweeps", "--storage", url, "--study", "s", "-o", "-"]) == 0
    out = tmp_path / "plot.png"
    assert main(["plot", "--storage", url, "--study", "s", "--kind", "bands", "-o", str(out)]) == 0
    assert _snapshot(folder) == before  # no byte, no time stamp, no lock file


def test_a_reading_command_adds_no_tables_to_a_server_database(capsys):
    """On a server, the database a mistyped URL names may exist: it must stay empty."""
    from _servers import _server_url
    import sqlalchemy

    server = sqlalchemy.engine.make_url(
        _server_url("OPTUNA_LRRANGE_TEST_POSTGRES_URL", "PostgreSQL")
    )
    name = f"lrrange_cli_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"create database {name}"))
        url = server.set(database=name).render_as_string(hide_password=False)
        assert main(["sweeps", "--storage", url, "--study", "s", "-o", "-"]) == 2
        assert "holds no Optuna tables" in capsys.readouterr().err
        engine = sqlalchemy.create_engine(url)
        try:
            assert sqlalchemy.inspect(engine).get_table_names() == []
        finally:
            engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f"drop database if exists {name} with (force)"))
        admin.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["sweeps", "-o", "{file}/x.csv"],
            "-o must be a path whose folder can be created, but got '{file}/x.csv' "
            "('{file}' is not a folder).",
            id="sweeps_output_under_a_file",
        ),
        pytest.param(
            ["sweeps", "-o", "{file}/a/b/x.csv"],
            "('{file}' is not a folder).",
            id="sweeps_output_deep_under_a_file",
        ),
        pytest.param(
            ["plot", "--kind", "bands", "-o", "{file}/x.png"],
            "('{file}' is not a folder).",
            id="plot_output_under_a_file",
        ),
        pytest.param(
            ["sweeps", "-o", "/proc/x.csv"], "cannot write -o '/proc/x.csv': ", id="sweeps_proc"
        ),
        pytest.param(
            ["plot", "--kind", "bands", "-o", "/proc/x.png"],
            "cannot write -o '/proc/x.png': ",
            id="plot_proc",
        ),
        pytest.param(
            ["plot", "--kind", "bands", "-o", "{tmp}/out.xyz"],
            "-o must end in an image format matplotlib writes (",
            id="plot_unknown_format",
        ),
        pytest.param(
            ["sweeps", "--sma", "0", "-o", "-"], "`--sma >= 1` must hold, but got 0.", id="sma_0"
        ),
        pytest.param(
            ["plot", "--kind", "bands", "--dpi", "0", "-o", "{tmp}/a.png"],
            "`--dpi >= 1` must hold, but got 0.",
            id="dpi_0",
        ),
        pytest.param(
            ["demo", "--quick", "--storage", "sqlite:///{file}/demo.db"],
            "--storage must be a path whose folder can be created",
            id="demo_storage_under_a_file",
        ),
        pytest.param(
            ["demo", "--quick", "--out", "{file}/plots"],
            "--out must be a path whose folder can be created, but got '{file}/plots'",
            id="demo_out_under_a_file",
        ),
    ],
)
def test_bad_options_and_outputs_exit_2_with_one_line(stored, tmp_path, capsys, args, message):
    regular = tmp_path / "regular"
    regular.write_text("a file, not a folder")
    if args[0] == "sweeps" or args[0] == "plot":
        args = [args[0], "--storage", stored, "--study", "s", *args[1:]]
    args = [a.format(file=regular, tmp=tmp_path) for a in args]
    if sys.platform != "linux" and "/proc/" in " ".join(args):  # pragma: no cover
        pytest.skip("/proc is Linux's")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("optuna-lrrange: error: ") and err.count("\n") == 1, err
    assert message.format(file=regular, tmp=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regular"]  # nothing written


def test_the_installed_command_reports_errors_without_traceback(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "optuna_lrrange.cli",
            "sweeps",
            "--storage",
            f"sqlite:///{tmp_path}/missing.db",
            "--study",
            "s",
            "-o",
            "x.csv",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "no SQLite file" in out.stderr and "Traceback" not in out.stderr


def test_main_leaves_optuna_verbosity_as_it_was(stored, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        main(["-v", "sweeps", "--storage", stored, "--study", "s", "-o", str(tmp_path / "a")])
        assert optuna.logging.get_verbosity() == optuna.logging.ERROR
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_logger_sits_under_optunas_hierarchy():
    from optuna_lrrange import cli

    assert cli.logger.name == "optuna.lrrange"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        assert not cli.logger.isEnabledFor(optuna.logging.INFO)
        optuna.logging.set_verbosity(optuna.logging.INFO)
        assert cli.logger.isEnabledFor(optuna.logging.INFO)
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_quick_demo_runs_a_real_study_and_writes_its_plots(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("mnist1d")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "optuna_lrrange.cli",
            "demo",
            "--quick",
            "--n-trials",
            "3",
            "--no-progress",
            "--out",
            "plots",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    db = tmp_path / "studies" / "demo" / "demo.db"  # the default storage, relative to cwd
    study = optuna.load_study(study_name="demo", storage=f"sqlite:///{db}")
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 3
    for trial in complete:
        assert set(trial.params) == {"lr", "lr:offset", "channels", "weight_decay"}
        assert len(ol.get_sweeps(trial)) == 1
    for name in ("sweep.png", "loss_change.png", "sweeps.png", "bands.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG
    text = out.stdout
    assert f"Best: trial {study.best_trial.number}, validation accuracy" in text
    assert "plots/bands.png" in text
    for trial in study.trials:
        assert f"{trial.params['lr']:.2e}" in text
