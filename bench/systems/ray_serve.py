"""Peer (c), Ray Serve with @serve.batch (bench/peers/ray_serve_app.py): one replica, the same
model and batch limits. Measured when ray[serve] is installed (requirements-bench.txt, which the
full `make bench` installs); the quick run skips it."""

import os
import signal
import subprocess

import httpx

from bench.harness import BIN, PYTHON, Bench, free_port, log, wait_until


def ray_serve_measure(bench: Bench) -> None:
    """results["ray_digits"]: the points, or {"skipped": why}."""
    try:
        import ray  # noqa: F401
    except ImportError:
        bench.results["ray_digits"] = {"skipped": "ray[serve] is not installed (make bench installs it)"}
        return
    port = free_port()
    proc = bench.procs.start(
        "ray",
        [PYTHON, "-m", "bench.peers.ray_serve_app", str(bench.digits_dir / "model.keras"), str(port)],
        dict(os.environ),
    )
    body = bench.peer_body()
    try:
        wait_until(
            lambda: (
                httpx.post(f"http://127.0.0.1:{port}/predict", content=body, timeout=30).status_code == 200
            ),
            240,
            "Ray Serve",
        )
        log("peer: Ray Serve with @serve.batch")
        bench.results["ray_digits"] = bench.sweep(
            f"http://127.0.0.1:{port}/predict",
            body,
            {"Content-Type": "application/json"},
            bench.peer_levels,
        )
    finally:
        bench.procs.stop(proc, signal.SIGTERM)
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, check=False)
