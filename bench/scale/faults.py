"""Faults of issue #15 on the multi-host harness, each a function the run calls and a test uses.

    1  a worker host cut off mid-batch under load (link down, then SIGKILL of all its processes)
    5  an API host lost behind HAProxy (cut the same way)
    4  the registry's PostgreSQL stopped (a fast shutdown) for ~5 s and started again
    3  the Redis primary's redis-server SIGKILLed: the Sentinels promote the replica, and the old
       primary's host starts deploy/bin/redis again, as a supervisor would

Clients (`ClosedLoop`): closed-loop synchronous requests from the root namespace through HAProxy,
each with its own `Idempotency-Key` and a distinct input, retried with the same key and body
after any error until answered (or given up: lost). Every attempt's outcome is kept: that is what
clients saw. Fault 3 adds asynchronous clients the same way (202 and a job id, retried with the
key on any other answer), whose jobs are polled once the fault is over.

What the platform did is counted from its records, not from logs:

- every answer a worker stores is SET under `celery-task-meta-<request id>` and PUBLISHed on that
  key (workers/results.py): a subscriber (`ResultWatch`) counts publications per request id, so
  a request computed twice shows as two, and one computed for nobody (a retry that got a new id)
  as an id no client was given; the stored record names the worker (`host:pid`) that answered;
- the messages a lost host had taken are the ones that stay in kombu's unacked hash (or a
  processing list of the reliable pop) while every live worker acknowledges within a batch:
  read twice, a second apart, after the cut (`inflight_requests`).
"""

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from kombu.serialization import loads as kombu_loads
from kombu.serialization import prepare_accept_content

from bench.scale.netns import Host, HostProcess
from bench.scale.topology import (
    API_PORT,
    MODEL,
    REDIS_PORT,
    ROOT,
    Cluster,
    host_env,
    postgres_start,
    redis_start,
)
from inference_common.results import RESULT_PREFIX
from workers.training.simulated import simulated_write

OUTPUTS = 10  # the simulated accelerator's scores per row (workers/training/simulated.py)
# Before a fault's clients start: the answers of earlier traffic (a load point's last requests)
# are published by then, so every publication the watch sees is of this fault's requests.
QUIET_S = 1.0
ACCEPT = prepare_accept_content(["msgpack", "json"])  # the platform's (CELERY_ACCEPT_CONTENT)


@dataclass
class Attempt:
    at: float
    outcome: str  # the HTTP status, or the exception's class name
    sent: float = 0.0
    retry_after: str | None = None


@dataclass
class Request:
    key: str
    value: int
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    id: str | None = None
    correct: bool = False
    done: float | None = None
    job_status: str | None = None  # an async request's job, once polled


