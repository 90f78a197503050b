"""End to end over HTTP: real redis-server, real Celery worker processes, real uvicorn."""

import asyncio
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import Heldout
from tests.integration.conftest import Platform
from tests.integration.load import children
from workers.placement import cpu_cores

pytestmark = pytest.mark.integration


def live_version(platform: Platform) -> int:
    version: int = httpx.get(f"{platform.base_url}/readyz").json()["models"]["digits"]["version"]
    return version


def test_health_and_readiness(platform: Platform) -> None:
    with httpx.Client(base_url=platform.base_url) as client:
        live = client.get("/healthz")
        assert live.json() == {"status": "ok"}
        assert live.headers["X-Content-Type-Options"] == "nosniff"  # the fast path keeps these
        # A sized body, not a chunked one (the fast path skips Django's CommonMiddleware).
        assert live.headers["Content-Length"] == str(len(live.content))
        assert "Transfer-Encoding" not in live.headers
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["models"]["digits"]["ready"] is True
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").status_code == 200


def test_heldout_digits_in_one_request(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    with platform.client() as client:
        response = client.post("/api/v1/predictions", json={"model": "digits", "inputs": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "digits"
    assert body["version"] == live_version(platform)
    assert response.headers["X-Request-ID"] == body["id"]
    scores = np.array(body["predictions"])
    assert scores.shape == (360, 10)
    predicted = np.argmax(scores, axis=1)
    assert body["labels"] == [str(p) for p in predicted]
    assert np.mean(predicted == np.array(labels)) >= 0.9


def test_heldout_digits_as_concurrent_single_requests(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(
            base_url=platform.base_url, headers=platform.auth, timeout=60, limits=limits
        ) as client:
            return await asyncio.gather(
                *(
                    client.post("/api/v1/predictions", json={"model": "digits", "inputs": [row]})
                    for row in rows
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * len(rows)
    bodies = [r.json() for r in responses]
    assert len({b["id"] for b in bodies}) == len(rows)
    predicted = np.array([int(b["labels"][0]) for b in bodies])
    assert np.mean(predicted == np.array(labels)) >= 0.9


def test_async_submit_then_poll(platform: Platform, heldout: Heldout) -> None:
    rows, _ = heldout
    with platform.client() as client:
        sync = client.post("/api/v1/predictions", json={"model": "digits", "inputs": rows[:5]}).json()
        accepted = client.post(
            "/api/v1/predictions", json={"model": "digits", "inputs": rows[:5], "async": True}
        )
        assert accepted.status_code == 202
        job = accepted.json()
        assert job["status_url"].endswith(f"/api/v1/predictions/{job['id']}")
        deadline = time.monotonic() + 30
        while (status := client.get(job["status_url"]).json())["status"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["status"] == "done"
        assert status["labels"] == sync["labels"]
        np.testing.assert_allclose(status["predictions"], sync["predictions"], atol=1e-6)

        unknown = client.get("/api/v1/predictions/" + "0" * 12 + "." + "0" * 32)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["field"] == "id"


def test_tensorflow_serving_rest(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    with platform.client() as client:
        row = client.post("/v1/models/digits:predict", json={"instances": rows[:4]})
        assert row.status_code == 200, row.text
        assert np.argmax(row.json()["predictions"], axis=1).tolist() == labels[:4]
        columnar = client.post("/v1/models/digits/versions/1:predict", json={"inputs": {"pixels": rows[:4]}})
        assert columnar.status_code == 200
        np.testing.assert_allclose(columnar.json()["outputs"], row.json()["predictions"], atol=1e-6)
        objects = client.post(
            "/v1/models/digits:predict", json={"instances": [{"pixels": r} for r in rows[:2]]}
        )
        assert objects.status_code == 200
        status = client.get("/v1/models/digits").json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"

        bad = client.post("/v1/models/digits:predict", json={"instances": [[1, 2, 3]]})
        assert bad.status_code == 400
        assert isinstance(bad.json()["error"], str)
        assert "instances" in bad.json()["error"]
        missing = client.post("/v1/models/digits/versions/9:predict", json={"instances": rows[:1]})
        assert missing.status_code == 404
        assert isinstance(missing.json()["error"], str)


def test_open_inference_protocol_v2(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    with platform.client() as client:
        assert client.get("/v2").json()["name"]
        metadata = client.get("/v2/models/digits").json()
        assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
        assert metadata["outputs"] == [{"name": "scores", "datatype": "FP32", "shape": [-1, 10]}]
        assert "1" in metadata["versions"]
        assert client.get("/v2/models/digits/versions/1").json()["name"] == "digits"
        assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}

        flat = [v for row in rows[:3] for v in row]
        for data in (flat, rows[:3]):
            response = client.post(
                "/v2/models/digits/versions/1/infer",
                json={
                    "id": "my-request",
                    "inputs": [{"name": "pixels", "shape": [3, 64], "datatype": "FP32", "data": data}],
                },
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["id"] == "my-request"
            assert body["model_name"] == "digits"
            assert body["model_version"] == "1"
            (output,) = body["outputs"]
            assert output["name"] == "scores"
            assert output["datatype"] == "FP32"
            assert output["shape"] == [3, 10]
            assert np.argmax(np.reshape(output["data"], (3, 10)), axis=1).tolist() == labels[:3]

        bad = client.post(
            "/v2/models/digits/infer",
            json={"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0] * 10}]},
        )
        assert bad.status_code == 400
        assert "inputs.pixels.data" in bad.json()["error"]
        assert client.get("/v2/models/nope").status_code == 404


BAD_NATIVE = [
    ({"model": "digits", "inputs": [[1, 2, 3]]}, 400, "inputs"),
    ({"model": "digits", "inputs": [["a"] * 64]}, 400, "inputs"),
    ({"model": "digits", "inputs": []}, 400, "inputs"),
    ({"model": "digits", "inputs": [[0] * 64, [0] * 63]}, 400, "inputs"),
    ({"model": "digits", "inputs": [[1e39] * 64]}, 400, "inputs"),
    ({"model": "digits", "inputs": [[True] * 64]}, 400, "inputs"),
    ({"model": "digits", "inputs": [[0] * 64] * 1025}, 400, "inputs"),
    ({"model": "digits"}, 400, "inputs"),
    ({"inputs": [[0] * 64]}, 400, "model"),
    ({"model": "digits", "inputs": [[0] * 64], "version": "latest"}, 400, "version"),
    ({"model": "digits", "inputs": [[0] * 64], "async": "yes"}, 400, "async"),
    ({"model": "nope", "inputs": [[0] * 64]}, 404, "model"),
    ({"model": "digits", "inputs": [[0] * 64], "version": 99}, 404, "version"),
    ([1, 2, 3], 400, "body"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_NATIVE)
def test_bad_json_inputs_get_4xx_naming_the_field(
    platform: Platform, body: object, status: int, field: str
) -> None:
    with platform.client() as client:
        response = client.post("/api/v1/predictions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["code"] and error["message"]


NAN_ROW = "[" + ", ".join(["NaN"] + ["0"] * 63) + "]"
BAD_RAW = [
    (b'{"model": "digits", "inputs": [' + NAN_ROW.encode() + b"]}", 400, "inputs"),
    (b'{"model": "digits", "inputs": [[Infinity' + b", 0" * 63 + b"]]}", 400, "inputs"),
    (b'{"model": "digits", "inputs": ', 400, "body"),
    (b"", 400, "body"),
    (b'{"model": "digits\xff\xfe", "inputs": []}', 400, "body"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    (b'{"model": "digits", "inputs": [[' + b"1.0, " * 2_100_000 + b"1.0]]}", 413, "body"),
]


@pytest.mark.parametrize(
    ("raw", "status", "field"), BAD_RAW, ids=["nan", "inf", "truncated", "empty", "utf8", "nested", "10MB"]
)
def test_malformed_bodies_get_4xx_naming_the_field(
    platform: Platform, raw: bytes, status: int, field: str
) -> None:
    with platform.client() as client:
        response = client.post(
            "/api/v1/predictions", content=raw, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == status, response.text[:500]
    assert response.json()["error"]["field"] == field


OVERSIZED_ROUTES = [
    ("/api/v1/predictions", 64, "native"),
    ("/v1/models/digits:predict", 64, "plain"),
    ("/v2/models/digits/infer", 64, "plain"),
    ("/api/v1/predictions", 256, "native"),
]


@pytest.mark.parametrize(
    ("route", "megabytes", "form"), OVERSIZED_ROUTES, ids=["native", "tfserving", "v2", "native-256MB"]
)
def test_a_plain_client_reads_the_413_of_an_oversized_body(
    platform: Platform, route: str, megabytes: int, form: str
) -> None:
    """urllib writes the whole body before it reads (no `Expect: 100-continue`): the API must
    read it to the end before answering, or the client's write fails on a reset connection."""
    body = b'{"inputs": [' + b"0" * (megabytes * 1024 * 1024) + b"]}"
    request = urllib.request.Request(
        platform.base_url + route,
        data=body,
        headers={"Authorization": f"Bearer {platform.token}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=60)
    assert answered.value.code == 413
    error = json.loads(answered.value.read())["error"]
    if form == "native":
        assert (error["code"], error["field"]) == ("payload_too_large", "body")
    else:
        assert error.startswith("body: request body exceeds")


def test_service_keeps_serving_after_bad_inputs(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    with platform.client() as client:
        for body, _, _ in BAD_NATIVE:
            client.post("/api/v1/predictions", json=body)
        response = client.post("/api/v1/predictions", json={"model": "digits", "inputs": rows[:10]})
    assert response.status_code == 200
    assert [int(label) for label in response.json()["labels"]] == labels[:10]


def test_authentication_is_required(platform: Platform) -> None:
    body = {"model": "digits", "inputs": [[0] * 64]}
    with httpx.Client(base_url=platform.base_url) as client:
        missing = client.post("/api/v1/predictions", json=body)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "unauthenticated"
        wrong = client.post("/api/v1/predictions", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert client.post("/v2/models/digits/infer", json={}).status_code == 401
        assert client.post("/v1/models/digits:predict", json={}).status_code == 401


def test_timeout_and_readiness_when_a_model_has_no_worker(platform: Platform, demo_model_dir: Path) -> None:
    """A deployed model that no worker serves: /readyz says so, and requests time out with 504."""
    platform.manage("register_model", str(demo_model_dir), "--name", "orphan", "--deploy")
    try:
        with httpx.Client(base_url=platform.base_url) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "orphan" in ready.json()["reason"]
            assert client.get("/v2/health/ready").status_code == 400
        with platform.client() as client:
            assert client.get("/v2/models/orphan/ready").status_code == 400
            started = time.monotonic()
            response = client.post(
                "/api/v1/predictions",
                json={"model": "orphan", "inputs": [[0] * 64]},
                headers={"X-Request-Timeout": "1"},
            )
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "timeout"
            assert time.monotonic() - started < 5
            bad = client.post(
                "/api/v1/predictions",
                json={"model": "digits", "inputs": [[0] * 64]},
                headers={"X-Request-Timeout": "soon"},
            )
            assert bad.json()["error"]["field"] == "X-Request-Timeout"
    finally:
        platform.manage(
            "shell",
            "-c",
            "from apps.models_registry.models import Deployment; "
            "Deployment.objects.filter(model__name='orphan').delete()",
        )
    with httpx.Client(base_url=platform.base_url) as client:
        assert client.get("/readyz").status_code == 200


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_tensorflow_is_loaded_only_in_worker_children(platform: Platform) -> None:
    pids = platform.pids()
    api = [pids["api"], *children(pids["api"])]
    assert all("tensorflow" not in _maps(pid) for pid in api)
    worker_parent = pids["worker-digits"]
    assert "tensorflow" not in _maps(worker_parent), "the Celery parent must not load TensorFlow"
    pool = children(worker_parent)
    assert len(pool) == 2
    assert all("libtensorflow" in _maps(pid) for pid in pool)


def test_a_busy_api_answers_new_connections(platform: Platform) -> None:
    """New clients are not starved while 400 connections keep the API's event loop busy.

    On uvloop (libuv accepts one connection per loop turn) a loaded API took new connections at
    ~16/s and 2,000 benchmark clients waited up to the whole run for a first answer; the API runs
    on asyncio's loop (API_LOOP), which accepts up to the listen backlog at once.
    """
    host, port = platform.base_url.removeprefix("http://").split(":")
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def first_answer() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await reader.readuntil(b'{"status":"ok"}')
        writer.close()

    async def newcomers() -> tuple[int, int]:
        tasks = [asyncio.create_task(first_answer()) for _ in range(200)]
        done, pending = await asyncio.wait(tasks, timeout=3)
        for task in pending:
            task.cancel()
        return sum(1 for task in done if task.exception() is None), len(tasks)

    load = subprocess.Popen(
        ["wrk", "-t2", "-c400", "-d8s", f"{platform.base_url}/healthz"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)  # all 400 connected and busy
        answered, opened = asyncio.run(newcomers())
    finally:
        load.kill()
        load.wait()
    assert answered == opened, f"{answered} of {opened} new connections answered within 3 s"


def test_worker_children_share_the_cores(platform: Platform) -> None:
    """Two children: the parent gives each half the cores as TensorFlow threads before the fork
    (workers/placement.py); the children inherit the variables."""
    threads = max(1, cpu_cores() // 2)
    assert f"2 worker children, {threads} TensorFlow threads each" in platform.log()


def test_printed_curl_example_returns_the_digit(platform: Platform) -> None:
    log = platform.log()
    match = re.search(r"^  (curl .*\\\n\s+.*)$", log, re.MULTILINE)
    assert match, "the banner prints a curl example"
    command = match.group(1).replace("\\\n", " ")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True, timeout=30)
    assert '"labels":["7"]' in result.stdout


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_works_unchanged(platform: Platform, heldout: Heldout, binary: bool) -> None:
    """The Open Inference Protocol client of Triton, JSON and binary tensor data extension."""
    import tritonclient.http as triton

    rows, labels = heldout
    client = triton.InferenceServerClient(platform.base_url.removeprefix("http://"))
    headers = platform.auth
    assert client.is_server_live(headers=headers)
    assert client.is_model_ready("digits", headers=headers)
    metadata = client.get_model_metadata("digits", headers=headers)
    assert metadata["inputs"][0]["name"] == "pixels"
    batch = np.array(rows[:16], dtype=np.float32)
    tensor = triton.InferInput("pixels", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    output = triton.InferRequestedOutput("scores", binary_data=binary)
    result = client.infer("digits", [tensor], outputs=[output], headers=headers, request_id="triton-1")
    scores = result.as_numpy("scores")
    assert scores.shape == (16, 10)
    assert (
        np.argmax(scores, axis=1).tolist() == labels[:16]
        or np.mean(np.argmax(scores, axis=1) == labels[:16]) >= 0.9
    )
    assert result.get_response()["id"] == "triton-1"
