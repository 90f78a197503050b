"""First-run set-up of the platform `make run` starts: `manage.py platform_bootstrap`.

Every start runs it and each step is skipped when already done: wait for Redis, apply the
migrations, collect the static files, create the admin user, train, register and deploy the demo
model `digits`, create the demo API key, and write Prometheus's configuration for the processes
the launcher starts. Its summary (environment, served models, demo key, admin note) is what the
launcher starts one worker per model from and prints in its banner.

This process never imports TensorFlow: training runs in a child process.
"""

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
import yaml
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from apps.models_registry import selectors
from apps.models_registry.services.deployments import deployment_set
from apps.models_registry.services.registration import MODEL_CARD_FILENAME, model_card_register
from apps.predictions.authentication import api_key_create
from inference_project.redis_clients import redis_sync

REDIS_WAIT_S = 30.0


@dataclass(frozen=True)
class BootstrapSummary:
    """What the launcher needs from the registry: the workers to start and the banner's lines."""

    environment: str
    models: list[str]
    demo_key: str
    admin_note: str | None


def var_dir() -> Path:
    """Where `make run` keeps its state (INFERENCE_VAR_DIR, else var/ in the checkout)."""
    return Path(os.environ.get("INFERENCE_VAR_DIR", settings.VAR_DIR))


def platform_processes() -> set[str]:
    """The processes of deploy/circus.ini this run starts (PLATFORM_PROCESSES, set by the launcher)."""
    return {name for name in os.environ.get("PLATFORM_PROCESSES", "").split(",") if name}


def redis_wait(*, timeout_s: float = REDIS_WAIT_S) -> None:
    """Until Redis answers: the platform's own at REDIS_URL (deploy/bin/redis) or, with
    START_REDIS=false, an existing one there or, with REDIS_SENTINELS, the master the Sentinels
    name (the same client the API uses, so a Sentinel that names no master yet keeps it waiting)."""
    client = redis_sync()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.ping():
                return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def admin_ensure() -> str | None:
    """The admin from DJANGO_SUPERUSER_USERNAME/PASSWORD, else a generated one (its note printed once)."""
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


def demo_model_ensure(*, environment: str, demo_dir: Path, log: Callable[[str], None]) -> None:
    """Train, register and deploy the digits demo model unless it is already deployed."""
    if selectors.deployment_get_active(model_name="digits", environment=environment):
        return
    versions = selectors.model_version_list(model_name="digits")
    if versions:
        deployment_set(version=versions[0], environment=environment)
        log(f"deployed digits v{versions[0].number} to {environment}")
        return
    if not (demo_dir / MODEL_CARD_FILENAME).exists():
        log("training the demo model (Keras CNN on scikit-learn's digits)")
        subprocess.run([sys.executable, "-m", "workers.training.digits", "--out", str(demo_dir)], check=True)
    version = model_card_register(files=sorted(demo_dir.iterdir()), deploy=environment)
    log(f"registered and deployed {version} to {environment}")


def prometheus_config_write(*, folder: Path, models: list[str], node_exporter: bool) -> None:
    """deploy/prometheus/prometheus.local.yml with its rules, scraping the API, each model's worker
    (WORKER_METRICS_PORT + its index, as deploy/bin/worker listens), the platform worker
    (INFERENCE_PLATFORM_METRICS_PORT) and the node exporter."""
    template = Path(settings.BASE_DIR) / "deploy" / "prometheus"
    api = f"{os.environ.get('API_HOST', '127.0.0.1')}:{os.environ.get('API_PORT', '8000')}"
    first_worker_port = int(os.environ.get("WORKER_METRICS_PORT", "9464"))
    targets = {
        "inference-api": [api],
        "inference-worker": [f"127.0.0.1:{first_worker_port + index}" for index in range(len(models))],
        "inference-platform": [f"127.0.0.1:{settings.INFERENCE_PLATFORM_METRICS_PORT}"],
        "node": [f"127.0.0.1:{os.environ.get('NODE_EXPORTER_PORT', '9100')}"] if node_exporter else [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((template / "prometheus.local.yml").read_text())
    interval = os.environ.get("PROMETHEUS_SCRAPE_INTERVAL", "5s")
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(template / "rules" / "inference.yml")]
    for job in config["scrape_configs"]:
        job["file_sd_configs"] = [{"files": [str(folder / f"{job['job_name']}.json")]}]
        (folder / f"{job['job_name']}.json").write_text(
            json.dumps([{"targets": targets.get(job["job_name"], [])}])
        )
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def summary_write(*, path: Path, summary: BootstrapSummary) -> None:
    """Readable by this user only: it holds the demo key and, on a first run, the admin's password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(asdict(summary)))
    partial.chmod(0o600)
    partial.replace(path)


def platform_bootstrap(*, log: Callable[[str], None]) -> BootstrapSummary:
    redis_wait()
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    admin_note = admin_ensure()
    if admin_note:
        log(admin_note)  # also in the banner; printed now too, in case the start goes no further
    environment = settings.INFERENCE_ENVIRONMENT
    demo_dir = Path(os.environ.get("INFERENCE_DEMO_DIR", var_dir() / "demo" / "digits"))
    demo_model_ensure(environment=environment, demo_dir=demo_dir, log=log)
    _, demo_key = api_key_create(
        name="demo",
        raw_key=os.environ.get("INFERENCE_DEMO_TOKEN") or None,
        high_priority=settings.INFERENCE_DEMO_KEY_HIGH_PRIORITY,
    )
    models = [d.model.name for d in selectors.deployment_list(environment=environment)]
    processes = platform_processes()
    if "prometheus" in processes:
        prometheus_config_write(
            folder=var_dir() / "prometheus", models=models, node_exporter="node-exporter" in processes
        )
    return BootstrapSummary(environment=environment, models=models, demo_key=demo_key, admin_note=admin_note)