class ClosedLoop:
    """`clients` connections, each sending its next request when the previous one is answered,
    in a thread of its own until stop(); join() waits for the outstanding ones (retrying).

    `asynchronous`: each request asks for a job (answered 202, its answer checked by jobs_poll).
    `deadline_s`: sent as X-Request-Timeout, so a request the platform lost answers 504 at that
    deadline (and is retried) instead of holding its client past the fault.
    `interval_s`: each client starts a request at most this often (async clients: a 202 comes in
    milliseconds, and unpaced they queue more than the workers compute, so the queue, which sync
    requests share, grows without end)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        clients: int,
        timeout_s: float = 15.0,
        give_up_s: float = 60.0,
        asynchronous: bool = False,
        deadline_s: float | None = None,
        interval_s: float = 0.0,
    ) -> None:
        self.cluster, self.clients, self.timeout_s, self.give_up_s = cluster, clients, timeout_s, give_up_s
        self.asynchronous, self.deadline_s, self.interval_s = asynchronous, deadline_s, interval_s
        self.ok = "202" if asynchronous else "200"
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._run()), name="closed-loop", daemon=True
        )
        self._next_value = 1

    def start(self) -> "ClosedLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float = 120) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError("clients still waiting after the run")

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(
            base_url=self.cluster.url, timeout=self.timeout_s, limits=limits
        ) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient, n: int) -> None:
        while not self._stop.is_set():
            value = self._next_value
            self._next_value += 1
            kind = "async" if self.asynchronous else "sync"
            request = Request(key=f"scale-{kind}-{n}-{value}", value=value, started=time.time())
            self.requests.append(request)
            await self._until_answered(client, request)
            await asyncio.sleep(max(0.0, request.started + self.interval_s - time.time()))

    async def _until_answered(self, client: httpx.AsyncClient, request: Request) -> None:
        body = self.cluster.body(float(request.value), asynchronous=self.asynchronous)
        headers = {**self.cluster.headers, "Idempotency-Key": request.key}
        if self.deadline_s is not None:
            headers["X-Request-Timeout"] = str(self.deadline_s)
        while time.time() - request.started < self.give_up_s:
            sent = time.time()
            try:
                response = await client.post("/api/v1/predictions", content=body, headers=headers)
                status = str(response.status_code)
                request.attempts.append(
                    Attempt(time.time(), status, sent, response.headers.get("Retry-After"))
                )
                if status == self.ok:
                    answer = response.json()
                    request.id = str(answer["id"])
                    request.correct = not self.asynchronous and answer["predictions"] == [expected(request)]
                    request.done = time.time()
                    return
            except httpx.HTTPError as exc:
                request.attempts.append(Attempt(time.time(), type(exc).__name__, sent))
            await asyncio.sleep(0.1)


def expected(request: Request) -> list[float]:
    """The simulated accelerator's answer to the request's row."""
    return [float(request.value + k) for k in range(OUTPUTS)]


def jobs_poll(cluster: Cluster, requests: list[Request], *, timeout_s: float = 60.0) -> None:
    """Each accepted async request's job, polled (GET /api/v1/predictions/<id>) until it is no
    longer pending: its status, and whether its answer is the right one."""
    waiting = [r for r in requests if r.id is not None]
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=cluster.url, headers=cluster.headers, timeout=10) as client:
        while waiting and time.monotonic() < deadline:
            for request in list(waiting):
                try:
                    response = client.get(f"/api/v1/predictions/{request.id}")
                except httpx.HTTPError:
                    continue
                job = response.json() if response.status_code == 200 else {}
                if job.get("status") in (None, "pending"):
                    continue
                request.job_status = str(job["status"])
                request.correct = job.get("predictions") == [expected(request)]
                waiting.remove(request)
            time.sleep(0.3)


class ResultWatch:
    """Every answer published while it runs: (request id, when, by which worker).

    Subscribed on the master the Sentinels name; when that connection breaks (fault 3), it
    subscribes again on the master they name next. Answers published in between are not seen
    (`gaps`), so a count of publications is then a lower bound."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.published: list[tuple[str, float, str]] = []
        self.gaps: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="result-watch", daemon=True)

    def start(self) -> "ResultWatch":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the result subscription did not start")
        return self

    def stop(self) -> None:
        time.sleep(0.5)  # the last publications in flight
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        lost_at: float | None = None
        while not self._stop.is_set():
            try:
                pubsub = self.cluster.redis_client().pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{RESULT_PREFIX}*")
                if lost_at is not None:
                    self.gaps.append((lost_at, time.time()))
                    lost_at = None
                self._ready.set()
                self._listen(pubsub)
                pubsub.close()
            except (redis.RedisError, OSError):
                lost_at = lost_at or time.time()
                time.sleep(0.05)

    def _listen(self, pubsub: redis.client.PubSub) -> None:
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            request_id = message["channel"].decode().removeprefix(RESULT_PREFIX)
            meta = kombu_loads(message["data"], "application/x-msgpack", "binary", accept=ACCEPT)
            worker = str((meta.get("result") or {}).get("worker", ""))
            self.published.append((request_id, time.time(), worker))

    def counts(self) -> Counter[str]:
        return Counter(request_id for request_id, _, _ in self.published)


