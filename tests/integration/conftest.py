"""Real platforms for the integration tests: what `make run` runs (deploy/circus.ini under
inference_project.local_platform), started on free ports with its own Redis, SQLite file and
artifact folder, stopped (and checked to have stopped every child) at the end."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, free_port

START_TIMEOUT_S = 240
ARTIFACTS_DIR = ROOT / "test-artifacts"


@dataclass
class Platform:
    base_url: str
    token: str
    env: dict[str, str]
    var_dir: Path
    log_path: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.auth, timeout=60, **kwargs)

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = json.loads((self.var_dir / "run" / "pids.json").read_text())
        return pids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def platform_env(root: Path, demo_model_dir: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CELERY_", "REDIS_", "DATABASE_", "INFERENCE_", "DJANGO_", "API_", "FLOWER_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "inference_project.settings.local",
            "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
            "ARTIFACTS_ROOT": str(root / "artifacts"),
            "ARTIFACT_CACHE_DIR": str(root / "artifact-cache"),
            "INFERENCE_VAR_DIR": str(root / "var"),
            "INFERENCE_DEMO_DIR": str(demo_model_dir),
            "REDIS_PORT": str(free_port()),
            "API_PORT": str(free_port()),
            "GRPC_PORT": str(free_port()),
            "FLOWER_PORT": str(free_port()),
            "FLOWER_BASIC_AUTH": "flower:flower-password",
            "WORKER_CONCURRENCY": "2",
            "INFERENCE_DEMO_TOKEN": "integration-test-token",
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_PASSWORD": "admin-password-for-tests",
            "INFERENCE_HEARTBEAT_S": "0.5",
            "INFERENCE_HEARTBEAT_TTL_S": "3",
            # Promotions through the platform's API run their gates on the platform worker, as
            # in the container deployment (unit tests cover the local runner).
            "PROMOTION_GATE_RUNNER": "worker",
            "WORKER_METRICS_PORT": str(free_port()),
            "INFERENCE_PLATFORM_METRICS_PORT": str(free_port()),
            "PROMETHEUS_PORT": str(free_port()),
            "NODE_EXPORTER_PORT": str(free_port()),
            "PROMETHEUS_SCRAPE_INTERVAL": "1s",
        }
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_platform(root: Path, env: dict[str, str], name: str) -> Iterator[Platform]:
    """Start `python -m inference_project.local_platform`, wait for its banner, stop it with
    SIGINT (what Ctrl-C sends) and check that every child it started is gone."""
    log_path = root / "platform.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_project.local_platform"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform = Platform(
        f"http://127.0.0.1:{env['API_PORT']}",
        env["INFERENCE_DEMO_TOKEN"],
        env,
        Path(env["INFERENCE_VAR_DIR"]),
        log_path,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while "The platform is ready." not in platform.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"platform did not start:\n{platform.log()[-5000:]}")
        time.sleep(0.5)
    try:
        yield platform
    finally:
        pids = platform.pids()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        finally:
            ARTIFACTS_DIR.mkdir(exist_ok=True)
            (ARTIFACTS_DIR / f"{name}.log").write_text(platform.log())
        survivors = {n: pid for n, pid in pids.items() if alive(pid)}
        assert code == 0, platform.log()[-3000:]
        assert not survivors, f"children still running after Ctrl-C: {survivors}"


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A page of Debian's Chromium, headless, driven by Playwright."""
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is required (make test installs it)")
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def admin_login(page: Any, platform: Platform) -> None:
    page.goto(f"{platform.base_url}/admin/login/")
    page.fill("#id_username", platform.env["DJANGO_SUPERUSER_USERNAME"])
    page.fill("#id_password", platform.env["DJANGO_SUPERUSER_PASSWORD"])
    page.click("input[type=submit]")


@pytest.fixture(scope="session")
def platform(
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
    platform_database: Callable[[str], str | None],
) -> Iterator[Platform]:
    """The shared platform; on the session's PostgreSQL under `pytest --postgres`."""
    root = tmp_path_factory.mktemp("platform")
    url = platform_database("platform")
    overrides = {"DATABASE_URL": url} if url else {}
    with running_platform(root, platform_env(root, demo_model_dir, **overrides), "platform") as running:
        yield running
