"""Faults with real processes: killed worker children and workers, Redis down and restarted
(AOF), a model that fails to load, overload and throttling, idempotent retries, a short soak.

Runs on its own platform whose Redis the test starts and stops (START_REDIS=false)."""

import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Heldout, _wait_port, free_port
from tests.hostile import keras_without_weights
from tests.integration.conftest import Platform, platform_env, running_platform
from tests.integration.load import (
    assert_keeps_serving,
    automatic_rollbacks,
    fire,
    load_failures,
    poll_jobs,
    roll_back_unless_done,
    wait_ready,
    worker_children,
)

pytestmark = pytest.mark.integration


class RedisProcess:
    """A redis-server with AOF persistence that the test can kill, stop and start again."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port, self.proc, "redis-server")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis-data"))
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, redis_proc: RedisProcess
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("faults")
    env = platform_env(
        root,
        demo_model_dir,
        START_REDIS="false",
        REDIS_URL=f"redis://127.0.0.1:{redis_proc.port}/0",
        CELERY_VISIBILITY_TIMEOUT_S="15",
        INFERENCE_MAX_QUEUE_DEPTH="40",
        INFERENCE_SYNC_TIMEOUT_S="90",
        INFERENCE_LOAD_TIMEOUT_S="4",
        # Batches above 4 digits send their tensors beside the task (apps/predictions/
        # tensor_store.py): the kills below then also cover redelivery of offloaded tensors.
        INFERENCE_TENSOR_OFFLOAD_BYTES="1024",
    )
    with running_platform(root, env, "faults") as platform:
        yield platform


def test_idempotency_key_gives_one_answer_and_one_computation(faulty: Platform, heldout: Heldout) -> None:
    body = {"model": "digits", "inputs": heldout[0][:3]}

    def computed(request_id: str) -> int:
        """The worker's log lines for this request: one per computation."""
        return len(
            re.findall(rf'"message":"prediction"[^\n]*"request_id":"{re.escape(request_id)}"', faulty.log())
        )

    with faulty.client() as client:
        first = client.post("/api/v1/predictions", json=body, headers={"Idempotency-Key": "order-17"})
        again = client.post("/api/v1/predictions", json=body, headers={"Idempotency-Key": "order-17"})
        assert first.status_code == again.status_code == 200
        assert first.json() == again.json()
        time.sleep(0.5)
        assert computed(first.json()["id"]) == 1  # the retry was answered without new work
        other = client.post(
            "/api/v1/predictions",
            json={**body, "inputs": heldout[0][3:6]},
            headers={"Idempotency-Key": "order-17"},
        )
        assert other.status_code == 422
        assert other.json()["error"]["field"] == "Idempotency-Key"
        job = client.post(
            "/api/v1/predictions", json={**body, "async": True}, headers={"Idempotency-Key": "job-1"}
        ).json()
        again_job = client.post(
            "/api/v1/predictions", json={**body, "async": True}, headers={"Idempotency-Key": "job-1"}
        ).json()
        assert job["id"] == again_job["id"]
        bad = client.post("/api/v1/predictions", json=body, headers={"Idempotency-Key": "x" * 300})
        assert bad.json()["error"]["field"] == "Idempotency-Key"


def test_throttled_key_gets_429_with_retry_after(faulty: Platform) -> None:
    faulty.manage(
        "shell",
        "-c",
        "from apps.predictions.authentication import api_key_create; "
        "api_key_create(name='slow', raw_key='slow-key', rate_per_second=5)",
    )
    body = {"model": "digits", "inputs": [[0.0] * 64]}
    with httpx.Client(base_url=faulty.base_url, headers={"Authorization": "Bearer slow-key"}) as client:
        statuses = [client.post("/api/v1/predictions", json=body) for _ in range(12)]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, [r.status_code for r in statuses]
        assert limited[0].headers["Retry-After"] == "1"
        assert limited[0].json()["error"]["code"] == "throttled"
        time.sleep(1.1)
        assert client.post("/api/v1/predictions", json=body).status_code == 200