def _message_request_ids(raw: dict[str, Any]) -> list[str]:
    """The request ids of a batch task message, as kombu keeps it."""
    body = raw["body"]
    if raw.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    decoded = kombu_loads(body, raw["content-type"], raw["content-encoding"], accept=ACCEPT)
    args = decoded[0] if isinstance(decoded, list) else decoded.get("args", [])
    return [str(part["id"]) for part in args[0]["parts"]]


def inflight_requests(client: redis.Redis) -> dict[str, list[str]]:
    """The batch messages taken by a worker and not yet acknowledged, by delivery tag: kombu's
    unacked hash, and the reliable pop's processing lists."""
    found: dict[str, list[str]] = {}
    for tag, value in client.hgetall("unacked").items():
        raw = json.loads(value)[0]
        found[tag.decode() if isinstance(tag, bytes) else tag] = _message_request_ids(raw)
    for key in client.scan_iter("reliable.processing.*"):
        for value in client.lrange(key, 0, -1):
            raw = json.loads(value)
            found[raw["properties"]["delivery_tag"]] = _message_request_ids(raw)
    return found


def kernel_catch(host: Host, *, timeout_s: float = 3.0) -> bool:
    """Until a worker child of the host is inside the simulated kernel (its main thread asleep in
    time.sleep, the kernel's `nanosleep` wait channel), then every process of the host frozen
    there (SIGSTOP, microseconds: a power cut at that instant), so the cut that follows lands
    mid-batch however long taking the link down takes; False if none was within the timeout
    (nothing frozen)."""
    pids = set(host.pids())
    children = [pid for pid in pids if _parent(pid) in pids]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in children:
            try:
                inside = "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
            except OSError:
                continue
            if inside:
                for frozen in [pid, *pids]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(frozen, signal.SIGSTOP)
                return True
        time.sleep(0.0005)
    return False


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _worker_hosts(cluster: Cluster) -> dict[int, str]:
    return {pid: host.name for host in cluster.workers if host.cut_at is None for pid in host.pids()}


def clients_view(requests: list[Request], *, since: float, ok: str = "200") -> dict[str, Any]:
    """What clients saw: every attempt's outcome, and when errors started and ended (seconds
    after `since`, the fault)."""
    outcomes = Counter(a.outcome for r in requests for a in r.attempts)
    errors = [a.at for r in requests for a in r.attempts if a.outcome != ok]
    retried = [r for r in requests if len(r.attempts) > 1]
    latencies = sorted((r.done - r.started) for r in requests if r.done is not None)
    return {
        "attempts": dict(sorted(outcomes.items())),
        "requests_retried": len(retried),
        "errors_from_s": round(min(errors) - since, 2) if errors else None,
        "errors_until_s": round(max(errors) - since, 2) if errors else None,
        "errors_for_s": round(max(errors) - min(errors), 2) if errors else 0.0,
        "slowest_answer_s": round(latencies[-1], 2) if latencies else None,
        "served_again_s": served_again(requests, ok=ok, since=since),
        "503_without_retry_after": sum(
            1 for r in requests for a in r.attempts if a.outcome == "503" and not a.retry_after
        ),
    }


def served_again(requests: list[Request], *, ok: str, since: float) -> float | None:
    """Seconds from `since` to the first success of an attempt sent after the last failure (after
    `since` when none failed); None when none succeeded."""
    attempts = [a for r in requests for a in r.attempts]
    last_failure = max((a.at for a in attempts if a.outcome != ok and a.at >= since), default=since)
    firsts = [a.at for a in attempts if a.outcome == ok and a.sent >= last_failure]
    return round(min(firsts) - since, 2) if firsts else None


