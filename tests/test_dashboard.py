"""Sweeps in optuna-dashboard: plots as trial artifacts and trial notes, written by the
sampler, the re-estimator and the ``dashboard`` command, and shown by a real optuna-dashboard
in a real (headless) Chromium."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any
import urllib.request

from _servers import free_port
import optuna
from optuna.artifacts import FileSystemArtifactStore
import pytest
import torch
import torch.nn.functional as F

import optuna_lrrange as ol
from optuna_lrrange.cli import main
from optuna_lrrange.dashboard import ERROR_KEY, NOTE_HEADING

optuna_dashboard = pytest.importorskip("optuna_dashboard")

PNG = b"\x89PNG\r\n\x1a\n"


def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    y = (x @ torch.randn(10, 3, generator=g)).argmax(1)
    return [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]


def run_study(
    storage: str,
    *,
    artifact_store: Any = None,
    n_trials: int = 2,
    reestimate: bool = False,
    placement: str = "band",
) -> optuna.Study:
    """A real study: a small MLP, LRRangeSampler over TPE, optionally re-estimating once."""
    loader = data()
    sampler = ol.LRRangeSampler(
        optuna.samplers.TPESampler(seed=0),
        start_lr=1e-5,
        end_lr=10.0,
        num_iter=30,
        artifact_store=artifact_store,
        placement=placement,
    )
    study = optuna.create_study(study_name="s", storage=storage, sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(trial.number)
        model = torch.nn.Sequential(
            torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        ol.attach(trial, model, optimizer, F.cross_entropy, loader)
        lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
        for group in optimizer.param_groups:
            group["lr"] = lr
        reestimator = None
        if reestimate:
            reestimator = ol.LRReestimator(
                model,
                optimizer,
                F.cross_entropy,
                loader,
                every_epochs=1,
                num_iter=10,
                trial=trial,
                allow_increase=True,
                artifact_store=artifact_store,
            )
        for epoch in range(2):
            if reestimator is not None:
                reestimator.step(epoch=epoch)
            for x, y in loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
        return float(loss.item())

    study.optimize(objective, n_trials=n_trials)
    return study


def artifacts_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, str]:
    metas = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
    return {m.filename: m.artifact_id for m in metas}


def note_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    return optuna_dashboard.get_note(optuna.trial.Trial(study, trial._trial_id))  # type: ignore[no-any-return]


def test_the_sampler_uploads_each_sweep_plot_and_writes_the_note(tmp_path: Path) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    study = run_study(f"sqlite:///{tmp_path / 'study.db'}", artifact_store=store)
    for trial in study.trials:
        artifacts = artifacts_of(study, trial)
        assert list(artifacts) == ["lrrange-sweep-0.png"]
        with store.open_reader(artifacts["lrrange-sweep-0.png"]) as f:
            assert f.read(8) == PNG
        note = note_of(study, trial)
        band = trial.user_attrs["lrrange:band"]
        assert note.startswith(NOTE_HEADING)
        assert f"- band: [{band[0]:.3g}, {band[1]:.3g}]" in note
        assert f"- suggestion: {trial.user_attrs['lrrange:suggestion']:.3g} " in note
        assert f"- rate used: {trial.params['lr']:.3g}" in note
        url = f"/artifacts/{study._study_id}/{trial._trial_id}/{artifacts['lrrange-sweep-0.png']}"
        assert f"![sweep 0]({url})" in note
        assert trial.user_attrs.get(ERROR_KEY) is None


def test_the_offset_placement_uploads_each_sweep_plot_and_writes_the_note(
    tmp_path: Path,
) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = run_study(url, artifact_store=store, placement="offset")
    for trial in study.trials:
        assert trial.user_attrs["lrrange:placement"] == "offset"
        assert trial.user_attrs["lrrange:source"] == trial.number  # its own sweep
        artifacts = artifacts_of(study, trial)
        assert list(artifacts) == ["lrrange-sweep-0.png"]
        with store.open_reader(artifacts["lrrange-sweep-0.png"]) as f:
            assert f.read(8) == PNG
        note = note_of(study, trial)
        assert note.startswith(NOTE_HEADING)
        assert f"- rate used: {trial.params['lr']:.3g}" in note
        url = f"/artifacts/{study._study_id}/{trial._trial_id}/{artifacts['lrrange-sweep-0.png']}"
        assert f"![sweep 0]({url})" in note
        assert trial.user_attrs.get(ERROR_KEY) is None


def test_the_reestimator_adds_one_plot_per_reestimation(tmp_path: Path) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    study = run_study(
        f"sqlite:///{tmp_path / 'study.db'}", artifact_store=store, n_trials=1, reestimate=True
    )
    (trial,) = study.trials
    assert len(ol.get_sweeps(trial)) == 2  # the sampler's sweep and one re-estimation (epoch 1)
    assert sorted(artifacts_of(study, trial)) == ["lrrange-sweep-0.png", "lrrange-sweep-1.png"]
    note = note_of(study, trial)
    assert "### Sweep 0 (trial)" in note and "### Sweep 1 (reestimate, epoch 1)" in note
    assert note.count("![sweep ") == 2


def test_a_failed_upload_never_fails_the_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    store = FileSystemArtifactStore(str(folder))
    shutil.rmtree(folder)  # every write now fails, as on a full or unmounted disk
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with caplog.at_level(logging.WARNING, logger="optuna.lrrange"):
        study = run_study(url, artifact_store=store)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["lrrange:band"] is not None
        assert trial.user_attrs[ERROR_KEY].startswith("FileNotFoundError")
    logged = [r.getMessage() for r in caplog.records if "not uploaded" in r.getMessage()]
    assert len(logged) == 2 and "optuna-lrrange dashboard" in logged[0]

    # Back-filling later uploads the plots and clears the error.
    folder.mkdir()
    assert main(["dashboard", "--storage", url, "--artifact-dir", str(folder)]) == 0
    loaded = optuna.load_study(study_name="s", storage=url)
    study_artifacts = {
        m.filename: m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(loaded)
    }
    for trial in loaded.trials:
        # A finished trial takes no artifacts: the plot is the study's, shown in the note.
        name = f"lrrange-trial-{trial.number}-sweep-0.png"
        assert f"/artifacts/{loaded._study_id}/{study_artifacts[name]})" in note_of(loaded, trial)
        assert trial.user_attrs[ERROR_KEY].startswith("FileNotFoundError")  # what happened


def test_the_dashboard_command_back_fills_once_and_keeps_the_users_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = run_study(url)  # no artifact store: nothing uploaded
    assert all(not artifacts_of(study, t) for t in study.trials)
    first = study.trials[0]
    optuna_dashboard.save_note(optuna.trial.Trial(study, first._trial_id), "my own remark")

    art = tmp_path / "artifacts"
    assert main(["dashboard", "--storage", url, "--artifact-dir", str(art)]) == 0
    assert "2 trials with sweeps, 2 plots uploaded" in capsys.readouterr().err
    study_artifacts = optuna.artifacts.get_all_artifact_meta(study)
    assert sorted(m.filename for m in study_artifacts) == [
        "lrrange-trial-0-sweep-0.png",
        "lrrange-trial-1-sweep-0.png",
    ]
    note = note_of(study, first)
    assert note.startswith("my own remark\n\n" + NOTE_HEADING)
    (plot,) = [m for m in study_artifacts if m.filename == "lrrange-trial-0-sweep-0.png"]
    assert f"![sweep 0](/artifacts/{study._study_id}/{plot.artifact_id})" in note
    with open(art / plot.artifact_id, "rb") as f:
        assert f.read(8) == PNG

    # Again: nothing new is uploaded, the notes stay as they are.
    files = sorted(p.name for p in art.iterdir())
    assert main(["dashboard", "--storage", url, "--artifact-dir", str(art), "--study", "s"]) == 0
    assert "0 plots uploaded" in capsys.readouterr().err
    assert sorted(p.name for p in art.iterdir()) == files
    assert note_of(study, first) == note


def test_the_dashboard_command_reports_a_wrong_storage(tmp_path: Path, capsys: Any) -> None:
    args = ["dashboard", "--storage", f"sqlite:///{tmp_path / 'no.db'}", "--artifact-dir", "x"]
    assert main(args) == 2
    assert "no SQLite file" in capsys.readouterr().err


def test_a_wrong_artifact_store_is_an_error_at_once(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="`artifact_store` must be an Optuna artifact store"):
        ol.LRRangeSampler(artifact_store="artifacts/")
    model = torch.nn.Linear(10, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="`artifact_store` needs `trial`"):
        ol.LRReestimator(
            model,
            optimizer,
            F.cross_entropy,
            data(),
            every_epochs=1,
            artifact_store=FileSystemArtifactStore(str(tmp_path)),
        )


# --------------------------------------------------------------------------- in a browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "no chromium: `apt-get install chromium` (.ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must not skip this test")
        pytest.skip(message)
    return path


def run_chromium(binary: str, args: list[str], timeout: float = 120) -> str:
    """Runs headless Chromium with a fresh profile; kills its whole process group on timeout."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out.decode()


