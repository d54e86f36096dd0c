"""Shared fixtures: the storages every storage-touching test runs over.

``storage_url`` names a fresh storage of each kind (in-memory, an SQLite file and a journal
file in ``tmp_path``); ``open_storage(url)`` opens it, in this process or a worker, as often
as needed. In-memory storage has no URL: it is ``None``, and opening it gives the same
object every time within one test (there is nothing to reload it from).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend
import pytest

STORAGE_KINDS = ("inmemory", "sqlite", "journal")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A storage object on ``url`` (``sqlite:///...`` or ``journal:PATH``)."""
    if url.startswith("journal:"):
        backend = JournalFileBackend(url[len("journal:") :])
        return optuna.storages.JournalStorage(backend)
    return optuna.storages.RDBStorage(url)


@pytest.fixture(params=STORAGE_KINDS)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """``None`` (in-memory), an SQLite URL or ``journal:PATH``, each in ``tmp_path``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "journal":
        return f"journal:{tmp_path / 'journal.log'}"
    return None


@pytest.fixture
def storage_factory(storage_url: str | None) -> Callable[[], optuna.storages.BaseStorage]:
    """Opens the test's storage: a new object on the same data each call (in-memory: the
    same object)."""
    if storage_url is None:
        memory = optuna.storages.InMemoryStorage()
        return lambda: memory
    url = storage_url
    return lambda: open_storage(url)


@pytest.fixture
def storage(
    storage_factory: Callable[[], optuna.storages.BaseStorage],
) -> optuna.storages.BaseStorage:
    """A fresh storage of each kind: in-memory, SQLite file, journal file."""
    return storage_factory()
