"""Cancellation on the running platform: requests whose clients go away (HTTP disconnect, gRPC
cancel) while the worker is paused (SIGSTOP) are taken out of their batch or marked, and are never
computed once it resumes (worker metrics and log lines); every other request is answered. An async
job deleted while pending is never computed either."""

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import httpx
import numpy as np
import pytest
import redis

from apps.predictions.transports.oip import grpc_predict_v2_pb2 as pb
from apps.predictions.transports.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import Heldout
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration
IMPATIENT = 200  # HTTP clients that give up after 1.5 s
GRPC_CANCELLED = 10  # gRPC calls cancelled by their client
KEEPERS = 20  # requests that wait for their answer


def counter(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def api_metrics(platform: Platform) -> str:
    return httpx.get(f"{platform.base_url}/metrics", timeout=10).text


def worker_metrics(platform: Platform) -> str:
    return httpx.get(f"http://127.0.0.1:{platform.env['WORKER_METRICS_PORT']}/metrics", timeout=10).text


def eventually(check: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


@contextmanager
def worker_paused(platform: Platform) -> Iterator[None]:
    group = platform.pids()["worker-digits"]
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


def marks_stored(platform: Platform) -> int:
    """Cancellation marks in Redis (stored results whose error code is `cancelled`)."""
    client = redis.Redis(port=int(platform.env["REDIS_PORT"]))
    keys = list(client.scan_iter(match="celery-task-meta-*", count=1000))
    values = client.mget(keys) if keys else []
    return sum(1 for value in values if value is not None and b"cancelled by its client" in value)


def body(row: list[float], **extra: object) -> dict[str, object]:
    return {"model": "digits", "inputs": [row], **extra}


def test_requests_cancelled_while_the_worker_is_paused_are_never_computed(
    platform: Platform, heldout: Heldout
) -> None:
    rows, labels = heldout
    api_before, worker_before = api_metrics(platform), worker_metrics(platform)
    cancelled_lines_before = platform.log().count('"status":"cancelled"')

    async def clients() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=IMPATIENT + KEEPERS + 10)
        async with (
            httpx.AsyncClient(
                base_url=platform.base_url, headers=platform.auth, timeout=60, limits=limits
            ) as patient,
            httpx.AsyncClient(
                base_url=platform.base_url, headers=platform.auth, timeout=1.5, limits=limits
            ) as impatient,
        ):
            keepers = [
                asyncio.ensure_future(patient.post("/api/v1/predictions", json=body(rows[i])))
                for i in range(KEEPERS)
            ]
            gone = await asyncio.gather(
                *(
                    impatient.post("/api/v1/predictions", json=body(rows[i % len(rows)]))
                    for i in range(IMPATIENT)
                ),
                return_exceptions=True,
            )
            assert all(isinstance(outcome, httpx.TimeoutException) for outcome in gone), gone[:3]
            return await asyncio.gather(*keepers)

    marks_before = marks_stored(platform)

    def queued_so_far() -> float:
        return (
            marks_before
            + counter(
                api_metrics(platform), "inference_requests_cancelled_total", model="digits", stage="queued"
            )
            - counter(api_before, "inference_requests_cancelled_total", model="digits", stage="queued")
        )

    answers: list[httpx.Response] = []
    with grpc.insecure_channel(f"127.0.0.1:{platform.env['GRPC_PORT']}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="digits")
        request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
        request.raw_input_contents.append(np.array(rows[:1], dtype=np.float32).tobytes())
        metadata = (("authorization", f"Bearer {platform.token}"),)
        with worker_paused(platform):
            calls = [
                stub.ModelInfer.future(request, metadata=metadata, timeout=60) for _ in range(GRPC_CANCELLED)
            ]
            time.sleep(0.5)
            assert all(call.cancel() for call in calls)
            http = threading.Thread(target=lambda: answers.extend(asyncio.run(clients())), daemon=True)
            http.start()

            def gone_counted() -> bool:
                now = api_metrics(platform)
                seen = sum(
                    counter(now, "inference_requests_cancelled_total", stage=s)
                    - counter(api_before, "inference_requests_cancelled_total", stage=s)
                    for s in ("batcher", "queued")
                )
                return seen >= IMPATIENT + GRPC_CANCELLED

            assert eventually(gone_counted, timeout=60), "the API did not see every client go"
            # The API stores each mark in a task of its own just after counting it: resume once
            # they are all in Redis (a worker that takes a batch before its marks computes it).
            assert eventually(lambda: marks_stored(platform) >= queued_so_far()), "marks missing"
        http.join(timeout=60)

    assert [a.status_code for a in answers] == [200] * KEEPERS
    assert np.mean([int(a.json()["labels"][0]) == labels[i] for i, a in enumerate(answers)]) >= 0.9
    api_after = api_metrics(platform)
    stages = {
        s: counter(api_after, "inference_requests_cancelled_total", model="digits", stage=s)
        - counter(api_before, "inference_requests_cancelled_total", model="digits", stage=s)
        for s in ("batcher", "queued")
    }
    assert stages["batcher"] + stages["queued"] == IMPATIENT + GRPC_CANCELLED, stages
    assert stages["queued"] >= 1, stages  # some had left with a batch: the worker had to skip them

    def worker_delta(outcome: str) -> float:
        return counter(
            worker_metrics(platform), "inference_worker_requests_total", model="digits", outcome=outcome
        ) - counter(worker_before, "inference_worker_requests_total", model="digits", outcome=outcome)

    assert eventually(lambda: worker_delta("cancelled") == stages["queued"]), (
        worker_delta("cancelled"),
        stages,
    )
    assert worker_delta("ok") == KEEPERS  # nothing computed for a client that had gone
    assert platform.log().count('"status":"cancelled"') - cancelled_lines_before == stages["queued"]
    print("cancelled while paused:", stages)


def test_a_pending_job_is_deleted_and_never_computed(platform: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    with platform.client() as client, worker_paused(platform):
        job = client.post("/api/v1/predictions", json=body(rows[0], **{"async": True}))
        kept = client.post("/api/v1/predictions", json=body(rows[1], **{"async": True}))
        assert job.status_code == kept.status_code == 202
        job_id = job.json()["id"]
        for _ in range(2):  # a second DELETE answers the same
            deleted = client.delete(f"/api/v1/predictions/{job_id}")
            assert deleted.status_code == 200, deleted.text
            assert deleted.json()["status"] == "cancelled"
        assert client.get(f"/api/v1/predictions/{job_id}").json()["status"] == "cancelled"
    with platform.client() as client:
        kept_id = kept.json()["id"]

        def done() -> bool:
            return bool(client.get(f"/api/v1/predictions/{kept_id}").json()["status"] == "done")

        assert eventually(done)
        assert int(client.get(f"/api/v1/predictions/{kept_id}").json()["labels"][0]) == labels[1]
        assert client.get(f"/api/v1/predictions/{job_id}").json()["status"] == "cancelled"

        def worker_lines() -> list[str]:
            return [
                x
                for x in platform.log().splitlines()
                if f'"request_id":"{job_id}"' in x and '"logger":"inference.worker"' in x
            ]

        assert eventually(lambda: bool(worker_lines()))
        assert all('"status":"cancelled"' in line for line in worker_lines())
        refused = client.delete(f"/api/v1/predictions/{kept_id}")
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "already_done"
        unknown = client.delete(f"/api/v1/predictions/{kept_id[:-4]}0000")
        assert unknown.status_code == 404