def records_check(cluster: Cluster, requests: list[Request], watch: ResultWatch) -> dict[str, Any]:
    """Lost and duplicated, from the records: each answered id's stored result, and how often each
    id was published."""
    answered = [r for r in requests if r.id is not None]
    ids = [r.id for r in answered if r.id is not None]
    client = cluster.redis_client()
    stored = client.mget([RESULT_PREFIX + i for i in ids]) if ids else []
    counts = watch.counts()
    return {
        "requests": len(requests),
        "answered": len(answered),
        "lost": len(requests) - len(answered),
        "wrong_answers": sum(1 for r in answered if not r.correct),
        "ids_given_twice": len(ids) - len(set(ids)),
        "records_missing": sum(1 for value in stored if value is None),
        "computed_twice": sum(n - 1 for n in counts.values() if n > 1),
        "computed_for_nobody": len(set(counts) - set(ids)),
    }


def fault_worker_host_cut(
    cluster: Cluster, *, clients: int, seconds: float = 18.0, cut_after_s: float = 4.0
) -> dict[str, Any]:
    """Fault 1: the last live worker host cut off under load. Its requests must be answered by
    other hosts, none lost or answered twice, the first redelivered within 10 s."""
    live = [h for h in cluster.workers if h.cut_at is None]
    if len(live) < 2:
        raise RuntimeError("fault 1 needs two worker hosts: one to lose, one to serve its requests")
    victim: Host = live[-1]
    hosts_by_pid = _worker_hosts(cluster)
    time.sleep(QUIET_S)
    watch = ResultWatch(cluster).start()
    loop = ClosedLoop(cluster, clients=clients).start()
    time.sleep(cut_after_s)
    mid_batch = kernel_catch(victim)
    cut_at = cluster.net.cut(victim)
    # Live workers acknowledge within a batch (tens of ms); what is still taken a second later,
    # and was already a second after the cut, is the lost host's.
    time.sleep(1.0)
    first = inflight_requests(cluster.redis_client())
    time.sleep(1.0)
    second = inflight_requests(cluster.redis_client())
    stranded = sorted({i for tag, ids in first.items() if tag in second for i in ids})
    time.sleep(max(0.0, seconds - cut_after_s - 2.0))
    loop.stop()
    loop.join()
    watch.stop()
    answers: dict[str, tuple[float, str]] = {}
    for request_id, at, worker in watch.published:
        answers.setdefault(request_id, (at, worker))
    served_by: Counter[str] = Counter()
    redelivered_after = []
    answered_before_cut = []
    for request_id in stranded:
        if request_id in answers:
            at, worker = answers[request_id]
            pid = int(worker.rsplit(":", 1)[1]) if ":" in worker else -1
            host = hosts_by_pid.get(pid, "?")
            if host == victim.name:
                # Answered just before the cut, its acknowledgement lost with the link: the
                # redelivered batch skips it (workers/serving.py). Not stranded.
                answered_before_cut.append(request_id)
                continue
            served_by[host] += 1
            redelivered_after.append(at - cut_at)
    stranded = [i for i in stranded if i not in answered_before_cut]
    return {
        "fault": "worker host cut off mid-batch",
        "host": victim.name,
        "worker_hosts_before": len(live),
        "clients": clients,
        "seconds": seconds,
        "cut_inside_the_kernel": mid_batch,
        "stranded_requests": len(stranded),
        "answered_by_it_before_the_cut": len(answered_before_cut),
        "stranded_answered": len(redelivered_after),
        "stranded_served_by": dict(served_by),
        "redelivered_after_s": round(max(redelivered_after), 2) if redelivered_after else None,
        "first_redelivered_after_s": round(min(redelivered_after), 2) if redelivered_after else None,
        "clients_saw": clients_view(loop.requests, since=cut_at),
        **records_check(cluster, loop.requests, watch),
    }


