"""Fixtures shared by unit and integration tests."""

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import pytest
from pytest_django import Settings

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
logging.getLogger("httpx").setLevel(logging.WARNING)

# The ``heldout`` fixture's value: the held-out digits' rows of 64 pixel values and their labels.
Heldout: TypeAlias = tuple[list[list[float]], list[int]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The trained demo model's artifacts; trained once (about 20 s) and cached in .cache/."""
    out = CACHE / "demo-digits"
    if not (out / "model_card.json").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with (CACHE / "demo-digits-training.log").open("w") as log:
            subprocess.run(
                [sys.executable, "-m", "workers.training.digits", "--out", str(out)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
    return out


@pytest.fixture(scope="session")
def heldout(demo_model_dir: Path) -> Heldout:
    """The 360 held-out digits (rows of 64 pixel values) and their labels."""
    lines = (demo_model_dir / "validation.csv").read_text().splitlines()[1:]
    rows = [[float(v) for v in line.split(",")] for line in lines]
    return [row[:-1] for row in rows], [int(row[-1]) for row in rows]


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port, for unit tests that touch Redis."""
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    _wait_port(port, proc, "redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto in server mode: a real S3/SNS-compatible HTTP server on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(port, proc, "moto_server")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def registry_settings(settings: Settings, tmp_path: Path, redis_server: str) -> Settings:
    """Registry storage in a temporary folder and a clean real Redis, for DB-backed tests."""
    import redis

    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    settings.REDIS_URL = redis_server
    redis.Redis.from_url(redis_server).flushdb()
    return settings


# --- PostgreSQL ------------------------------------------------------------------------------
# `pytest --postgres`: the Django test database of the selected tests lives on a throw-away
# PostgreSQL (deploy/bin/postgres) instead of in-memory SQLite; `make test` runs the registry
# and lifecycle tests a second time so.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--postgres",
        action="store_true",
        help="run the Django test database (and the test platforms) on a PostgreSQL started by the tests",
    )


@dataclass
class PostgresServer:
    """A PostgreSQL run by deploy/bin/postgres on a free port, its data in a folder of its own."""

    root: Path
    port: int
    user: str = "inference"
    password: str = "inference-tests"
    proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "inference") -> str:
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        env = {
            **os.environ,
            "INFERENCE_VAR_DIR": str(self.root),
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            # A throw-away cluster: no flush to disk per commit (a clean stop still writes all).
            "POSTGRES_ARGS": "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        }
        with (self.root / "postgres.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(ROOT / "deploy" / "bin" / "postgres")], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until it accepts a login (an open port alone may still answer "starting up")."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"deploy/bin/postgres exited with {self.proc.returncode}:\n{self.log()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: deploy/bin/postgres makes it a fast shutdown (clients disconnected)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def database_create(self, name: str) -> str:
        """A new, empty database owned by the test role; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log(self) -> str:
        return (self.root / "postgres.log").read_text(errors="replace")


@contextlib.contextmanager
def postgres_running() -> Iterator[PostgresServer]:
    """A PostgreSQL of its own, stopped and removed afterwards. Its folder is not under pytest's
    tmp_path: run by root, the server runs as the postgres user, which cannot enter pytest's
    private (0700) folders."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        pytest.fail("PostgreSQL is required (make test installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="inference-postgres-"))
    root.chmod(0o755)
    server = PostgresServer(root=root, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (started on first use)."""
    with postgres_running() as server:
        yield server


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    request: pytest.FixtureRequest,
    django_db_modify_db_settings_parallel_suffix: None,
) -> None:
    """pytest-django's hook "just before the databases are configured": with --postgres, the
    default database is the session's PostgreSQL (pytest-django creates test_inference on it)."""
    if not request.config.getoption("postgres"):
        return
    import environ
    from django.conf import settings
    from django.db import connections

    server: PostgresServer = request.getfixturevalue("postgres_server")
    # Changed in place, as pytest-django's own suffixes are (the connection handler holds this
    # dict), and the SQLite wrapper made meanwhile dropped: the next use makes a PostgreSQL one.
    settings.DATABASES["default"].update(environ.Env.db_url_config(server.url()), OPTIONS={})
    connections["default"].close()
    del connections["default"]


@pytest.fixture(scope="session")
def platform_database(request: pytest.FixtureRequest) -> Callable[[str], str | None]:
    """For a test platform: `platform_database(name)` is the URL of a new database on the
    session's PostgreSQL under --postgres, else None (the platform keeps its SQLite file)."""

    def create(name: str) -> str | None:
        if not request.config.getoption("postgres"):
            return None
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.database_create(name)

    return create


@contextlib.contextmanager
def database_unreachable() -> Iterator[None]:
    """In this thread, the default database is a PostgreSQL on a port nothing listens on: every
    query fails as a real one does while the server restarts (connection refused). Django keeps
    a connection per thread: enter it in the thread that will query (for sync_to_async code,
    through sync_to_async)."""
    from django.db import connections
    from django.db.utils import load_backend

    saved = connections["default"]
    unreachable = {
        **saved.settings_dict,
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "registry",
        "USER": "nobody",
        "PASSWORD": "none",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "OPTIONS": {"connect_timeout": 2},
    }
    connections["default"] = load_backend(unreachable["ENGINE"]).DatabaseWrapper(unreachable, "default")
    try:
        yield
    finally:
        connections["default"].close()
        connections["default"] = saved
