"""The OptunaHub package in hub/samplers/lrrange: laid out as the registry asks, built from the
package (so it cannot drift), loaded as OptunaHub loads it, its example run."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
import re
import runpy
import subprocess
import sys
from types import ModuleType

import optuna
import pytest

import optuna_lrrange

HUB = Path(__file__).resolve().parent.parent / "hub"
PACKAGE = HUB / "samplers" / "lrrange"

#: The front-matter fields the registry requires.
REQUIRED = ("author", "title", "description", "tags", "optuna_versions", "license")

optunahub = pytest.importorskip("optunahub")


def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hub_build", HUB / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def front_matter(text: str) -> dict[str, str]:
    """The ``key: value`` lines between the leading ``---`` lines of a README."""
    lines = text.splitlines()
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return {}
    end = lines.index("---", 1)
    fields = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def front_matter_problems(text: str) -> list[str]:
    """What the registry would refuse in a sampler package's README front matter."""
    fields = front_matter(text)
    problems = [f"no `{key}`" for key in REQUIRED if not fields.get(key)]
    if fields.get("license") and fields["license"] != "MIT License":
        problems.append(f"license must be 'MIT License', but got {fields['license']!r}")
    tags = [t.strip() for t in fields.get("tags", "").strip("[]").split(",")]
    if fields.get("tags") and "sampler" not in tags:
        problems.append("a package under samplers/ must have the tag 'sampler'")
    return problems


def load() -> ModuleType:
    return optunahub.load_local_module("samplers/lrrange", registry_root=str(HUB))  # type: ignore[no-any-return]


def test_the_folder_is_exactly_what_hub_build_writes() -> None:
    hub_build = build()
    expected, found = hub_build.render(), hub_build.on_disk()
    assert sorted(found) == sorted(expected), "run `python hub/build.py`"
    stale = [path for path in expected if found[path] != expected[path]]
    assert not stale, f"{stale} differ from the package: run `python hub/build.py`"


def test_the_registry_layout_and_the_front_matter() -> None:
    for name in ("__init__.py", "README.md", "LICENSE", "requirements.txt", "example.py"):
        assert (PACKAGE / name).is_file(), name
    assert any((PACKAGE / "images").glob("*.png"))
    assert (PACKAGE / "LICENSE").read_text().startswith("MIT License\n")
    readme = (PACKAGE / "README.md").read_text()
    assert front_matter_problems(readme) == []
    assert "images/sweep.png" in readme


@pytest.mark.parametrize("field", REQUIRED)
def test_a_missing_front_matter_field_is_caught(field: str) -> None:
    readme = (PACKAGE / "README.md").read_text()
    without = "\n".join(line for line in readme.splitlines() if not line.startswith(f"{field}:"))
    assert front_matter_problems(without) == [f"no `{field}`"]


def test_the_hub_sampler_is_the_packages_sampler() -> None:
    module = load()
    assert issubclass(module.LRRangeSampler, optuna.samplers.BaseSampler)
    assert module.LRRangeSampler is not optuna_lrrange.LRRangeSampler  # a copy, standing alone
    for name in ("LRRangeSampler", "attach", "get_sweeps", "RangeTestConfig"):
        # The same code, the imports inside functions relative (as hub/build.py writes them).
        ours = re.sub(
            r"from optuna_lrrange\.?", "from .", inspect.getsource(getattr(optuna_lrrange, name))
        )
        assert inspect.getsource(getattr(module, name)) == ours, (
            f"{name} differs from optuna_lrrange.{name}: run `python hub/build.py`"
        )


def test_the_hub_package_needs_no_optuna_lrrange(tmp_path: Path) -> None:
    """Loaded in a process where ``import optuna_lrrange`` fails, it still sweeps."""
    code = (
        "import sys\n"
        "sys.modules['optuna_lrrange'] = None  # any import of it now raises ImportError\n"
        "import optuna, optunahub, torch\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        f"m = optunahub.load_local_module('samplers/lrrange', registry_root={str(HUB)!r})\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(64, 5); y = (x.sum(1) > 0).long()\n"
        "def objective(trial):\n"
        "    model = torch.nn.Linear(5, 2)\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=1e-3)\n"
        "    m.attach(trial, model, opt, torch.nn.functional.cross_entropy, [(x, y)])\n"
        "    return trial.suggest_float('lr', 1e-4, 1.0, log=True)\n"
        f"study = optuna.create_study(storage='sqlite:///{tmp_path / 's.db'}',\n"
        "    sampler=m.LRRangeSampler(num_iter=20))\n"
        "study.optimize(objective, n_trials=2)\n"
        "print([len(m.get_sweeps(t)) for t in study.trials])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[1, 1]"


def test_the_example_runs_in_fast_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example loads the package from the registry by name; here the same call reads
    # this repository's copy.
    monkeypatch.setattr(
        optunahub,
        "load_module",
        lambda package, **kwargs: optunahub.load_local_module(package, registry_root=str(HUB)),
    )
    monkeypatch.setenv("LRRANGE_EXAMPLE_FAST", "1")
    runpy.run_path(str(PACKAGE / "example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.startswith("best validation loss ")
    # The best trial's rate was placed from an anchor, at an offset, both printed as numbers.
    assert re.search(r"placed at offset -?\d\S* \(decades\) from the drop point \d\S*\n", out), out