@contextlib.contextmanager
def dashboard_server(storage: str, artifact_dir: Path, log: Path) -> Any:
    """optuna-dashboard on a free loopback port, stopped (with its children) afterwards."""
    port = free_port()
    script = Path(sys.executable).with_name("optuna-dashboard")  # this environment's command
    command = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from optuna_dashboard._cli import main; main()"]
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*command, storage, "--artifact-dir", str(artifact_dir)]
            + ["--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as response:
                    if response.status == 200:
                        break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"optuna-dashboard did not start (exit code {proc.poll()}): "
                    + log.read_text()[-2000:]
                )
            time.sleep(0.1)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_optuna_dashboard_shows_the_sweep_plot_on_the_trial_page(tmp_path: Path) -> None:
    binary = chromium()
    art = tmp_path / "artifacts"
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = run_study(url, artifact_store=ol.dashboard.file_system_store(art))
    trial = study.trials[0]
    artifact_id = artifacts_of(study, trial)["lrrange-sweep-0.png"]
    with open(art / artifact_id, "rb") as f:
        plot = f.read()

    with dashboard_server(url, art, tmp_path / "dashboard.log") as base:
        # The dashboard's own API: the trial carries the artifact and the note...
        with urllib.request.urlopen(f"{base}/api/studies/{study._study_id}?after=0") as r:
            api = json.load(r)
        (listed,) = [t for t in api["trials"] if t["number"] == trial.number]
        assert [a["filename"] for a in listed["artifacts"]] == ["lrrange-sweep-0.png"]
        image_path = f"/artifacts/{study._study_id}/{trial._trial_id}/{artifact_id}"
        assert image_path in listed["note"]["body"]
        # ...and serves the plot as it was uploaded.
        with urllib.request.urlopen(base + image_path) as r:
            assert r.headers["Content-Type"] == "image/png"
            assert r.read() == plot

        # The trial's page, rendered by Chromium: the plot is shown in the note and in the
        # artifact list.
        page = f"{base}/dashboard/studies/{study._study_id}/trials?numbers={trial.number}"
        dom = run_chromium(binary, ["--dump-dom", page])
        assert f'alt="sweep 0" node="[object Object]" src="{image_path}"' in dom or (
            f'src="{image_path}"' in dom and 'alt="sweep 0"' in dom
        )
        assert dom.count(f'src="{image_path}"') == 2  # the note's image and the artifact card
        assert "Learning-rate range test (optuna-lrrange)" in dom
        assert f"rate used: {trial.params['lr']:.3g}" in dom

        shot = tmp_path / "trial_page.png"
        run_chromium(binary, [f"--screenshot={shot}", "--window-size=1400,1100", page])
        assert png_size(shot) == (1400, 1100)
    target = os.environ.get("OPTUNA_LRRANGE_SCREENSHOT")
    if target:  # refreshes docs/images/dashboard_trial.png
        shutil.copyfile(shot, target)
