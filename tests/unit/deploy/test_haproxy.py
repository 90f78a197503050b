"""deploy/haproxy/: HAProxy run for real (deploy/bin/haproxy) in front of an API that is not there.
Its own 503 must read like the API's: JSON in the platform's error form, with Retry-After, so a
client backs off during a shared outage (every /readyz failing through a Redis failover) instead
of retrying at once or giving up."""

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ROOT, _wait_port, free_port


@pytest.fixture
def proxy() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "HAPROXY_BIND": f"127.0.0.1:{port}",
        "HAPROXY_API_1": f"127.0.0.1:{free_port()}",  # nothing listens there
    }
    process = subprocess.Popen(
        [str(ROOT / "deploy" / "bin" / "haproxy")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_port(port, process, "haproxy")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_no_api_up_is_a_json_503_with_retry_after(proxy: str) -> None:
    response = httpx.post(f"{proxy}/api/v1/predictions", json={"inputs": [[0.0] * 64]}, timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "unavailable"