def fault_api_host_cut(
    cluster: Cluster, *, clients: int, seconds: float = 14.0, cut_after_s: float = 4.0
) -> dict[str, Any]:
    """Fault 5: an API host lost behind HAProxy. Clients retrying with their Idempotency-Key get
    every answer exactly once: one id per request, the right answer, computed once."""
    live = [h for h in cluster.apis if h.cut_at is None]
    if len(live) < 2:
        raise RuntimeError("fault 5 needs two API hosts: one to lose, one to answer the retries")
    victim = live[0]
    time.sleep(QUIET_S)
    watch = ResultWatch(cluster).start()
    loop = ClosedLoop(cluster, clients=clients).start()
    time.sleep(cut_after_s)
    cut_at = cluster.net.cut(victim)
    time.sleep(max(0.0, seconds - cut_after_s))
    loop.stop()
    loop.join()
    watch.stop()
    return {
        "fault": "API host lost behind HAProxy",
        "host": victim.name,
        "api_hosts_before": len(live),
        "clients": clients,
        "seconds": seconds,
        "clients_saw": clients_view(loop.requests, since=cut_at),
        **records_check(cluster, loop.requests, watch),
    }


def _running(host: Host, name: str) -> HostProcess:
    """The host's live process started under this name (or a restart of it: `<name>-...`)."""
    for process in reversed(host.processes):
        if process.name.startswith(name) and process.popen.poll() is None:
            return process
    raise RuntimeError(f"no {name} running on {host.name}")


def staff_token(cluster: Cluster) -> str:
    """A staff user's DRF token, made on a live API host as an operator would (manage.py)."""
    host = next(h for h in cluster.apis if h.cut_at is None)
    code = (
        "from django.contrib.auth import get_user_model; "
        "from rest_framework.authtoken.models import Token; "
        "user, _ = get_user_model().objects.get_or_create("
        "username='scale-staff', defaults={'is_staff': True, 'is_superuser': True}); "
        "print(Token.objects.get_or_create(user=user)[0].key)"
    )
    process = cluster.net.run(
        host,
        "staff-token",
        [sys.executable, "manage.py", "shell", "-c", code],
        env=host_env(cluster.env, cluster.root, host),
        cwd=ROOT,
        timeout_s=120,
    )
    found = re.findall(r"\b[0-9a-f]{40}\b", process.log())
    if not found:
        raise RuntimeError(f"no token printed:\n{process.log()[-2000:]}")
    return str(found[-1])


