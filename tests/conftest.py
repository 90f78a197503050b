"""Fixtures shared by unit and integration tests."""

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
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
