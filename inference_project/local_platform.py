"""Run the whole platform on one machine, in the foreground: `make run`.

Starts Redis (own data dir, AOF on), applies migrations, on first run trains, registers and
deploys the demo model, creates the admin user and the demo API key, then starts one Celery
worker per served model queue, the API under uvicorn, Flower, and Prometheus (with the node
exporter) when Debian's packages are installed. Prints the URLs and a working
curl once /readyz answers 200. Ctrl-C (or SIGTERM) stops every child; if one child dies, all stop.

This process never imports TensorFlow: training runs in a child process.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import django
import redis
import yaml

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_project.settings.local")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from apps.models_registry import selectors  # noqa: E402
from apps.models_registry.services import deployment_set  # noqa: E402
from apps.predictions.authentication import api_key_create  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent
VAR = Path(os.environ.get("INFERENCE_VAR_DIR", settings.VAR_DIR))
API_HOST = os.environ.get("API_HOST", "127.0.0.1")
API_PORT = int(os.environ.get("API_PORT", "8000"))
API_WORKERS = int(os.environ.get("API_WORKERS", "1"))
# asyncio's loop, not uvloop: uvloop's libuv accepts one connection per loop iteration, so a busy
# API took new connections at ~16/s and 2,000 clients waited up to the whole run for their first
# answer (p99 6.9 s); asyncio's loop accepts up to the backlog at once (p99 0.8 s), at the same
# throughput within noise (docs/architecture.md).
API_LOOP = os.environ.get("API_LOOP", "asyncio")
FLOWER_PORT = int(os.environ.get("FLOWER_PORT", "5555"))
WORKER_CONCURRENCY = int(os.environ.get("WORKER_CONCURRENCY", "1"))
DEMO_DIR = Path(os.environ.get("INFERENCE_DEMO_DIR", VAR / "demo" / "digits"))
READY_TIMEOUT_S = float(os.environ.get("READY_TIMEOUT_S", "300"))
# Flower always sits behind basic auth: FLOWER_BASIC_AUTH=user:password, else generated and printed.
FLOWER_AUTH = os.environ.get("FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
# Worker n (0, 1, ...) serves its metrics on WORKER_METRICS_PORT + n.
WORKER_METRICS_PORT = int(os.environ.get("WORKER_METRICS_PORT", "9464"))
# Prometheus (Debian's package) starts when installed, unless START_PROMETHEUS=false.
PROMETHEUS_PORT = int(os.environ.get("PROMETHEUS_PORT", "9090"))
PROMETHEUS_SCRAPE_INTERVAL = os.environ.get("PROMETHEUS_SCRAPE_INTERVAL", "5s")
NODE_EXPORTER_PORT = int(os.environ.get("NODE_EXPORTER_PORT", "9100"))
PROMETHEUS_CONFIG = Path(settings.BASE_DIR) / "deploy" / "prometheus"


def worker_concurrency(model_name: str) -> int:
    """Children of a model's worker: WORKER_CONCURRENCY_<MODEL> (e.g. WORKER_CONCURRENCY_MOBILENET=2),
    else WORKER_CONCURRENCY. The children share the cores (workers/placement.py)."""
    specific = os.environ.get(f"WORKER_CONCURRENCY_{model_name.upper().replace('-', '_')}")
    return int(specific) if specific else WORKER_CONCURRENCY


def log(message: str) -> None:
    print(f"[platform] {message}", flush=True)


class Children:
    """The started processes, stopped in reverse order. Workers are restarted when they die (as
    Kubernetes or systemd would); any other child dying stops the platform."""

    RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW_S before giving up
    RESTART_WINDOW_S = 60.0

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.specs: dict[str, tuple[list[str], dict[str, str], bool]] = {}
        self.restarts: dict[str, list[float]] = {}

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, *, restart: bool = False
    ) -> None:
        log(f"starting {name}: {' '.join(cmd)}")
        self.specs[name] = (cmd, env or {}, restart)
        # Own process group: Ctrl-C reaches us once, and we stop each child deliberately.
        self.procs[name] = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, start_new_session=True)
        self._write_pids()

    def _write_pids(self) -> None:
        (VAR / "run").mkdir(parents=True, exist_ok=True)
        (VAR / "run" / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def check(self) -> str | None:
        """Restart dead workers; the name of a dead child that cannot be restarted, if any."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            cmd, env, restart = self.specs[name]
            now = time.monotonic()
            recent = [t for t in self.restarts.get(name, []) if now - t < self.RESTART_WINDOW_S]
            if not restart or len(recent) >= self.RESTART_LIMIT:
                return name
            self.restarts[name] = [*recent, now]
            log(f"{name} exited with {proc.returncode}; restarting it")
            if _group_alive(proc.pid):  # orphaned pool children would keep prefetched tasks
                os.killpg(proc.pid, signal.SIGKILL)
            self.start(name, cmd, env, restart=True)
        return None

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                log(f"stopping {name}")
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in time; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Children of a child (worker pool processes) must not outlive it.
            if _group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def redis_wait() -> None:
    """With START_REDIS=false the platform uses an existing Redis (REDIS_URL)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5)
    for _ in range(60):
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.5)
    sys.exit(f"no Redis answers at {settings.REDIS_URL}")


def redis_start(children: Children) -> None:
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: install it with `apt-get install -y redis-server`")
    data = VAR / "redis"
    data.mkdir(parents=True, exist_ok=True)
    children.start(
        "redis",
        [
            "redis-server",
            "--port",
            str(settings.REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--loglevel",
            "warning",
        ],
    )
    client = redis.Redis(host="127.0.0.1", port=settings.REDIS_PORT, socket_connect_timeout=0.5)
    for _ in range(100):
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            pass
        if children.check():
            sys.exit(f"redis-server exited; is port {settings.REDIS_PORT} already in use? (set REDIS_PORT)")
        time.sleep(0.1)
    sys.exit("redis-server did not answer PING")


def metrics_dir(name: str) -> str:
    """An empty PROMETHEUS_MULTIPROC_DIR for one service (its processes' samples)."""
    path = VAR / "metrics" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def _enabled(name: str) -> bool:
    return os.environ.get(name, "true").lower() not in {"0", "false", "no"}


def prometheus_start(children: Children, targets: dict[str, list[str]]) -> str | None:
    """Prometheus with deploy/prometheus/prometheus.local.yml and its rules, scraping `targets`
    (job -> host:port); its URL, or None when it is not installed or turned off."""
    if not _enabled("START_PROMETHEUS") or shutil.which("prometheus") is None:
        return None
    folder = VAR / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    node_exporter = shutil.which("prometheus-node-exporter")
    if node_exporter and _enabled("START_NODE_EXPORTER"):
        address = f"127.0.0.1:{NODE_EXPORTER_PORT}"
        children.start(
            "node-exporter",
            [node_exporter, f"--web.listen-address={address}", "--log.level=warn", "--no-collector.systemd"],
        )
        targets = {**targets, "node": [address]}
    config = yaml.safe_load((PROMETHEUS_CONFIG / "prometheus.local.yml").read_text())
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = PROMETHEUS_SCRAPE_INTERVAL
    config["rule_files"] = [str(PROMETHEUS_CONFIG / "rules" / "inference.yml")]
    for job in config["scrape_configs"]:
        job["file_sd_configs"] = [{"files": [str(folder / f"{job['job_name']}.json")]}]
        (folder / f"{job['job_name']}.json").write_text(
            json.dumps([{"targets": targets.get(job["job_name"], [])}])
        )
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    address = f"127.0.0.1:{PROMETHEUS_PORT}"
    children.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
    )
    return f"http://{address}"