def fault_postgres_restart(
    cluster: Cluster,
    *,
    clients: int,
    outage_s: float = 5.0,
    stop_after_s: float = 3.0,
    after_s: float = 3.0,
    recovery_limit_s: float = 10.0,
) -> dict[str, Any]:
    """Fault 4: the registry's PostgreSQL stopped under sync load (SIGTERM to deploy/bin/postgres:
    a fast shutdown) for `outage_s`, then started again on its host. Predictions keep being
    answered from the APIs' last registry state; a registry write through HAProxy (a staff
    upload of a new accel version) answers 503 with Retry-After meanwhile and 201 once back."""
    if cluster.postgres is None:
        raise RuntimeError("fault 4 needs the registry on PostgreSQL (deploy/bin/postgres)")
    folder = cluster.root / "upload-model"
    simulated_write(
        out=folder,
        name=MODEL,
        batch_ms=cluster.layout.batch_ms,
        row_ms=cluster.layout.row_ms,
        input_shape=(cluster.layout.input_width,),
        max_batch_size=cluster.layout.max_batch_size,
    )
    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.iterdir())]
    staff = httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Token {staff_token(cluster)}"}, timeout=30
    )
    live_apis = [h for h in cluster.apis if h.cut_at is None]
    time.sleep(QUIET_S)
    watch = ResultWatch(cluster).start()
    loop = ClosedLoop(cluster, clients=clients).start()
    time.sleep(stop_after_s)
    server = _running(cluster.postgres, "postgres")
    stopped = time.time()
    server.popen.send_signal(signal.SIGTERM)  # the script's trap: SIGINT to the server, a fast shutdown
    server.popen.wait(timeout=30)
    stop_s = time.time() - stopped
    refused: list[httpx.Response] = []
    readyz: Counter[int] = Counter()
    while time.time() - stopped < outage_s:
        refused.append(staff.post(f"/api/v1/models/{MODEL}/versions", files=files))
        for api in live_apis:
            readyz[httpx.get(f"http://{api.address}:{API_PORT}/readyz", timeout=5).status_code] += 1
        time.sleep(0.5)
    restarted_at = time.time()
    postgres_start(cluster, name="postgres-restarted")
    back = time.time()
    while True:
        write = staff.post(f"/api/v1/models/{MODEL}/versions", files=files)
        if write.status_code != 503 or time.time() - back > recovery_limit_s:
            break
        refused.append(write)
        time.sleep(0.2)
    written = time.time()
    time.sleep(after_s)  # serving on after the restart, with fresh registry reads again
    loop.stop()
    loop.join()
    watch.stop()
    staff.close()
    during = [r for r in loop.requests if r.done is not None and stopped <= r.done <= back]
    refused_statuses = Counter(r.status_code for r in refused)
    return {
        "fault": "PostgreSQL restarted",
        "host": cluster.postgres.name,
        "clients": clients,
        "registry_cache_s": float(cluster.env["INFERENCE_REGISTRY_CACHE_S"]),
        "api_key_cache_s": float(cluster.env["INFERENCE_API_KEY_CACHE_S"]),
        "postgres_stop_s": round(stop_s, 2),
        "outage_s": round(back - stopped, 2),
        "postgres_start_s": round(back - restarted_at, 2),
        "served_during_outage": len(during),
        "failed_attempts": sum(1 for r in loop.requests for a in r.attempts if a.outcome != "200"),
        "writes_refused": len(refused),
        "writes_refused_statuses": {str(k): v for k, v in sorted(refused_statuses.items())},
        "writes_refused_without_retry_after": sum(1 for r in refused if not r.headers.get("Retry-After")),
        "writes_refused_codes": sorted({_error_code(r) for r in refused}),
        "writes_refused_for_s": round(written - stopped, 2),
        "write_after_restart_s": round(written - back, 2),
        "write_status": write.status_code,
        "written_version": write.json().get("number") if write.status_code == 201 else None,
        "readyz_during_outage": {str(k): v for k, v in sorted(readyz.items())},
        "clients_saw": clients_view(loop.requests, since=stopped),
        **records_check(cluster, loop.requests, watch),
    }


def _per_second(watch: ResultWatch, *, since: float) -> list[int]:
    """Answers the workers published in each second from `since` on (what a stall looks like)."""
    seconds = [int(at - since) for _, at, _ in watch.published if at >= since]
    return [seconds.count(n) for n in range(max(seconds, default=-1) + 1)]


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:80]}"


def _redis_servers(host: Host) -> list[int]:
    found = []
    for pid in host.pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "redis-server":
                found.append(pid)
        except OSError:
            continue
    return found


def _replication(host: Host) -> dict[str, Any]:
    """INFO replication of the data node on the host, read directly (not through the Sentinels);
    {} while it does not answer."""
    try:
        info = redis.Redis(host=host.address, port=REDIS_PORT, socket_timeout=1).info("replication")
    except redis.RedisError:
        return {}
    return dict(info)


