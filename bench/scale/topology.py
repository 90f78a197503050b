"""The platform spread over hosts (bench/scale/netns.py), each process started with the start
script deploy/ runs for its type, exactly as compose and Kubernetes do:

    redis      deploy/bin/redis (REDIS_BIND = the host's address): the first start's primary
    postgres   deploy/bin/postgres (the registry; SQLite on the shared folder if it is missing)
    api1, api2 deploy/bin/api; api1 runs deploy/bin/migrate and the registration first, as the
               migrate Job and an operator would
    lb         deploy/bin/haproxy, health-checking each API's /healthz
    w1 .. w8   deploy/bin/worker accel (one Celery node per host: accel-w<n>@<hostname>)
    redis2     deploy/bin/redis with REDIS_REPLICAOF: the first start's replica
    s1 .. s3   deploy/bin/sentinel (quorum 2): every client, the harness's own included, finds the
               primary through REDIS_SENTINELS, and so does deploy/bin/redis when it starts again
               (Layout.sentinel=False: one Redis host, no replica, no Sentinel)

The model is the simulated accelerator (workers/simulated.py), registered and deployed like any
version with `manage.py register_model --deploy`; it sleeps per batch and holds no CPU, so what
caps throughput is the serving path. The hosts share the file system: the artifact store is one
folder (shared storage), each host keeps its own var folder and artifact cache.
"""

import json
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redis.sentinel

from bench.scale.netns import Host, HostProcess, Network
from workers.training.simulated import simulated_write

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "deploy" / "bin"
VENV_BIN = Path(sys.executable).parent
MODEL = "accel"
ENVIRONMENT = "dev"
TOKEN = "scale-harness-token"
REDIS_PORT = 6379
POSTGRES_PORT = 5432
API_PORT = 8000
LB_PORT = 8080
SENTINEL_PORT = 26379
SENTINEL_MASTER = "inference"
START_TIMEOUT_S = 180


@dataclass(frozen=True)
class Layout:
    """What to build. The simulated kernel takes batch_ms + row_ms per row for batches of at most
    max_batch_size rows of input_width values."""

    workers: int = 1
    apis: int = 2
    sentinel: bool = True
    worker_concurrency: int = 1
    batch_ms: float = 20.0
    row_ms: float = 0.05
    max_batch_size: int = 2
    input_width: int = 8


@dataclass
class Cluster:
    net: Network
    layout: Layout
    root: Path
    env: dict[str, str]
    primary: Host
    postgres: Host | None
    apis: list[Host] = field(default_factory=list)
    lb: Host | None = None
    workers: list[Host] = field(default_factory=list)
    replica: Host | None = None
    sentinels: list[Host] = field(default_factory=list)
    version: int = 1

    @property
    def url(self) -> str:
        """HAProxy's address: where clients (the load generator, in the root namespace) connect."""
        assert self.lb is not None
        return f"http://{self.lb.address}:{LB_PORT}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def redis_client(self) -> redis.Redis:
        """A client of the primary from the root namespace (the harness's own counting). With
        Sentinels, of the master they name: every new connection asks them, so it follows a
        failover as the platform's clients do."""
        if not self.sentinels:
            return redis.Redis(host=self.primary.address, port=REDIS_PORT, socket_timeout=5)
        # redis-py leaves its sync Sentinel unannotated.
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            [(s.address, SENTINEL_PORT) for s in self.sentinels],
            sentinel_kwargs={"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            SENTINEL_MASTER, socket_timeout=5, socket_connect_timeout=1
        )
        return client

    def redis_hosts(self) -> list[Host]:
        return [self.primary, *([self.replica] if self.replica else [])]

    def sentinel_master(self) -> Host | None:
        """The data host most Sentinels name the master (None until two of them agree)."""
        named: list[str] = []
        for sentinel in self.sentinels:
            try:
                client = redis.Redis(
                    host=sentinel.address, port=SENTINEL_PORT, socket_timeout=0.5, decode_responses=True
                )
                address = client.sentinel_get_master_addr_by_name(SENTINEL_MASTER)
            except redis.RedisError:
                continue
            if isinstance(address, tuple | list):
                named.append(str(address[0]))
        best = max(set(named), key=named.count) if named else None
        if best is None or named.count(best) < 2:
            return None
        return next((h for h in self.redis_hosts() if h.address == best), None)

    def body(self, first: float = 1.0, *, asynchronous: bool = False) -> bytes:
        """One request of one row; the simulated answer is `first + k` at output k. Asynchronous:
        answered 202 with a job id to poll."""
        row = [first] + [0.0] * (self.layout.input_width - 1)
        body: dict[str, object] = {"model": MODEL, "inputs": [row]}
        if asynchronous:
            body["async"] = True
        return json.dumps(body).encode()

    def components(self) -> dict[str, list[Host]]:
        """Hosts by component, for the CPU accounting."""
        return {
            "api": self.apis,
            "haproxy": [self.lb] if self.lb else [],
            "redis": [*self.redis_hosts(), *self.sentinels],
            "postgres": [self.postgres] if self.postgres else [],
            "worker": self.workers,
        }


