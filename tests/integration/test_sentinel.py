"""Fault 3 of #15: the Redis primary SIGKILLed under load, with Sentinel.

Real processes on loopback: a primary and its replica (`--replicaof`), both with a password, and
three `redis-server --sentinel` (quorum 2, down after 1 s, failover timeout 3 s) with their own;
the platform (`make run` with START_REDIS=false) given only REDIS_SENTINELS and friends, and
INFERENCE_PUBLISH_REPLICAS=1. Client threads send sync and async predictions while the primary is
SIGKILLed; once the Sentinels have promoted the replica the old primary is started again (as a
supervisor would), and the Sentinels make it the new primary's replica.

Clients must see only 200/202 and 503 with Retry-After, be served again within 10 s of the kill,
and every async job answered 202 must complete. The figures (failover, what clients saw, the cost
of the WAIT per publish) are printed and written to test-artifacts/sentinel.json."""

import json
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import redis.sentinel

from tests.conftest import Heldout, _wait_port, free_port
from tests.integration.conftest import ARTIFACTS_DIR, Platform, platform_env, running_platform
from tests.integration.load import poll_jobs, wait_ready

pytestmark = pytest.mark.integration

MASTER = "inference"
DATA_PASSWORD = "data-node-secret"
SENTINEL_PASSWORD = "sentinel-secret"
SERVED_AGAIN_WITHIN_S = 10.0


class RedisGroup:
    """The primary, its replica and three Sentinels; the test kills and restarts data nodes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def data_start(self, port: int, *, replica_of: int | None = None) -> None:
        folder = self.root / f"redis-{port}"
        folder.mkdir(exist_ok=True)
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        # As deploy/bin/redis: a replica that (re)connects is synced at once.
        args += [
            "--appendonly",
            "yes",
            "--save",
            "",
            "--loglevel",
            "warning",
            "--repl-diskless-sync-delay",
            "0",
        ]
        # masterauth on both: the old primary comes back as a replica of the promoted one.
        args += ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        log = (folder / "redis.log").open("ab")
        self.procs[port] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _wait_port(port, self.procs[port], f"redis-server :{port}")

    def sentinel_start(self, port: int, primary: int) -> None:
        folder = self.root / f"sentinel-{port}"
        folder.mkdir(exist_ok=True)
        # Sentinel rewrites its file as it learns peers, replicas and failovers: one file each.
        config = folder / "sentinel.conf"
        config.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {folder}",
                    f"requirepass {SENTINEL_PASSWORD}",
                    # The Sentinels ask each other whether the primary is down: with a password of
                    # their own they need it to do so.
                    f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                    f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2",
                    f"sentinel auth-pass {MASTER} {DATA_PASSWORD}",
                    f"sentinel down-after-milliseconds {MASTER} 2000",
                    f"sentinel failover-timeout {MASTER} 3000",
                    f"sentinel parallel-syncs {MASTER} 1",
                    "",
                ]
            )
        )
        log = (folder / "sentinel.log").open("ab")
        self.procs[port] = subprocess.Popen(
            ["redis-server", str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        _wait_port(port, self.procs[port], f"sentinel :{port}")

    def start(self) -> None:
        primary, replica = self.data_ports
        self.data_start(primary)
        self.data_start(replica, replica_of=primary)
        for port in self.sentinel_ports:
            self.sentinel_start(port, primary)
        # redis-py leaves its sync Sentinel unannotated.
        self.sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            [("127.0.0.1", p) for p in self.sentinel_ports],
            sentinel_kwargs={"password": SENTINEL_PASSWORD, "socket_timeout": 0.5},
            password=DATA_PASSWORD,
            socket_timeout=1,
        )
        # Ready when every Sentinel knows the two others and the replica (hello messages, ~2 s).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            # redis-py types the replies of SENTINEL commands loosely (`... | bool`).
            states = [
                cast("dict[str, Any]", self._sentinel_client(p).sentinel_master(MASTER))
                for p in self.sentinel_ports
            ]
            if all(s["num-other-sentinels"] == 2 and s["num-slaves"] == 1 for s in states):
                return
            time.sleep(0.2)
        raise AssertionError(f"the Sentinels did not find each other and the replica: {states}")

    def _sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=0.5)

    def master_port(self) -> int | None:
        """The primary's port as a majority of the Sentinels name it (None while they disagree)."""
        named = []
        for port in self.sentinel_ports:
            try:
                address = cast(
                    "tuple[str, int]", self._sentinel_client(port).sentinel_get_master_addr_by_name(MASTER)
                )
            except redis.RedisError:
                continue
            named.append(int(address[1]))
        best = max(set(named), key=named.count) if named else None
        return best if best is not None and named.count(best) >= 2 else None

    def master(self) -> redis.Redis:
        client: redis.Redis = self.sentinel.master_for(MASTER, socket_timeout=1)  # type: ignore[no-untyped-call]
        return client

    def kill(self, port: int) -> None:
        self.procs[port].send_signal(signal.SIGKILL)
        self.procs[port].wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            proc.wait(timeout=20)


