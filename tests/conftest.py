"""Fixtures shared by unit and integration tests."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
def heldout(demo_model_dir: Path) -> tuple[list[list[float]], list[int]]:
    """The 360 held-out digits (rows of 64 pixel values) and their labels."""
    lines = (demo_model_dir / "validation.csv").read_text().splitlines()[1:]
    rows = [[float(v) for v in line.split(",")] for line in lines]
    return [row[:-1] for row in rows], [int(row[-1]) for row in rows]
