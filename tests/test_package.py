"""Package-level promises: a light import, and the public names."""

from __future__ import annotations

import subprocess
import sys

import optuna_lrrange


def test_import_pulls_in_no_torch_pandas_or_matplotlib():
    code = (
        "import sys, optuna_lrrange\n"
        "top = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(top & {'torch', 'pandas', 'matplotlib'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_public_name_resolves():
    for name in optuna_lrrange.__all__:
        assert getattr(optuna_lrrange, name) is not None, name


def test_unknown_attribute_is_an_attribute_error():
    try:
        optuna_lrrange.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")
