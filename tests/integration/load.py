"""Load helpers shared by the reliability tests and the soak: concurrent clients, job polling."""

import asyncio
import re
import subprocess
import time
from typing import Any

import httpx

from tests.integration.conftest import Platform


def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def worker_children(platform: Platform) -> list[int]:
    return children(platform.pids()["worker-digits"])


def assert_keeps_serving(platform: Platform, *, seconds: float, not_version: int) -> None:
    """For `seconds`, every live-route answer is a 200 from a version other than `not_version`."""
    with platform.client() as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response = client.post("/api/v1/predictions", json={"model": "digits", "inputs": [[0.0] * 64]})
            assert response.status_code == 200
            assert response.json()["version"] != not_version
            time.sleep(0.2)
    assert httpx.get(f"{platform.base_url}/readyz").status_code == 200


def load_failures(platform: Platform, version: int) -> str:
    """The registry's load_failed records of a digits version, as printed by the shell."""
    return platform.manage(
        "shell",
        "-c",
        "from apps.models_registry.models import RegistryEvent as E; "
        f"print([e.details for e in E.objects.filter(action='load_failed', to_version={version})])",
    ).stdout


ROLL_BACK_UNLESS_DONE = """
from apps.models_registry import selectors
from apps.models_registry.services.deployments import PromotionRefused, deployment_rollback
try:
    deployment_rollback(model=selectors.model_get(name="digits"), environment="dev", expect_live={number})
except PromotionRefused as exc:
    print(exc)
"""


def roll_back_unless_done(platform: Platform, number: int) -> None:
    """Roll digits in dev back from `number`, unless it is no longer live (rolled back by itself)."""
    platform.manage("shell", "-c", ROLL_BACK_UNLESS_DONE.format(number=number))


def automatic_rollbacks(platform: Platform) -> list[int]:
    """The digits versions the registry rolled back by itself (actor auto-rollback)."""
    out = platform.manage(
        "shell",
        "-c",
        "from apps.models_registry.models import RegistryEvent as E; "
        "print(list(E.objects.filter(action='rollback', actor='auto-rollback')"
        ".values_list('from_version', flat=True)))",
    ).stdout
    return [int(n) for n in re.findall(r"\d+", out.strip().splitlines()[-1])]


def wait_ready(platform: Platform, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{platform.base_url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("platform did not become ready again")


async def _fire(
    platform: Platform, bodies: list[dict[str, Any]], concurrency: int, retry: bool, key_prefix: str
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=platform.base_url, headers=platform.auth, timeout=120, limits=limits
    ) as client:

        async def send(index: int, body: dict[str, Any]) -> httpx.Response:
            # A well-behaved client: one Idempotency-Key per request, so retries are safe, and
            # retries after Retry-After on 429/503, and at once when the connection fails (a
            # kept-alive connection the server closed as it was reused: seen once in make test).
            headers = {"Idempotency-Key": f"{key_prefix}-{index}"} if retry else {}
            for _ in range(60):
                try:
                    response = await client.post("/api/v1/predictions", json=body, headers=headers)
                except httpx.TransportError:
                    if not retry:
                        raise
                    await asyncio.sleep(0.1)
                    continue
                if not retry or response.status_code not in (429, 503):
                    break
                await asyncio.sleep(float(response.headers["Retry-After"]))
            return response

        return await asyncio.gather(*(send(i, b) for i, b in enumerate(bodies)))


def fire(
    platform: Platform,
    bodies: list[dict[str, Any]],
    concurrency: int = 16,
    *,
    retry: bool = False,
    key_prefix: str = "req",
) -> list[httpx.Response]:
    return asyncio.run(_fire(platform, bodies, concurrency, retry, key_prefix))


def poll_jobs(platform: Platform, ids: list[str], timeout: float = 90) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with platform.client() as client:
        while len(done) < len(ids) and time.monotonic() < deadline:
            for job_id in ids:
                if job_id not in done:
                    status = client.get(f"/api/v1/predictions/{job_id}")
                    if status.status_code == 200 and status.json()["status"] != "pending":
                        done[job_id] = status.json()
            time.sleep(0.3)
    return done