def admin_ensure() -> str | None:
    """The admin from DJANGO_SUPERUSER_USERNAME/PASSWORD, else a generated one (printed once)."""
    user_model = get_user_model()
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
    password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
    if username and password:
        if not user_model.objects.filter(username=username).exists():
            user_model.objects.create_superuser(username=username, email="", password=password)
            return f"admin user {username!r} created from DJANGO_SUPERUSER_USERNAME/PASSWORD"
        return None
    if user_model.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username="admin", email="", password=password)
    return f"admin user created: admin / {password}  (set DJANGO_SUPERUSER_USERNAME/PASSWORD to choose)"


def demo_model_ensure() -> None:
    """Train, register and deploy the digits demo model unless it is already deployed."""
    environment = settings.INFERENCE_ENVIRONMENT
    if selectors.deployment_get_active(model_name="digits", environment=environment):
        return
    versions = selectors.model_version_list(model_name="digits")
    if versions:
        deployment_set(version=versions[0], environment=environment)
        log(f"deployed digits v{versions[0].number} to {environment}")
        return
    if not (DEMO_DIR / "model_card.json").exists():
        log("training the demo model (Keras CNN on scikit-learn's digits)")
        subprocess.run([PYTHON, "-m", "workers.training.digits", "--out", str(DEMO_DIR)], check=True)
    call_command("register_model", str(DEMO_DIR), deploy=environment)


def wait_ready(children: Children) -> None:
    url = f"http://{API_HOST}:{API_PORT}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if name := children.check():
            raise RuntimeError(f"{name} exited during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {READY_TIMEOUT_S:.0f}s")


