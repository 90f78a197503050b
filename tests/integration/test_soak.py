"""`make soak`: 20,000 mixed sync/async requests (SOAK_REQUESTS) while worker children are killed
at random. Checks 0 lost, 0 duplicated answers, and worker memory flat after warm-up (≤ 10 %).
Too long for `make test`, which runs the short cut in test_reliability.py."""

import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Heldout
from tests.integration.conftest import ARTIFACTS_DIR, Platform, platform_env, running_platform
from tests.integration.load import fire, poll_jobs, wait_ready, worker_children

pytestmark = [pytest.mark.integration, pytest.mark.soak]
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "20000"))
CHUNK = 500
KILL_EVERY_S = 20.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def soak_platform(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("soak")
    with running_platform(
        root, platform_env(root, demo_model_dir, INFERENCE_MAX_QUEUE_DEPTH="5000"), "soak"
    ) as platform:
        yield platform


def test_soak(soak_platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    rng = random.Random(2026)
    stop = threading.Event()
    kills: list[float] = []
    samples: list[tuple[float, float, float]] = []  # (fraction done, max child RSS MB, API RSS MB)
    started = time.monotonic()

    def killer() -> None:
        while not stop.wait(KILL_EVERY_S * rng.uniform(0.5, 1.5)):
            if children := worker_children(soak_platform):
                os.kill(rng.choice(children), signal.SIGKILL)
                kills.append(time.monotonic() - started)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    answers: dict[str, tuple[int, int]] = {}
    lost = 0
    try:
        for offset in range(0, REQUESTS, CHUNK):
            picks = [rng.randrange(360) for _ in range(min(CHUNK, REQUESTS - offset))]
            bodies = [{"model": "digits", "inputs": [rows[i]], "async": rng.random() < 0.3} for i in picks]
            responses = fire(soak_platform, bodies, concurrency=32, retry=True, key_prefix=f"soak-{offset}")
            jobs = poll_jobs(
                soak_platform,
                [
                    r.json()["id"]
                    for r, b in zip(responses, bodies, strict=True)
                    if b["async"] and r.status_code == 202
                ],
            )
            for response, body, pick in zip(responses, bodies, picks, strict=True):
                ok = response.status_code == (202 if body["async"] else 200)
                result = (
                    (jobs.get(response.json()["id"]) if body["async"] else response.json()) if ok else None
                )
                if result is None or "labels" not in result:
                    lost += 1
                    continue
                assert response.json()["id"] not in answers, "an answer was given twice"
                answers[response.json()["id"]] = (int(result["labels"][0]), labels[pick])
            children = worker_children(soak_platform)
            samples.append(
                (
                    (offset + CHUNK) / REQUESTS,
                    max((rss_mb(pid) for pid in children), default=0.0),
                    rss_mb(soak_platform.pids()["api"]),
                )
            )
    finally:
        stop.set()
    elapsed = time.monotonic() - started
    wait_ready(soak_platform)
    warm = [s for s in samples if s[0] >= 0.2]
    worker_growth = max(s[1] for s in warm) / warm[0][1] - 1
    api_growth = max(s[2] for s in warm) / warm[0][2] - 1
    figures: dict[str, Any] = {
        "requests": REQUESTS,
        "seconds": round(elapsed, 1),
        "requests_per_second": round(REQUESTS / elapsed, 1),
        "children_killed": len(kills),
        "lost": lost,
        "answers": len(answers),
        "accuracy": round(sum(a == b for a, b in answers.values()) / max(len(answers), 1), 4),
        "worker_child_rss_mb_after_warmup": [round(warm[0][1], 1), round(max(s[1] for s in warm), 1)],
        "worker_rss_growth": round(worker_growth, 4),
        "api_rss_mb_after_warmup": [round(warm[0][2], 1), round(max(s[2] for s in warm), 1)],
        "api_rss_growth": round(api_growth, 4),
    }
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    (ARTIFACTS_DIR / "soak.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    assert lost == 0
    assert len(answers) == REQUESTS
    assert figures["accuracy"] >= 0.9
    assert worker_growth <= 0.10, figures
    assert api_growth <= 0.10, figures
