"""Which batching mechanism: the same API and model, three ways to get rows into one predict.

    python -m bench.batching_mechanisms
    (make bench runs it in .venv-mechanisms: celery-batches 0.11 needs celery < 5.7, so that
    virtualenv has celery 5.6; all three variants run there, on the same Celery)

- producer: the API groups requests into one task per batch (what the platform does);
- none: one task per request (the model's max_batch_size = 1), the standard worker;
- celery-batches: one task per request, buffered in the worker by celery-batches
  (bench/peers/celery_batches_worker.py).

Digits model, one API process, one worker child, closed-loop wrk at 1 and 64 clients. Prints a
table and writes bench/results/mechanisms.json.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TypedDict

import httpx

from bench.harness import BIN, PYTHON, ROOT, TOKEN, Processes, free_port, log, wait_until
from bench.loadgen import wrk

SECONDS = 10.0


class Variant(TypedDict):
    """One mechanism's figures: wrk's result (LoadResult.as_dict) per concurrency."""

    max_batch_size: int
    worker: str
    points: dict[int, dict[str, float]]


def variant(name: str, *, max_batch_size: int, worker_app: str, work: Path) -> Variant:
    root = work / name
    root.mkdir()
    model_dir = root / "digits"
    shutil.copytree(ROOT / ".cache" / "demo-digits", model_dir)
    card = json.loads((model_dir / "model_card.json").read_text())
    card["batching"] = {"max_batch_size": max_batch_size, "max_delay_ms": 2}
    (model_dir / "model_card.json").write_text(json.dumps(card))
    redis_port, api_port = free_port(), free_port()
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(root),
        "DJANGO_SETTINGS_MODULE": "inference_project.settings.local",
        "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
        "ARTIFACTS_ROOT": str(root / "artifacts"),
        "ARTIFACT_CACHE_DIR": str(root / "cache"),
        "REDIS_PORT": str(redis_port),
        "INFERENCE_WORKER_MODELS": "digits",
        "INFERENCE_THROTTLE_PER_SECOND": "0",
        "INFERENCE_MAX_QUEUE_DEPTH": "1000000",
        "LOG_LEVEL": "WARNING",
        "REGISTRY_PROFILE_ON_REGISTER": "false",
    }
    procs = Processes(root)
    try:
        procs.start(
            "redis", ["redis-server", "--port", str(redis_port), "--save", "", "--dir", str(root)], env
        )
        for command in (["migrate", "--noinput"], ["register_model", str(model_dir), "--deploy", "dev"]):
            subprocess.run(
                [PYTHON, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True
            )
        prefetch = ["--prefetch-multiplier", "64"] if worker_app != "inference_project" else []
        worker = [str(BIN / "celery"), "-A", worker_app, "worker", "-Q", "inference.digits", "-c", "1"]
        procs.start("worker", [*worker, *prefetch, "--loglevel", "WARNING"], env)
        api = [str(BIN / "uvicorn"), "inference_project.asgi:application", "--port", str(api_port)]
        procs.start("api", [*api, "--no-access-log"], {**env, "INFERENCE_DEMO_TOKEN": TOKEN})
        base = f"http://127.0.0.1:{api_port}"
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200, 120, name)
        key = subprocess.run(
            [
                PYTHON,
                "-c",
                "import django; django.setup(); from apps.predictions.authentication import "
                f"api_key_create; print(api_key_create(name='bench', raw_key='{TOKEN}')[1])",
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        row = (model_dir / "validation.csv").read_text().splitlines()[1].split(",")[:-1]
        body = json.dumps({"model": "digits", "inputs": [[float(v) for v in row]]}).encode()
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        url = f"{base}/api/v1/predictions"
        wrk(url, body, concurrency=8, seconds=2, headers=headers)
        points = {
            c: wrk(url, body, concurrency=c, seconds=SECONDS, headers=headers).as_dict() for c in (1, 64)
        }
        for c, point in points.items():
            log(
                f"{name} c={c}: {point['rps']:.0f} req/s, p50 {point['p50_ms']:.1f} ms, p99 {point['p99_ms']:.1f} ms, errors {point['errors']}"
            )
        return {"max_batch_size": max_batch_size, "worker": worker_app, "points": points}
    finally:
        procs.stop_all()


def main() -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        results = {
            "producer": variant("producer", max_batch_size=64, worker_app="inference_project", work=work),
            "none": variant("none", max_batch_size=1, worker_app="inference_project", work=work),
            "celery-batches": variant(
                "celery-batches", max_batch_size=1, worker_app="bench.peers.celery_batches_worker", work=work
            ),
        }
    from importlib.metadata import version

    celery_version = version("celery")
    (out / "mechanisms.json").write_text(json.dumps({"celery": celery_version, **results}, indent=2))
    print(f"Celery {celery_version}, {SECONDS:g} s per point")
    print("| mechanism | req/s at 1 | p50 ms at 1 | req/s at 64 | p50 ms at 64 | p99 ms at 64 |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        one, many = r["points"][1], r["points"][64]
        print(
            f"| {name} | {one['rps']:.0f} | {one['p50_ms']:.1f} | {many['rps']:.0f} | {many['p50_ms']:.1f} | {many['p99_ms']:.1f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