def test_full_queue_answers_503_at_once_without_enqueueing(faulty: Platform, demo_model_dir: Path) -> None:
    faulty.manage("register_model", str(demo_model_dir), "--name", "stalled", "--deploy")
    try:
        body = {"model": "stalled", "inputs": [[0.0] * 64], "async": True}
        responses = fire(faulty, [body] * 50, concurrency=1)
        statuses = [r.status_code for r in responses]
        assert statuses.count(202) == 40
        refused = [r for r in responses if r.status_code == 503]
        assert len(refused) == 10
        assert refused[0].headers["Retry-After"] == "1"
        assert refused[0].json()["error"]["code"] == "overloaded"
        length = subprocess.run(
            [
                "redis-cli",
                "-p",
                faulty.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0],
                "llen",
                "inference.stalled",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(length.stdout) == 40
    finally:
        faulty.manage(
            "shell",
            "-c",
            "from apps.models_registry.models import Deployment; "
            "Deployment.objects.filter(model__name='stalled').delete()",
        )
    wait_ready(faulty)


def test_killing_worker_children_mid_batch_loses_no_request(faulty: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    bodies = [{"model": "digits", "inputs": [rows[i % 360]]} for i in range(600)]
    kills: list[int] = []

    def killer() -> None:
        for delay in (0.5, 1.5, 3.0):
            time.sleep(delay)
            children = worker_children(faulty)
            if children:
                victim = random.choice(children)
                os.kill(victim, signal.SIGKILL)
                kills.append(victim)

    thread = threading.Thread(target=killer)
    thread.start()
    responses = fire(faulty, bodies, concurrency=16)
    thread.join()
    assert len(kills) == 3
    assert [r.status_code for r in responses] == [200] * len(bodies)
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == len(bodies)
    correct = sum(int(r.json()["labels"][0]) == labels[i % 360] for i, r in enumerate(responses))
    assert correct / len(bodies) >= 0.9
    assert "WorkerLostError" in faulty.log() or "exited with 'signal 9" in faulty.log()


def test_killed_worker_is_replaced_and_serves_the_queue(faulty: Platform, heldout: Heldout) -> None:
    rows, labels = heldout
    old = faulty.pids()["worker-digits"]
    os.killpg(old, signal.SIGKILL)
    # Queue the jobs once the dead worker is gone and its replacement is starting: they wait in
    # Redis and the new worker serves them. (A message handed to the worker at the instant it dies
    # is not lost either: tests/integration/test_kill_window.py.)
    deadline = time.monotonic() + 10
    while faulty.pids()["worker-digits"] == old and time.monotonic() < deadline:
        time.sleep(0.1)
    bodies = [{"model": "digits", "inputs": [rows[i]], "async": True} for i in range(30)]
    accepted = fire(faulty, bodies, concurrency=8)
    assert [r.status_code for r in accepted] == [202] * 30
    done = poll_jobs(faulty, [r.json()["id"] for r in accepted])
    assert len(done) == 30
    assert all(d["status"] == "done" for d in done.values())
    assert [int(done[r.json()["id"]]["labels"][0]) for r in accepted] == [
        int(done[r.json()["id"]]["labels"][0]) for r in accepted
    ]
    assert sum(int(done[r.json()["id"]]["labels"][0]) == labels[i] for i, r in enumerate(accepted)) >= 27
    assert faulty.pids()["worker-digits"] != old


def test_redis_down_answers_503_fast_then_recovers(faulty: Platform, redis_proc: RedisProcess) -> None:
    body = {"model": "digits", "inputs": [[0.0] * 64]}
    redis_proc.stop(signal.SIGKILL)
    try:
        with faulty.client() as client:
            for _ in range(5):
                started = time.monotonic()
                response = client.post("/api/v1/predictions", json=body)
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "1"
                assert elapsed < 1.0, elapsed
            started = time.monotonic()
            assert client.get("/readyz").status_code == 503
            assert time.monotonic() - started < 1.5
            assert client.get("/healthz").status_code == 200
    finally:
        redis_proc.start()
    recovered = wait_ready(faulty)
    with faulty.client() as client:
        assert client.post("/api/v1/predictions", json=body).status_code == 200
    assert recovered < 30


def test_async_jobs_accepted_before_a_redis_restart_complete_after_it(
    faulty: Platform, redis_proc: RedisProcess, heldout: Heldout
) -> None:
    rows, labels = heldout
    wait_ready(faulty)
    worker_group = faulty.pids()["worker-digits"]
    os.killpg(worker_group, signal.SIGSTOP)  # nothing is consumed while the jobs are accepted
    try:
        accepted = fire(
            faulty,
            [{"model": "digits", "inputs": [rows[i]], "async": True} for i in range(20)],
            concurrency=4,
        )
        assert [r.status_code for r in accepted] == [202] * 20
        redis_proc.stop(signal.SIGTERM)
        redis_proc.start()
    finally:
        os.killpg(worker_group, signal.SIGCONT)
    done = poll_jobs(faulty, [r.json()["id"] for r in accepted], timeout=120)
    assert len(done) == 20, f"{len(done)} of 20 completed"
    assert sum(int(done[r.json()["id"]]["labels"][0]) == labels[i] for i, r in enumerate(accepted)) >= 18


def test_a_version_that_fails_to_load_leaves_the_previous_one_serving(
    faulty: Platform, demo_model_dir: Path, tmp_path: Path
) -> None:
    wait_ready(faulty)
    broken = tmp_path / "broken"
    shutil.copytree(demo_model_dir, broken)
    keras_without_weights(demo_model_dir / "model.keras", broken / "model.keras")  # checks pass, load fails
    # --deploy skips the gates (which would refuse it), as a bad manual change might.
    registered = faulty.manage("register_model", str(broken), "--deploy").stdout
    number = registered_number(registered)
    assert_keeps_serving(faulty, seconds=8, not_version=number)
    assert "{'error': " in load_failures(faulty, number)  # the worker recorded why it failed
    # It loads nowhere: the registry rolled it back to the last good version by itself.
    assert number in automatic_rollbacks(faulty)


def registered_number(output: str) -> int:
    """The version number `manage.py register_model` printed."""
    match = re.search(r"registered digits v(\d+)", output)
    assert match, output
    return int(match.group(1))


def test_a_version_that_hangs_while_loading_is_reported_and_the_previous_keeps_serving(
    faulty: Platform, demo_model_dir: Path, tmp_path: Path
) -> None:
    wait_ready(faulty)
    registered = faulty.manage("register_model", str(demo_model_dir)).stdout
    number = registered_number(registered)
    stored = Path(faulty.env["ARTIFACTS_ROOT"]) / "digits" / str(number) / "model.keras"
    stored.unlink()
    os.mkfifo(stored)  # reading it blocks until someone writes: a load that hangs
    faulty.manage(
        "shell",
        "-c",
        "from apps.models_registry.selectors import model_version_get as get; "
        "from apps.models_registry.services.deployments import deployment_set; "
        f"deployment_set(version=get(model_name='digits', number={number}), environment='dev')",
    )
    try:
        assert_keeps_serving(faulty, seconds=8, not_version=number)
        assert "did not load within 4s" in load_failures(faulty, number)
    finally:
        # Release the hung loads (they read an empty file and fail their checksum), then go back.
        descriptor = os.open(stored, os.O_WRONLY | os.O_NONBLOCK)
        os.close(descriptor)
        # A checksum that fails is definite: the registry may have rolled it back by itself.
        roll_back_unless_done(faulty, number)


def test_short_soak_mixed_traffic_with_kills(faulty: Platform, heldout: Heldout) -> None:
    """The `make test` cut of `make soak`: mixed sync/async traffic while children are killed."""
    rows, labels = heldout
    wait_ready(faulty)
    rng = random.Random(7)
    picks = [rng.randrange(360) for _ in range(1000)]
    bodies = [{"model": "digits", "inputs": [rows[i]], "async": rng.random() < 0.3} for i in picks]

    def killer() -> None:
        for delay in (1.0, 2.5):
            time.sleep(delay)
            children = worker_children(faulty)
            if children:
                os.kill(rng.choice(children), signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    responses = fire(faulty, bodies, concurrency=32, retry=True)
    thread.join()
    unexpected = [
        (r.status_code, r.text[:200])
        for r, b in zip(responses, bodies, strict=True)
        if r.status_code != (202 if b["async"] else 200)
    ]
    assert not unexpected, unexpected[:5]
    jobs = poll_jobs(faulty, [r.json()["id"] for r, b in zip(responses, bodies, strict=True) if b["async"]])
    answers = {}
    for response, body, pick in zip(responses, bodies, picks, strict=True):
        result = jobs.get(response.json()["id"]) if body["async"] else response.json()
        assert result is not None, "an async job was lost"
        answers[response.json()["id"]] = (int(result["labels"][0]), labels[pick])
    assert len(answers) == 1000  # one answer per request, none duplicated
    assert sum(got == want for got, want in answers.values()) / 1000 >= 0.9
