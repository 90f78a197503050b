"""Faults of issue #15 on the multi-host harness, each a function the run calls and a test uses.

    1  a worker host cut off mid-batch under load (link down, then SIGKILL of all its processes)
    5  an API host lost behind HAProxy (cut the same way)

Clients (`ClosedLoop`): closed-loop synchronous requests from the root namespace through HAProxy,
each with its own `Idempotency-Key` and a distinct input, retried with the same key and body
after any error until answered (or given up: lost). Every attempt's outcome is kept: that is what
clients saw.

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
import json
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

from bench.scale.netns import Host
from bench.scale.topology import Cluster
from inference_common.results import RESULT_PREFIX

OUTPUTS = 10  # the simulated accelerator's scores per row (workers/training/simulated.py)
# Before a fault's clients start: the answers of earlier traffic (a load point's last requests)
# are published by then, so every publication the watch sees is of this fault's requests.
QUIET_S = 1.0
ACCEPT = prepare_accept_content(["msgpack", "json"])  # the platform's (CELERY_ACCEPT_CONTENT)


@dataclass
class Attempt:
    at: float
    outcome: str  # the HTTP status, or the exception's class name


@dataclass
class Request:
    key: str
    value: int
    started: float
    attempts: list[Attempt] = field(default_factory=list)
    id: str | None = None
    correct: bool = False
    done: float | None = None


class ClosedLoop:
    """`clients` connections, each sending its next request when the previous one is answered,
    in a thread of its own until stop(); join() waits for the outstanding ones (retrying)."""

    def __init__(
        self, cluster: Cluster, *, clients: int, timeout_s: float = 15.0, give_up_s: float = 60.0
    ) -> None:
        self.cluster, self.clients, self.timeout_s, self.give_up_s = cluster, clients, timeout_s, give_up_s
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
            request = Request(key=f"scale-{n}-{value}", value=value, started=time.time())
            self.requests.append(request)
            await self._until_answered(client, request)

    async def _until_answered(self, client: httpx.AsyncClient, request: Request) -> None:
        body = self.cluster.body(float(request.value))
        headers = {**self.cluster.headers, "Idempotency-Key": request.key}
        while time.time() - request.started < self.give_up_s:
            try:
                response = await client.post("/api/v1/predictions", content=body, headers=headers)
                request.attempts.append(Attempt(time.time(), str(response.status_code)))
                if response.status_code == 200:
                    answer = response.json()
                    request.id = str(answer["id"])
                    expected = [float(request.value + k) for k in range(OUTPUTS)]
                    request.correct = answer["predictions"] == [expected]
                    request.done = time.time()
                    return
            except httpx.HTTPError as exc:
                request.attempts.append(Attempt(time.time(), type(exc).__name__))
            await asyncio.sleep(0.1)


class ResultWatch:
    """Every answer published while it runs: (request id, when, by which worker)."""

    def __init__(self, cluster: Cluster) -> None:
        self.client = cluster.redis_client()
        self.published: list[tuple[str, float, str]] = []
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
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(f"{RESULT_PREFIX}*")
        self._ready.set()
        while not self._stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is None:
                continue
            request_id = message["channel"].decode().removeprefix(RESULT_PREFIX)
            meta = kombu_loads(message["data"], "application/x-msgpack", "binary", accept=ACCEPT)
            worker = str((meta.get("result") or {}).get("worker", ""))
            self.published.append((request_id, time.time(), worker))
        pubsub.close()

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


def kernel_wait(host: Host, *, timeout_s: float = 3.0) -> bool:
    """Until a worker child of the host is inside the simulated kernel (its main thread asleep in
    time.sleep, the kernel's `nanosleep` wait channel), so the cut lands mid-batch; False if none
    was within the timeout."""
    pids = set(host.pids())
    children = [pid for pid in pids if _parent(pid) in pids]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in children:
            try:
                if "nanosleep" in Path(f"/proc/{pid}/wchan").read_text():
                    return True
            except OSError:
                continue
        time.sleep(0.0005)
    return False


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _worker_hosts(cluster: Cluster) -> dict[int, str]:
    return {pid: host.name for host in cluster.workers if host.cut_at is None for pid in host.pids()}


def clients_view(requests: list[Request], *, since: float) -> dict[str, Any]:
    """What clients saw: every attempt's outcome, and when errors started and ended (seconds
    after `since`, the fault)."""
    outcomes = Counter(a.outcome for r in requests for a in r.attempts)
    errors = [a.at for r in requests for a in r.attempts if a.outcome != "200"]
    retried = [r for r in requests if len(r.attempts) > 1]
    latencies = sorted((r.done - r.started) for r in requests if r.done is not None)
    return {
        "attempts": dict(sorted(outcomes.items())),
        "requests_retried": len(retried),
        "errors_from_s": round(min(errors) - since, 2) if errors else None,
        "errors_until_s": round(max(errors) - since, 2) if errors else None,
        "errors_for_s": round(max(errors) - min(errors), 2) if errors else 0.0,
        "slowest_answer_s": round(latencies[-1], 2) if latencies else None,
    }


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
    mid_batch = kernel_wait(victim)
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
    for request_id in stranded:
        if request_id in answers:
            at, worker = answers[request_id]
            pid = int(worker.rsplit(":", 1)[1]) if ":" in worker else -1
            served_by[hosts_by_pid.get(pid, "?")] += 1
            redelivered_after.append(at - cut_at)
    return {
        "fault": "worker host cut off mid-batch",
        "host": victim.name,
        "worker_hosts_before": len(live),
        "clients": clients,
        "seconds": seconds,
        "cut_inside_the_kernel": mid_batch,
        "stranded_requests": len(stranded),
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
