"""Issue #15, fault 4: the registry's PostgreSQL restarted under load.

A platform whose registry is on a real PostgreSQL (deploy/bin/postgres) serves sync predictions
from a few clients while PostgreSQL is stopped (SIGTERM: a fast shutdown) for a few seconds and
started again. The API's caches are set to expire within a second, so the outage outlasts them:
predictions keep being answered from the last registry state read (no failed request), a
registry write is answered 503 with Retry-After meanwhile, and the same write succeeds once
PostgreSQL is back. The figures land in test-artifacts/postgres-restart.json."""

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import PostgresServer, postgres_running
from tests.integration.conftest import ARTIFACTS_DIR, Platform, platform_env, running_platform

pytestmark = pytest.mark.integration
OUTAGE_S = 5.0
CLIENTS = 4
# After PostgreSQL accepts logins again, a write must succeed within this long.
RECOVERY_LIMIT_S = 10.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_running() as server:
        yield server


@pytest.fixture(scope="module")
def platform_on_postgres(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, postgres: PostgresServer
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("postgres-restart")
    env = platform_env(
        root,
        demo_model_dir,
        DATABASE_URL=postgres.database_create("platform"),
        # Both caches expire well within the outage: what serves meanwhile is the fallback.
        INFERENCE_REGISTRY_CACHE_S="1",
        INFERENCE_API_KEY_CACHE_S="1",
        REGISTRY_PROFILE_ON_REGISTER="false",
        START_PROMETHEUS="false",
    )
    with running_platform(root, env, "postgres-restart") as platform:
        yield platform


@dataclass
class Load:
    """Clients posting sync predictions in a loop, recording (finished at, status)."""

    platform: Platform
    row: list[float]
    answers: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        with self.platform.client() as client:
            while not self.stop.is_set():
                response = client.post("/api/v1/predictions", json={"model": "digits", "inputs": [self.row]})
                self.answers.append((time.monotonic(), response.status_code))

    def __enter__(self) -> "Load":
        self.threads = [threading.Thread(target=self._run) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def staff_client(platform: Platform) -> httpx.Client:
    out = platform.manage("drf_create_token", "admin").stdout
    match = re.search(r"[0-9a-f]{40}", out)
    assert match, out
    return httpx.Client(
        base_url=platform.base_url, headers={"Authorization": f"Token {match.group(0)}"}, timeout=60
    )


def test_predictions_ride_out_a_postgres_restart_and_writes_wait_for_it(
    platform_on_postgres: Platform, postgres: PostgresServer, demo_model_dir: Path
) -> None:
    platform = platform_on_postgres
    files = [("files", (p.name, p.read_bytes())) for p in sorted(demo_model_dir.iterdir())]
    with staff_client(platform) as staff:
        assert staff.get("/api/v1/models/digits").status_code == 200  # the registry is on PostgreSQL
        with Load(platform, [0.0] * 64) as load:
            time.sleep(2)  # the load is running, every cache warm
            stopped = time.monotonic()
            postgres.stop()
            stop_s = time.monotonic() - stopped
            refused = []
            ready_during = []
            while time.monotonic() - stopped < OUTAGE_S:
                write = staff.post("/api/v1/models/digits/versions", files=files)
                refused.append(write)
                ready_during.append(httpx.get(f"{platform.base_url}/readyz", timeout=10).status_code)
                time.sleep(0.5)
            postgres.start()
            back = time.monotonic()
            while True:
                write = staff.post("/api/v1/models/digits/versions", files=files)
                if write.status_code != 503 or time.monotonic() - back > RECOVERY_LIMIT_S:
                    break
                time.sleep(0.2)
            written = time.monotonic()
            time.sleep(2)  # serving on after the restart, with fresh registry reads again
        versions = staff.get("/api/v1/models/digits/versions").json()

    answers = load.answers
    failed = [status for _, status in answers if status != 200]
    during = [t for t, _ in answers if stopped <= t <= back]
    figures = {
        "predictions": len(answers),
        "failed": len(failed),
        "served_during_outage": len(during),
        "outage_s": round(back - stopped, 2),
        "postgres_stop_s": round(stop_s, 2),
        "writes_refused": len(refused),
        "writes_refused_for_s": round(written - stopped, 2),
        "write_after_restart_s": round(written - back, 2),
        "readyz_during_outage": sorted(set(ready_during)),
    }
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    (ARTIFACTS_DIR / "postgres-restart.json").write_text(json.dumps(figures, indent=2))
    print(figures)

    assert not failed, f"{len(failed)} predictions failed during the restart: {sorted(set(failed))}"
    assert len(during) >= CLIENTS * OUTAGE_S, figures  # served all along, not only before and after
    assert refused and all(r.status_code == 503 for r in refused), [r.text for r in refused]
    for response in refused:
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
    assert write.status_code == 201, write.text
    assert write.json()["number"] == 2
    assert ready_during == [200] * len(ready_during), figures  # the models were served all along
    assert sorted(v["number"] for v in versions) == [1, 2], versions  # written once, after the restart