def work_folder() -> Path:
    """The run's folder: under /tmp and searchable by everyone (deploy/bin/postgres runs the
    server as the postgres user, who must reach its data folder)."""
    root = Path(tempfile.mkdtemp(prefix="iscale-run-"))
    root.chmod(0o755)
    return root


def base_env(*, root: Path, layout: Layout, redis_host: str, database_url: str) -> dict[str, str]:
    """What every host's processes share: the registry, Redis, the demo key, and the settings of a
    measurement (no throttle or queue bound, no line per request, no task events)."""
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            (
                "CELERY_",
                "REDIS_",
                "DATABASE_",
                "INFERENCE_",
                "DJANGO_",
                "API_",
                "WORKER_",
                "POSTGRES_",
                "HAPROXY_",
            )
        )
    }
    return {
        **kept,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "DJANGO_SETTINGS_MODULE": "inference_project.settings.local",
        "DJANGO_ALLOWED_HOSTS": "*",
        "DATABASE_URL": database_url,
        "ARTIFACTS_ROOT": str(root / "artifacts"),
        "REDIS_HOST": redis_host,
        "REDIS_PORT": str(REDIS_PORT),
        "INFERENCE_ENVIRONMENT": ENVIRONMENT,
        "INFERENCE_DEMO_TOKEN": TOKEN,
        "INFERENCE_THROTTLE_PER_SECOND": "0",
        "INFERENCE_MAX_QUEUE_DEPTH": "1000000",
        # The API would hold at most 2 batches per model in flight: with 2-row batches that is
        # 4 requests per API host, fewer than 8 worker hosts take at once.
        "INFERENCE_MAX_INFLIGHT_BATCHES": "256",
        # Readiness follows a lost worker within seconds, as in the integration tests.
        "INFERENCE_HEARTBEAT_S": "0.5",
        "INFERENCE_HEARTBEAT_TTL_S": "3",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "plain",
        "CELERY_WORKER_SEND_TASK_EVENTS": "false",
        "WORKER_CONCURRENCY": str(layout.worker_concurrency),
        "REGISTRY_PROFILE_ON_REGISTER": "false",
        # The registry and API key caches expire well within fault 4's PostgreSQL outage (5 s),
        # so what serves meanwhile is their fallback (the last answer), not a fresh cache; one
        # lookup per second per API process at most, invisible in the points.
        "INFERENCE_REGISTRY_CACHE_S": "1",
        "INFERENCE_API_KEY_CACHE_S": "1",
    }


def host_env(cluster_env: dict[str, str], root: Path, host: Host, **extra: str) -> dict[str, str]:
    folder = root / "hosts" / host.name
    folder.mkdir(parents=True, exist_ok=True)
    return {
        **cluster_env,
        "INFERENCE_VAR_DIR": str(folder),
        "ARTIFACT_CACHE_DIR": str(folder / "artifact-cache"),
        **extra,
    }