def banner(token: str, admin_note: str | None, prometheus: str | None) -> None:
    api = f"http://{API_HOST}:{API_PORT}"
    lines = [
        "",
        "The platform is ready.",
        f"  API        {api}   (environment: {settings.INFERENCE_ENVIRONMENT})",
        f"  admin      {api}/admin/",
        f"  readiness  {api}/readyz",
        f"  Flower     http://127.0.0.1:{FLOWER_PORT}   (basic auth {FLOWER_AUTH})",
        f"  metrics    {api}/metrics   (workers: :{WORKER_METRICS_PORT} and up)",
        f"  Prometheus {prometheus or 'not started (apt-get install -y prometheus to have it)'}",
        f"  demo key   {token}",
    ]
    if admin_note:
        lines.append(f"  {admin_note}")
    sample = Path(settings.BASE_DIR) / "docs" / "sample-digit.json"
    lines += [
        "",
        "Try it (the sample is a held-out image of a 7):",
        f"  curl -s {api}/api/v1/predictions -H 'Authorization: Bearer {token}' \\",
        f"       -H 'Content-Type: application/json' -d @{sample}",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    children = Children()
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        if os.environ.get("START_REDIS", "true").lower() in {"0", "false", "no"}:
            redis_wait()
        else:
            redis_start(children)
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        admin_note = admin_ensure()
        demo_model_ensure()
        _, token = api_key_create(name="demo", raw_key=os.environ.get("INFERENCE_DEMO_TOKEN") or None)
        deployments = selectors.deployment_list(environment=settings.INFERENCE_ENVIRONMENT)
        targets: dict[str, list[str]] = {"inference-api": [f"{API_HOST}:{API_PORT}"], "inference-worker": []}
        for index, deployment in enumerate(deployments):
            name = deployment.model.name
            metrics_port = WORKER_METRICS_PORT + index
            targets["inference-worker"].append(f"127.0.0.1:{metrics_port}")
            children.start(
                f"worker-{name}",
                [
                    str(BIN / "celery"),
                    "-A",
                    "inference_project",
                    "worker",
                    "-Q",
                    deployment.model.queue,
                    "-n",
                    f"{name}@%h",
                    "--concurrency",
                    str(worker_concurrency(name)),
                    "--loglevel",
                    "INFO",
                ],
                env={
                    "INFERENCE_WORKER_MODELS": name,
                    "INFERENCE_SERVICE": f"worker-{name}",
                    "INFERENCE_WORKER_METRICS_PORT": str(metrics_port),
                    "INFERENCE_WORKER_METRICS_HOST": "127.0.0.1",
                    "PROMETHEUS_MULTIPROC_DIR": metrics_dir(f"worker-{name}"),
                },
                restart=True,
            )
        children.start(
            "worker-platform",
            [
                str(BIN / "celery"),
                "-A",
                "inference_project",
                "worker",
                "-Q",
                "platform",
                "-n",
                "platform@%h",
                "--concurrency",
                "1",
                "--beat",
                "--schedule",
                str(VAR / "celerybeat-schedule"),
                "--loglevel",
                "INFO",
            ],
            env={"INFERENCE_WORKER_ROLE": "platform", "INFERENCE_SERVICE": "worker-platform"},
            restart=True,
        )
        children.start(
            "api",
            [
                str(BIN / "uvicorn"),
                "inference_project.asgi:application",
                "--host",
                API_HOST,
                "--port",
                str(API_PORT),
                "--workers",
                str(API_WORKERS),
                "--no-access-log",
                "--loop",
                API_LOOP,
                "--timeout-graceful-shutdown",
                "10",
            ],
            env={"INFERENCE_SERVICE": "api", "PROMETHEUS_MULTIPROC_DIR": metrics_dir("api")},
        )
        flower = [
            str(BIN / "celery"),
            "-A",
            "inference_project",
            "flower",
            f"--port={FLOWER_PORT}",
            "--address=127.0.0.1",
            # Flower turns the workers' task events back on unless told not to.
            f"--enable_events={settings.CELERY_WORKER_SEND_TASK_EVENTS}",
        ]
        flower.append(f"--basic-auth={FLOWER_AUTH}")
        children.start("flower", flower, env={"INFERENCE_SERVICE": "flower"})
        prometheus = prometheus_start(children, targets)
        wait_ready(children)
        banner(token, admin_note, prometheus)
        while not stopping:
            if name := children.check():
                log(f"{name} exited unexpectedly; stopping the platform")
                break
            time.sleep(0.5)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"start-up failed: {exc}")
        children.stop()
        sys.exit(1)
    children.stop()
    log("stopped")


if __name__ == "__main__":
    main()
