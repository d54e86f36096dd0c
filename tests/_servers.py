"""Real Optuna storages for tests: SQLite, PostgreSQL, MySQL (MariaDB), journal file, Redis
journal, gRPC proxy.

A storage is named by a spec string that a worker process can open on its own:
``sqlite:///path``, ``postgresql+psycopg2://...``, ``mysql+pymysql://...``, ``journal:/path``,
``redis:redis://...``, ``grpc:host:port``. PostgreSQL, MariaDB and Redis come from the servers
``.ci/run`` starts (their URLs in ``OPTUNA_LRRANGE_TEST_POSTGRES_URL``,
``OPTUNA_LRRANGE_TEST_MYSQL_URL`` and ``OPTUNA_LRRANGE_TEST_REDIS_URL``); outside CI the tests
that need them skip, saying why; in CI (``CI=true``) a missing server fails.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time

import optuna
import pytest

BACKENDS = ("sqlite", "postgres", "mysql", "journal", "redis", "grpc")


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """The storage a spec names (the same call in the test and in every worker)."""
    from optuna.storages import GrpcStorageProxy, JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if spec.startswith("journal:"):
        return JournalStorage(JournalFileBackend(spec[len("journal:") :]))
    if spec.startswith("redis:"):
        return JournalStorage(JournalRedisBackend(spec[len("redis:") :]))
    if spec.startswith("grpc:"):
        host, port = spec[len("grpc:") :].rsplit(":", 1)
        return GrpcStorageProxy(host=host, port=int(port))
    return RDBStorage(spec)


def _server_url(variable: str, what: str) -> str:
    url = os.environ.get(variable)
    if url:
        return url
    message = f"no {what} server: set {variable} (.ci/run starts one)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI must not skip this test")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def grpc_proxy(sqlite_path: str):
    """A gRPC storage proxy over an SQLite file, in its own process, on a free port."""
    port = free_port()
    code = (
        "import optuna, sys\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "storage = optuna.storages.RDBStorage(sys.argv[1])\n"
        "optuna.storages.run_grpc_proxy_server(storage, host='127.0.0.1', port=int(sys.argv[2]))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{sqlite_path}", str(port)])
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gRPC proxy did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        yield f"grpc:127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def storage_spec(backend: str, tmp_path):
    """A fresh storage of ``backend`` for one test, as a spec string."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
    elif backend == "postgres":
        yield _server_url("OPTUNA_LRRANGE_TEST_POSTGRES_URL", "PostgreSQL")
    elif backend == "mysql":
        yield _server_url("OPTUNA_LRRANGE_TEST_MYSQL_URL", "MySQL (MariaDB)")
    elif backend == "journal":
        yield f"journal:{tmp_path / 'journal.log'}"
    elif backend == "redis":
        yield "redis:" + _server_url("OPTUNA_LRRANGE_TEST_REDIS_URL", "Redis")
    elif backend == "grpc":
        with grpc_proxy(str(tmp_path / "proxied.db")) as spec:
            yield spec
    else:
        raise ValueError(f"`backend` must be one of {BACKENDS}, but got {backend!r}.")
