"""A canary rollout on the running platform: the digits model retrained with another seed goes
from 10 % to 100 % by itself (the platform worker's analysis), with 0 failed requests, and at
each step the measured share of traffic on the candidate is within 5 points of its weight.

Clients send a fresh X-Routing-Key per request, so each request is a draw; a key sent twice
reaches the same version (sticky routing).
"""

import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CACHE, ROOT, Heldout
from tests.integration.conftest import Platform, platform_env, running_platform
from tests.integration.load import wait_ready

pytestmark = pytest.mark.integration
STEPS = [10, 50, 100]
DWELL_S = 6.0
# A step's first requests may still be routed on the weight before (the API's registry cache,
# INFERENCE_REGISTRY_CACHE_S, is 2 s): they are not counted for the step.
SETTLE_S = 2.5


@pytest.fixture(scope="module")
def reseeded_model_dir() -> Path:
    """The demo model trained again with another seed: a good candidate (cached in .cache/)."""
    out = CACHE / "demo-digits-seed1"
    if not (out / "model_card.json").exists():
        subprocess.run(
            [sys.executable, "-m", "workers.training.digits", "--out", str(out), "--seed", "1"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return out


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("rollouts")
    env = platform_env(
        root,
        demo_model_dir,
        INFERENCE_ENVIRONMENT="dev",
        INFERENCE_ROLLOUT_ANALYSIS_S="1",
        INFERENCE_SWAP_GRACE_S="0.5",
        REGISTRY_PROFILE_ON_REGISTER="false",
    )
    with running_platform(root, env, "rollouts") as platform:
        wait_ready(platform)
        yield platform


def staff_client(platform: Platform) -> httpx.Client:
    match = re.search(r"[0-9a-f]{40}", platform.manage("drf_create_token", "admin").stdout)
    assert match
    token = match.group(0)
    return httpx.Client(base_url=platform.base_url, headers={"Authorization": f"Token {token}"}, timeout=300)


@dataclass
class Answer:
    at: float
    status: int
    version: int | None


class Traffic:
    """Clients in threads, each request with a fresh routing key; every answer kept."""

    def __init__(self, platform: Platform, row: list[float], clients: int = 6) -> None:
        self.platform, self.row, self.clients = platform, row, clients
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        with self.platform.client() as client:
            while not self.stop.is_set():
                key = f"client-{index}-{rng.getrandbits(64):x}"
                response = client.post(
                    "/api/v1/predictions",
                    json={"model": "digits", "inputs": [self.row]},
                    headers={"X-Routing-Key": key},
                )
                version = response.json().get("version") if response.status_code == 200 else None
                self.answers.append(Answer(time.time(), response.status_code, version))

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def test_a_good_candidate_goes_through_a_canary_to_100_by_itself(
    dev: Platform, reseeded_model_dir: Path, heldout: Heldout
) -> None:
    with staff_client(dev) as staff:
        files = [("files", (p.name, p.read_bytes())) for p in sorted(reseeded_model_dir.iterdir())]
        assert staff.post("/api/v1/models/digits/versions", files=files).status_code == 201
        with Traffic(dev, heldout[0][0]) as traffic:
            time.sleep(1)
            started = staff.post(
                "/api/v1/models/digits/rollouts",
                json={
                    "version": 2,
                    "environment": "dev",
                    "strategy": "canary",
                    "steps": STEPS,
                    "dwell_s": DWELL_S,
                    "thresholds": {"min_samples": 50},
                },
            )
            assert started.status_code == 201, started.text
            rollout_url = f"/api/v1/models/digits/rollouts/{started.json()['id']}"
            deadline = time.monotonic() + 120
            while (state := staff.get(rollout_url).json())["state"] == "running":
                assert time.monotonic() < deadline, state
                time.sleep(0.5)
            time.sleep(SETTLE_S + 1)
        assert state["state"] == "promoted", state
        history = staff.get("/api/v1/models/digits/history").json()

    failed = [a for a in traffic.answers if a.status != 200]
    assert not failed, failed[:5]
    rollout_events = sorted(
        (
            e
            for e in history
            if e["action"].startswith("rollout_") and e["details"].get("rollout") == state["id"]
        ),
        key=lambda e: e["created_at"],
    )
    assert [e["action"] for e in rollout_events] == [
        "rollout_start",
        "rollout_step",
        "rollout_step",
        "rollout_promote",
    ]
    assert all(e["actor"] == "rollout-analysis" for e in rollout_events[1:])
    times = [
        datetime.fromisoformat(e["created_at"].replace("Z", "+00:00")).timestamp() for e in rollout_events
    ]
    shares: list[dict[str, Any]] = []
    for weight, begin, end in zip(STEPS, times[:-1], times[1:], strict=True):
        window = [a for a in traffic.answers if begin + SETTLE_S <= a.at < end]
        share = 100 * sum(a.version == 2 for a in window) / max(1, len(window))
        shares.append({"weight": weight, "requests": len(window), "share": round(share, 1)})
    after = [a for a in traffic.answers if a.at >= times[-1] + SETTLE_S]
    shares.append({"weight": "promoted", "requests": len(after), "v2": sum(a.version == 2 for a in after)})
    print("canary shares:", shares)
    for measured in shares[:-1]:
        assert measured["requests"] >= 300, shares
        assert abs(measured["share"] - measured["weight"]) <= 5, shares
    assert after and all(a.version == 2 for a in after), shares
