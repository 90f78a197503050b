"""Peer (b), the tuned Keras + Redis-list loop (bench/peers/redis_loop.py): a Redis of its own,
one model process popping up to 32 requests per predict, and a uvicorn web process polling each
result every 2 ms. The one peer whose processes the bench counts for CPU per answer."""

import os
import signal
import time

import httpx
import redis

from bench.harness import BIN, PYTHON, Bench, free_port, log, wait_until
from bench.models import ACCEL_SIGNATURES
from bench.peers.redis_loop import QUEUE
from bench.systems.ours import ACCEL_LEVELS, heavy_image


def redis_loop_measure(bench: Bench) -> None:
    """results["redis_loop_digits"], with its three processes' CPU at 64 clients (cpu_key
    "redis_loop"), then results["redis_loop_<accel key>"]: the simulated accelerator behind the
    same loop, with the CPU at every level."""
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
    bench.procs.stop(model, signal.SIGTERM)
    # Digits requests the last sweep's clients left on the list would reach the image model (a
    # 2-D row among 4-D images: its concatenate failed once and it never answered).
    redis.Redis.from_url(url).delete(QUEUE)
    # The simulated accelerator behind the same loop (one model process, binary request bodies).
    model = bench.procs.start(
        "redis-loop-model-simulated",
        [
            PYTHON,
            "-m",
            "bench.peers.redis_loop",
            "model",
            str(bench.accel_dirs["accel_fp32"] / "model.simulated"),
            url,
        ],
        dict(os.environ),
    )
    for key, datatype in ACCEL_SIGNATURES.items():
        image = heavy_image(bench.heavy_size, datatype)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Shape": ",".join(str(d) for d in image.shape),
            "X-Datatype": datatype,
        }
        body = image.tobytes()

        def answers(body: bytes = body, headers: dict[str, str] = headers) -> bool:
            url = f"http://127.0.0.1:{web_port}/"
            return httpx.post(url, content=body, headers=headers, timeout=30).status_code == 200

        wait_until(answers, 120, "the Redis-list loop on the simulated accelerator")
        log(f"peer: Redis-list loop, simulated accelerator with {datatype} input (raw bytes)")
        bench.results[f"redis_loop_{key}"] = bench.sweep(
            f"http://127.0.0.1:{web_port}/",
            body,
            headers,
            ACCEL_LEVELS,
            cpu_key=f"redis_loop_{key}",
            processes=lambda: {
                "redis-loop web": web.pid,
                "redis-loop model": model.pid,
                "redis-loop redis": redis_proc.pid,
            },
            cpu_levels=True,
        )
    for proc in (web, model, redis_proc):
        bench.procs.stop(proc, signal.SIGTERM)
