"""Peer (a), naive Celery: a sync Django view under gunicorn's threads sends one task per request
and blocks on AsyncResult.get() (bench/peers/naive_urls.py), on our platform's Redis and workers
(their unbatched `inference.predict`) with Celery's stock Redis result backend."""

import signal

import httpx

from bench.harness import BIN, Bench, free_port, log, wait_until
from bench.systems.ours import Platform


def naive_celery_measure(bench: Bench, platform: Platform) -> None:
    """results["naive_digits"], while `platform` runs."""
    port = free_port()
    env = {
        **platform.env,
        "DJANGO_ROOT_URLCONF": "bench.peers.naive_urls",
        "CELERY_RESULT_BACKEND": f"redis://127.0.0.1:{platform.redis_port}/0",
    }
    proc = bench.procs.start(
        "naive",
        [
            str(BIN / "gunicorn"),
            "inference_project.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--threads",
            "64",
        ],
        env,
    )
    body = bench.peer_body()
    wait_until(
        lambda: httpx.post(f"http://127.0.0.1:{port}/predict", content=body, timeout=30).status_code == 200,
        60,
        "naive Celery",
    )
    log("peer: naive Celery (sync Django view, one task per request, AsyncResult.get())")
    bench.results["naive_digits"] = bench.sweep(
        f"http://127.0.0.1:{port}/predict", body, {"Content-Type": "application/json"}, bench.peer_levels
    )
    bench.procs.stop(proc, signal.SIGTERM)