def fault_redis_primary_kill(
    cluster: Cluster,
    *,
    clients: int,
    async_clients: int,
    seconds: float = 20.0,
    kill_after_s: float = 4.0,
    deadline_s: float = 12.0,
    async_interval_s: float = 0.25,
) -> dict[str, Any]:
    """Fault 3: the Redis primary's redis-server SIGKILLed (the host stays: not a link cut) under
    sync and async load. Once the Sentinels promoted the replica, deploy/bin/redis starts again on
    the old primary's host, as a supervisor would: it asks the Sentinels and comes back as the new
    primary's replica, never as a primary (which would take writes its conversion then wipes).
    Clients must see only 200/202 and 503 with Retry-After, be served again within seconds, and
    every job answered 202 must complete."""
    if not cluster.sentinels or cluster.replica is None:
        raise RuntimeError("fault 3 needs the Sentinel layout (Layout.sentinel)")
    old = cluster.sentinel_master()
    new = next((h for h in cluster.redis_hosts() if h is not old), None)
    if old is None or new is None:
        raise RuntimeError("the Sentinels name no master, or there is no replica to promote")
    time.sleep(QUIET_S)
    watch = ResultWatch(cluster).start()
    sync = ClosedLoop(cluster, clients=clients, timeout_s=deadline_s + 8, deadline_s=deadline_s).start()
    # Paced: together a fraction of what the workers compute, so the backlog of the outage drains.
    jobs = ClosedLoop(cluster, clients=async_clients, asynchronous=True, interval_s=async_interval_s).start()
    time.sleep(kill_after_s)
    process, servers = _running(old, "redis"), _redis_servers(old)
    for pid in servers:
        os.kill(pid, signal.SIGKILL)
    killed = time.time()
    process.popen.wait(timeout=10)
    while cluster.sentinel_master() is not new:
        if time.time() - killed > 30:
            raise RuntimeError("the Sentinels did not promote the replica")
        time.sleep(0.05)
    promoted = time.time()
    # Started again as a supervisor would: the same environment as its first start.
    restarted = redis_start(cluster, old, name="redis-restarted")
    first_role = ""
    while True:
        info = _replication(old)
        first_role = first_role or str(info.get("role", ""))
        linked = info.get("master_host") == new.address and info.get("master_link_status") == "up"
        if linked and int(_replication(new).get("connected_slaves", 0)) >= 1:
            break
        if time.time() - killed > 60:
            raise RuntimeError(f"{old.name} did not come back as {new.name}'s replica:\n{restarted.log()}")
        time.sleep(0.1)
    replica_back = time.time()
    time.sleep(max(0.0, killed + seconds - kill_after_s - time.time()))
    sync.stop()
    jobs.stop()
    sync.join()
    jobs.join()
    jobs_poll(cluster, jobs.requests)
    watch.stop()
    accepted = [r for r in jobs.requests if r.id is not None]
    troubled = [
        {"key": r.key, "id": r.id, "attempts": [(round(a.at - killed, 2), a.outcome) for a in r.attempts]}
        for r in [*sync.requests, *jobs.requests]
        if any(a.outcome not in ("200", "202", "503") for a in r.attempts)
    ]
    return {
        "fault": "Redis primary SIGKILLed",
        "host": old.name,
        "promoted": new.name,
        "clients": clients,
        "async_clients": async_clients,
        "seconds": seconds,
        "sync_deadline_s": deadline_s,
        "redis_servers_killed": len(servers),
        "promoted_after_s": round(promoted - killed, 2),
        "replica_back_after_s": round(replica_back - killed, 2),
        "restarted_as": first_role,
        "restart_log": [line for line in restarted.log().splitlines() if "deploy/bin/redis" in line],
        "clients_saw": clients_view(sync.requests, since=killed),
        "async_clients_saw": clients_view(jobs.requests, since=killed, ok="202"),
        "async_accepted": len(accepted),
        "async_done": sum(1 for r in accepted if r.job_status == "done"),
        "async_statuses": dict(Counter(str(r.job_status) for r in accepted)),
        "watch_gaps_s": [round(b - a, 2) for a, b in watch.gaps],
        "answers_per_second": _per_second(watch, since=killed),
        "requests_with_other_outcomes": troubled[:20],
        # A sync request answered 504 whose task ran later shows here (the client's retry got a
        # new id): when each such answer was published, and by which worker.
        "answers_for_nobody": _answers_for_nobody(watch, [*sync.requests, *jobs.requests], since=killed)[:20],
        **records_check(cluster, [*sync.requests, *jobs.requests], watch),
    }


def _answers_for_nobody(
    watch: ResultWatch, requests: list[Request], *, since: float
) -> list[tuple[str, float, str]]:
    given = {r.id for r in requests if r.id is not None}
    return [
        (request_id, round(at - since, 2), worker)
        for request_id, at, worker in watch.published
        if request_id not in given
    ]
