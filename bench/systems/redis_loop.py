"""Peer (b), the tuned Keras + Redis-list loop (bench/peers/redis_loop.py): a Redis of its own,
one model process popping up to 32 requests per predict, and a uvicorn web process polling each
result every 2 ms. The one peer whose processes the bench counts for CPU per answer."""

import os
import signal
import time

import httpx

from bench.harness import BIN, PYTHON, Bench, free_port, log, wait_until


def redis_loop_measure(bench: Bench) -> None:
    """results["redis_loop_digits"], with its three processes' CPU at 64 clients (cpu_key
    "redis_loop")."""
    port, web_port = free_port(), free_port()
    redis_proc = bench.procs.start(
        "redis-loop-redis",
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        dict(os.environ),
    )
    url = f"redis://127.0.0.1:{port}/0"
    time.sleep(0.5)
    model = bench.procs.start(
        "redis-loop-model",
        [PYTHON, "-m", "bench.peers.redis_loop", "model", str(bench.digits_dir / "model.keras"), url],
        dict(os.environ),
    )
    web = bench.procs.start(
        "redis-loop-web",
        [
            str(BIN / "uvicorn"),
            "bench.peers.redis_loop:app",
            "--port",
            str(web_port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {**os.environ, "REDIS_URL": url, "POLL_MS": "2"},
    )
    body = bench.peer_body()
    wait_until(
        lambda: httpx.post(f"http://127.0.0.1:{web_port}/", content=body, timeout=30).status_code == 200,
        120,
        "the Redis-list loop",
    )
    log("peer: tuned Redis-list loop (poll 2 ms, pop up to 32)")
    bench.results["redis_loop_digits"] = bench.sweep(
        f"http://127.0.0.1:{web_port}/",
        body,
        {"Content-Type": "application/json"},
        bench.peer_levels,
        cpu_key="redis_loop",
        processes=lambda: {
            "redis-loop web": web.pid,
            "redis-loop model": model.pid,
            "redis-loop redis": redis_proc.pid,
        },
    )
    for proc in (web, model, redis_proc):
        bench.procs.stop(proc, signal.SIGTERM)