def port_wait(address: str, port: int, process: HostProcess, *, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.host.name}/{process.name} exited:\n{process.log()[-3000:]}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex((address, port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.host.name}/{process.name} did not listen on {address}:{port}")
        time.sleep(0.1)


def postgres_wait(url: str, process: HostProcess) -> None:
    """Until it accepts a login: an open port may still answer "starting up"."""
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.popen.poll() is not None:
            raise RuntimeError(f"deploy/bin/postgres exited:\n{process.log()[-3000:]}")
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cluster_start(net: Network, layout: Layout, *, root: Path | None = None) -> Cluster:
    """Build every host and start the platform on them; returns once HAProxy answers /readyz
    through both APIs and every worker host serves the model."""
    root = root or work_folder()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    redis_host = net.host_add("redis")
    use_postgres = (BIN / "postgres").exists()
    pg_host = net.host_add("postgres") if use_postgres else None
    database_url = (
        f"postgres://inference:scale-harness@{pg_host.address}:{POSTGRES_PORT}/inference"
        if pg_host
        else f"sqlite:///{root / 'db.sqlite3'}"
    )
    env = base_env(root=root, layout=layout, redis_host=redis_host.address, database_url=database_url)
    cluster = Cluster(net=net, layout=layout, root=root, env=env, primary=redis_host, postgres=pg_host)
    if layout.sentinel:
        sentinels_add(cluster)
    redis_proc = redis_start(cluster, redis_host)
    if pg_host is not None:
        postgres_start(cluster)
    port_wait(redis_host.address, REDIS_PORT, redis_proc)
    if layout.sentinel:
        sentinels_start(cluster)

    cluster.apis = [net.host_add(f"api{i + 1}") for i in range(layout.apis)]
    first = cluster.apis[0]
    first_env = host_env(cluster.env, root, first)
    net.run(first, "migrate", [str(BIN / "migrate")], env=first_env, cwd=ROOT, timeout_s=START_TIMEOUT_S)
    model_deploy(cluster, batch_ms=layout.batch_ms, row_ms=layout.row_ms)
    net.run(
        first,
        "demo-key",
        [sys.executable, "manage.py", "ensure_demo_key"],
        env=first_env,
        cwd=ROOT,
        timeout_s=START_TIMEOUT_S,
    )
    for _ in range(layout.workers):
        worker_host_add(cluster, wait=False)
    for api in cluster.apis:
        net.start(
            api,
            "api",
            [str(BIN / "api")],
            env=host_env(cluster.env, root, api, API_HOST=api.address, API_PORT=str(API_PORT)),
            cwd=ROOT,
        )
    cluster.lb = net.host_add("lb")
    servers = {f"HAPROXY_API_{i + 1}": f"{api.address}:{API_PORT}" for i, api in enumerate(cluster.apis)}
    lb_proc = net.start(
        cluster.lb,
        "haproxy",
        [str(BIN / "haproxy")],
        env=host_env(
            cluster.env, root, cluster.lb, HAPROXY_BIND=f"{cluster.lb.address}:{LB_PORT}", **servers
        ),
        cwd=ROOT,
    )
    port_wait(cluster.lb.address, LB_PORT, lb_proc)
    for api in cluster.apis:
        port_wait(api.address, API_PORT, api.processes[-1])
    workers_wait(cluster)
    ready_wait(cluster)
    if layout.sentinel:
        sentinels_wait(cluster)
    return cluster


def redis_start(cluster: Cluster, host: Host, *, name: str = "redis") -> HostProcess:
    """deploy/bin/redis on its host, with the environment of every start (a supervisor's): the
    first start's replica has REDIS_REPLICAOF, and with Sentinels the script asks them first, so
    a host started again after a failover follows the master they name."""
    extra = {"REDIS_BIND": host.address}
    if host is cluster.replica:
        extra["REDIS_REPLICAOF"] = f"{cluster.primary.address} {REDIS_PORT}"
    return cluster.net.start(
        host, name, [str(BIN / "redis")], env=host_env(cluster.env, cluster.root, host, **extra), cwd=ROOT
    )


def postgres_start(cluster: Cluster, *, name: str = "postgres") -> HostProcess:
    """deploy/bin/postgres on the registry's host (its data folder kept across starts); returns
    once it accepts a login."""
    assert cluster.postgres is not None
    host = cluster.postgres
    process = cluster.net.start(
        host,
        name,
        [str(BIN / "postgres")],
        env=host_env(
            cluster.env,
            cluster.root,
            host,
            POSTGRES_LISTEN=host.address,
            POSTGRES_PORT=str(POSTGRES_PORT),
            POSTGRES_USER="inference",
            POSTGRES_PASSWORD="scale-harness",
            POSTGRES_DB="inference",
            # A throw-away cluster: no flush to disk per commit.
            POSTGRES_ARGS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        ),
        cwd=ROOT,
    )
    postgres_wait(cluster.env["DATABASE_URL"], process)
    return process


def sentinels_add(cluster: Cluster) -> None:
    """The hosts of a replica and three Sentinels, and every client's REDIS_SENTINELS, before any
    Redis starts: deploy/bin/redis asks the Sentinels first (refused at once on a first start,
    where no Sentinel listens yet on their hosts' addresses)."""
    cluster.replica = cluster.net.host_add("redis2")
    cluster.sentinels = [cluster.net.host_add(f"s{index + 1}") for index in range(3)]
    cluster.env |= {
        "REDIS_SENTINELS": ",".join(f"{s.address}:{SENTINEL_PORT}" for s in cluster.sentinels),
        "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        # A request is accepted once the replica holds its message (settings/base.py): the new
        # name, and the old one until every reader has the new.
        "INFERENCE_PUBLISH_REPLICAS": "1",
        "INFERENCE_ASYNC_REPLICAS": "1",
    }


def sentinels_start(cluster: Cluster) -> None:
    """The replica of the primary and three Sentinels (quorum 2, down after 1 s, failover timeout
    3 s: deploy/bin/sentinel's defaults), each on its host; every client then follows the primary
    the Sentinels name."""
    assert cluster.replica is not None
    process = redis_start(cluster, cluster.replica)
    port_wait(cluster.replica.address, REDIS_PORT, process)
    for sentinel in cluster.sentinels:
        process = cluster.net.start(
            sentinel,
            "sentinel",
            [str(BIN / "sentinel")],
            env=host_env(
                cluster.env,
                cluster.root,
                sentinel,
                SENTINEL_BIND=sentinel.address,
                SENTINEL_PORT=str(SENTINEL_PORT),
                SENTINEL_PRIMARY=f"{cluster.primary.address} {REDIS_PORT}",
            ),
            cwd=ROOT,
        )
        port_wait(sentinel.address, SENTINEL_PORT, process)


def sentinels_wait(cluster: Cluster, *, timeout_s: float = 30) -> None:
    """Until every Sentinel knows the two others and the replica (their hello messages, a couple
    of seconds): before that a failover could not reach its quorum or find a replica."""
    deadline = time.monotonic() + timeout_s
    states: list[object] = []
    while time.monotonic() < deadline:
        states = []
        for sentinel in cluster.sentinels:
            try:
                client = redis.Redis(host=sentinel.address, port=SENTINEL_PORT, socket_timeout=0.5)
                states.append(client.sentinel_master(SENTINEL_MASTER))
            except redis.RedisError as error:
                states.append(repr(error))
        if all(
            isinstance(s, dict) and s.get("num-other-sentinels") == 2 and s.get("num-slaves") == 1
            for s in states
        ):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Sentinels did not find each other and the replica: {states}")


def model_deploy(cluster: Cluster, *, batch_ms: float, row_ms: float) -> int:
    """A new version of the simulated accelerator with this kernel, registered and deployed from
    the first API host as an operator would (`manage.py register_model --deploy`); workers that
    run switch to it through the deployment channel. Returns its version number."""
    folder = cluster.root / f"model-{time.monotonic_ns()}"
    simulated_write(
        out=folder,
        name=MODEL,
        batch_ms=batch_ms,
        row_ms=row_ms,
        input_shape=(cluster.layout.input_width,),
        max_batch_size=cluster.layout.max_batch_size,
    )
    first = cluster.apis[0]
    process = cluster.net.run(
        first,
        f"register-{folder.name}",
        [sys.executable, "manage.py", "register_model", str(folder), "--deploy", ENVIRONMENT],
        env=host_env(cluster.env, cluster.root, first),
        cwd=ROOT,
        timeout_s=START_TIMEOUT_S,
    )
    found = re.search(rf"registered {MODEL} v(\d+) ", process.log())
    if found is None:
        raise RuntimeError(f"register_model did not name the version:\n{process.log()[-2000:]}")
    version = int(found.group(1))
    cluster.version = version
    return version


def worker_host_add(cluster: Cluster, *, wait: bool = True) -> Host:
    index = len(cluster.workers) + 1
    host = cluster.net.host_add(f"w{index}")
    cluster.net.start(
        host,
        "worker",
        [str(BIN / "worker"), MODEL],
        env=host_env(cluster.env, cluster.root, host, WORKER_NAME_SUFFIX=f"-w{index}"),
        cwd=ROOT,
    )
    cluster.workers.append(host)
    if wait:
        workers_wait(cluster)
    return host


def serving_pids(cluster: Cluster) -> set[int]:
    """Pids of the worker children whose readiness mark for the deployed version is fresh."""
    key = f"inference:serving:{ENVIRONMENT}:{MODEL}:{cluster.version}"
    fresh = cluster.redis_client().zrangebyscore(key, time.time() - 3, "+inf")
    return {int(member.decode().rsplit(":", 1)[1]) for member in fresh if isinstance(member, bytes)}


def workers_wait(cluster: Cluster, *, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until every live worker host has a child serving the deployed version."""
    deadline = time.monotonic() + timeout_s
    while True:
        serving = serving_pids(cluster)
        waiting = [h.name for h in cluster.workers if h.cut_at is None and not serving & set(h.pids())]
        if not waiting:
            return
        for host in cluster.workers:
            for process in host.processes:
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{host.name}/{process.name} exited:\n{process.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker hosts not serving {MODEL} v{cluster.version}: {waiting}")
        time.sleep(0.2)


def ready_wait(cluster: Cluster, *, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until HAProxy has every live API up (its health checks pass) and a request is answered."""
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            ready = [
                httpx.get(f"http://{api.address}:{API_PORT}/readyz", timeout=2).status_code == 200
                for api in cluster.apis
                if api.cut_at is None
            ]
            answer = httpx.post(
                f"{cluster.url}/api/v1/predictions", content=cluster.body(), headers=cluster.headers
            )
            if all(ready) and answer.status_code == 200:
                time.sleep(1.5)  # HAProxy's rise 2 x inter 500 ms for every server
                return
            last = f"readyz {ready}, predict {answer.status_code} {answer.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"the platform did not become ready through HAProxy: {last}")