@pytest.fixture(scope="module")
def redis_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisGroup]:
    group = RedisGroup(tmp_path_factory.mktemp("sentinel-group"))
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="module")
def ha_platform(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, redis_group: RedisGroup
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("sentinel-platform")
    env = platform_env(
        root,
        demo_model_dir,
        START_REDIS="false",
        REDIS_SENTINELS=",".join(f"127.0.0.1:{p}" for p in redis_group.sentinel_ports),
        REDIS_SENTINEL_MASTER=MASTER,
        REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        REDIS_PASSWORD=DATA_PASSWORD,
        INFERENCE_PUBLISH_REPLICAS="1",
    )
    # platform_env gave REDIS_PORT a free port where nothing listens: only the Sentinels lead to Redis.
    with running_platform(root, env, "sentinel") as platform:
        yield platform


@dataclass
class Answer:
    kind: str  # sync | async
    started: float  # monotonic
    ended: float
    status: int  # 0: no HTTP answer (connection error)
    retry_after: str | None
    job_id: str | None
    request_id: str | None = None  # X-Request-ID: to find a failed request in the logs
    reason: str | None = None  # an error's code and message


def _client_loop(
    platform: Platform, kind: str, rows: list[list[float]], stop: threading.Event, answers: list[Answer]
) -> None:
    with platform.client() as client:
        index = 0
        while not stop.is_set():
            body: dict[str, Any] = {"model": "digits", "inputs": [rows[index % len(rows)]]}
            if kind == "async":
                body["async"] = True
            index += 1
            started = time.monotonic()
            try:
                response = client.post("/api/v1/predictions", json=body)
            except httpx.HTTPError:
                answers.append(Answer(kind, started, time.monotonic(), 0, None, None))
                continue
            try:
                answer = response.json()
            except ValueError:
                answer = {}
            job_id = answer.get("id") if response.status_code == 202 else None
            error = answer.get("error") if response.status_code >= 400 else None
            reason = f"{error.get('code')}: {error.get('message')}" if isinstance(error, dict) else None
            answers.append(
                Answer(
                    kind,
                    started,
                    time.monotonic(),
                    response.status_code,
                    response.headers.get("Retry-After"),
                    job_id,
                    response.headers.get("X-Request-ID"),
                    reason,
                )
            )
            if response.status_code == 503:
                time.sleep(0.1)  # a real client waits Retry-After; shorter here, to see recovery finely


def _served_again(answers: list[Answer], kind: str, ok: int, killed: float) -> float | None:
    """Seconds from the kill to the first success of a request sent after the last failure (or
    after the kill, when none failed); None when none succeeded."""
    mine = [a for a in answers if a.kind == kind]
    last_failure = max((a.ended for a in mine if a.status != ok and a.ended >= killed), default=killed)
    firsts = [a.ended for a in mine if a.status == ok and a.started >= last_failure]
    return round(min(firsts) - killed, 2) if firsts else None


def _wait_cost(group: RedisGroup, rounds: int = 300) -> dict[str, float]:
    """What the WAIT adds per async request: the job record's SET alone, against SET + WAIT 1 in
    one pipeline (what apps/predictions/replication.py sends after each publish), in microseconds."""
    client = group.master()
    alone, waited = [], []
    for i in range(rounds):
        started = time.perf_counter()
        client.set(f"wait-probe:{i}", b"x" * 120, ex=60)
        alone.append(time.perf_counter() - started)
        pipe = client.pipeline(transaction=False)
        pipe.set(f"wait-probe:{i}", b"x" * 120, ex=60)
        pipe.wait(1, 500)
        started = time.perf_counter()
        _, acknowledged = pipe.execute()
        waited.append(time.perf_counter() - started)
        assert acknowledged == 1
    return {
        "set_p50_us": round(statistics.median(alone) * 1e6),
        "set_wait_p50_us": round(statistics.median(waited) * 1e6),
        "set_wait_p99_us": round(sorted(waited)[int(rounds * 0.99)] * 1e6),
        "wait_added_p50_us": round((statistics.median(waited) - statistics.median(alone)) * 1e6),
    }


def _async_latency(platform: Platform, rows: list[list[float]], rounds: int = 50) -> float:
    """Median ms of an async request (202) end to end, WAIT for the replica included."""
    took = []
    with platform.client() as client:
        for i in range(rounds):
            started = time.perf_counter()
            response = client.post(
                "/api/v1/predictions", json={"model": "digits", "inputs": [rows[i]], "async": True}
            )
            took.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
    return round(statistics.median(took) * 1000, 2)


@pytest.mark.failover
def test_primary_killed_under_load_fails_over_within_seconds_and_loses_no_job(
    ha_platform: Platform, redis_group: RedisGroup, heldout: Heldout
) -> None:
    rows, _ = heldout
    wait_ready(ha_platform)
    primary, replica = redis_group.data_ports
    assert redis_group.master_port() == primary
    figures: dict[str, Any] = {
        "wait_cost": _wait_cost(redis_group),
        "async_202_p50_ms": _async_latency(ha_platform, rows),
    }

    stop = threading.Event()
    answers: list[Answer] = []
    threads = [
        threading.Thread(target=_client_loop, args=(ha_platform, kind, rows, stop, answers), daemon=True)
        for kind in ("sync", "sync", "sync", "sync", "async", "async")
    ]
    for thread in threads:
        thread.start()
    time.sleep(4)
    killed = time.monotonic()
    redis_group.kill(primary)
    while redis_group.master_port() != replica:
        assert time.monotonic() - killed < 30, "the Sentinels did not promote the replica"
        time.sleep(0.05)
    figures["promoted_s"] = round(time.monotonic() - killed, 2)
    # The old primary comes back as the promoted one's replica: until then an async job cannot be
    # on a replica, and is refused (503) rather than risked. It must not come back as a primary:
    # a Sentinel that has not yet heard of the failover still names its address, so clients
    # would write there, and lose it all when the Sentinels make it a replica (seen in the first
    # runs of this test: requests hung for 12 s, one sync request lost).
    redis_group.data_start(primary, replica_of=replica)
    while redis_group.master().info("replication").get("connected_slaves", 0) < 1:
        assert time.monotonic() - killed < 60, "the old primary did not come back as a replica"
        time.sleep(0.1)
    figures["replica_back_s"] = round(time.monotonic() - killed, 2)
    time.sleep(max(0.0, killed + 15 - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(timeout=70)

    before = [a for a in answers if a.ended < killed]
    after = [a for a in answers if a.ended >= killed]
    seen: dict[str, dict[str, int]] = {}
    for answer in after:
        counts = seen.setdefault(answer.kind, {})
        counts[str(answer.status)] = counts.get(str(answer.status), 0) + 1
    figures["answers_before_kill"] = len(before)
    figures["answers_after_kill"] = seen
    figures["sync_served_again_s"] = _served_again(answers, "sync", 200, killed)
    figures["async_served_again_s"] = _served_again(answers, "async", 202, killed)
    figures["slowest_answer_across_kill_s"] = round(max(a.ended - a.started for a in after), 2)
    figures["slowest_200_across_kill_s"] = round(
        max((a.ended - a.started for a in answers if a.status == 200 and a.ended >= killed), default=0.0), 2
    )
    accepted = [a.job_id for a in answers if a.status == 202 and a.job_id]
    done = poll_jobs(ha_platform, accepted, timeout=120)
    figures["async_accepted"] = len(accepted)
    figures["async_completed"] = len(done)
    log = ha_platform.log()
    # celery#6348 (workers not failing over with Sentinel): what the workers' log says they did.
    figures["worker_broker_lost_lines"] = log.count("Connection to broker lost")
    # Counted from the start: each of the two workers (digits, platform) connects once at start-up.
    figures["worker_connected_lines"] = log.count(
        '"celery.worker.consumer.connection","message":"Connected to'
    )
    # Why requests were refused, and from when to when (seconds after the kill).
    reasons: dict[str, list[float]] = {}
    for a in after:
        if a.reason:
            reasons.setdefault(f"{a.kind} {a.status} {a.reason}", []).append(a.ended - killed)
    figures["refusals"] = {
        reason: {"count": len(at), "from_s": round(min(at), 2), "until_s": round(max(at), 2)}
        for reason, at in sorted(reasons.items())
    }
    figures["unexpected"] = [
        (a.kind, a.status, a.request_id, round(a.started - killed, 2))
        for a in answers
        if a.status not in (200, 202, 503)
    ]
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    (ARTIFACTS_DIR / "sentinel.json").write_text(json.dumps(figures, indent=2))
    print("\nsentinel failover:", json.dumps(figures, indent=2))

    assert before and all(a.status in (200, 202) for a in before), "errors before the kill"
    assert {a.status for a in answers if a.kind == "sync"} <= {200, 503}, seen
    assert {a.status for a in answers if a.kind == "async"} <= {202, 503}, seen
    assert all(a.retry_after for a in answers if a.status == 503), "a 503 without Retry-After"
    for kind in ("sync", "async"):
        again = figures[f"{kind}_served_again_s"]
        assert again is not None and again <= SERVED_AGAIN_WITHIN_S, figures
    assert len(done) == len(accepted), f"{len(accepted) - len(done)} accepted async jobs never completed"
    assert all(job["status"] == "done" for job in done.values()), [
        j for j in done.values() if j["status"] != "done"
    ]

    # Flower followed too: its broker page asks the Sentinels for the promoted primary and lists
    # the queues' lengths read there (a row per queue only when that read succeeded).
    flower = httpx.get(
        f"http://127.0.0.1:{ha_platform.env['FLOWER_PORT']}/broker",
        auth=tuple(ha_platform.env["FLOWER_BASIC_AUTH"].split(":", 1)),  # type: ignore[arg-type]
        timeout=10,
    )
    assert flower.status_code == 200 and "sentinel://" in flower.text, flower.text[:500]
    assert '<tr id="celery">' in flower.text, "Flower could not read the queues through the Sentinels"
