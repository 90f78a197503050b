"""What every measured system shares: starting and stopping processes, waiting for a server, the
machine probe, CPU and memory accounting, closed-loop sweeps, and `Bench`, one run's settings and
results (bench/run.py creates it and hands it to each system in bench/systems/)."""

import json
import os
import platform as pyplatform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import psutil

from bench.loadgen import LoadResult, wrk
from workers.placement import cpu_cores

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
TOKEN = "bench-token"
HEAVY_CHILDREN = max(1, cpu_cores())  # worker children for the compute-heavy model

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- processes --------------------------------------------------------------------------------
class Processes:
    """The processes a run started, each in a session of its own with its log in `logs`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s")


# --- the machine ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    # tensorflow-cpu on CPU machines (requirements.txt), tensorflow[and-cuda] in the GPU image.
    distributions = {"tensorflow": ("tensorflow", "tensorflow-cpu")}
    for package in ("tensorflow", "keras", "django", "celery", "uvicorn", "ray"):
        versions[package] = "not installed"
        for name in distributions.get(package, (package,)):
            try:
                versions[package] = version(name)
                break
            except PackageNotFoundError:
                continue
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": pyplatform.python_version(),
        "redis": redis_version.removeprefix("v="),
        **versions,
    }


# --- CPU and memory ---------------------------------------------------------------------------
def cpu_seconds(processes: dict[str, int]) -> dict[str, float]:
    seconds = {}
    for name, pid in processes.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[name] = times.user + times.system
    return seconds


def cpu_during(load: Callable[[], T], processes: dict[str, int]) -> tuple[T, dict[str, float]]:
    """Run `load()` and return its result and the cores each process used meanwhile: the
    system's `processes`, the load generator (wrk or h2load), and what the machine left idle."""
    before, idle_before = cpu_seconds(processes), psutil.cpu_times().idle
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = load()
    elapsed = time.monotonic() - started
    after, children = cpu_seconds(processes), resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = {name: (after[name] - before[name]) / elapsed for name in after if name in before}
    cores["load generator (wrk, h2load)"] = (
        children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    ) / elapsed
    cores["idle (whole machine)"] = (psutil.cpu_times().idle - idle_before) / elapsed
    return result, {name: round(value, 2) for name, value in cores.items()}


def cpu_budget(rps: float, cores: dict[str, float], machine_cores: int) -> dict[str, float]:
    """What one answer cost the whole machine, and the throughput that cost allows.

    `cores`: the cores each process used during the point (with "idle (whole machine)"). Busy is
    the machine's cores less idle, so the kernel's work and every process count, not only the
    ones named. The ceiling is the rate at which that cost per answer fills every core: a system
    bound by latency can gain up to it by keeping more work in flight, none past it without
    spending less CPU per answer."""
    busy = max(0.0, machine_cores - cores.get("idle (whole machine)", 0.0))
    per_answer_us = busy / rps * 1e6 if rps else 0.0
    return {
        "rps": round(rps, 1),
        "busy_cores": round(busy, 2),
        "core_us_per_answer": round(per_answer_us, 1),
        "ceiling_rps": round(machine_cores / busy * rps, 1) if busy else 0.0,
    }


def per_answer_us(rps: float, cores: dict[str, float]) -> dict[str, float]:
    """Each process's cores during a point as core-µs per answer (idle left out)."""
    return {
        name: round(value / rps * 1e6, 1) if rps else 0.0
        for name, value in cores.items()
        if name != "idle (whole machine)"
    }


def rss_mb(pid: int) -> float:
    try:
        rss: int = psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0.0
    return rss / 2**20


# --- one run ----------------------------------------------------------------------------------
class Bench:
    """One run's settings (quick or full), its processes and its results record. The model
    folders are set by bench/models.py `models_prepare` before any system is measured."""

    digits_dir: Path
    heavy_dirs: dict[str, Path]
    accel_dirs: dict[str, Path]

    def __init__(self, quick: bool, out: Path) -> None:
        self.quick = quick
        self.out = out
        self.work = out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs = Processes(self.out)
        self.seconds = 2.0 if quick else 10.0
        self.levels = [1, 64] if quick else [1, 8, 64, 256]
        self.peer_levels = [64] if quick else [1, 8, 64, 256]
        self.heavy_size, self.heavy_alpha = (96, 0.35) if quick else (224, 1.0)
        self.results: dict[str, Any] = {
            "mode": "quick" if quick else "full",
            "seconds_per_point": self.seconds,
        }

    def digits_body(self) -> bytes:
        """One digits request for our native route: one row of the validation set."""
        row = np.loadtxt(self.digits_dir / "validation.csv", delimiter=",", skiprows=1, max_rows=1)[:-1]
        return json.dumps({"model": "digits", "inputs": [row.tolist()]}).encode()

    def peer_body(self) -> bytes:
        """The same row as the peers take it: `{"inputs": ...}`."""
        return json.dumps({"inputs": json.loads(self.digits_body())["inputs"]}).encode()

    def sweep(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        levels: list[int],
        *,
        method: str = "POST",
        cpu_key: str | None = None,
        processes: Callable[[], dict[str, int]] | None = None,
        loader: Callable[[int], LoadResult] | None = None,
        cpu_levels: bool = False,
    ) -> list[dict[str, float]]:
        """Closed-loop points at each concurrency; with `cpu_key`, the cores each of the system's
        `processes()` used at 64 clients go to results["cpu_at_64"][cpu_key] and what they add up
        to per answer to results["cpu_budget"]; with `cpu_levels` too, every level's core-µs per
        answer by process to results["cpu_by_level"][cpu_key][level]."""
        if cpu_key and processes is None:
            raise ValueError("cpu_key needs the processes to count")
        points = []
        for concurrency in levels:

            def load(concurrency: int = concurrency) -> LoadResult:
                if loader is not None:  # another load generator (h2load for gRPC)
                    return loader(concurrency)
                return wrk(
                    url, body, concurrency=concurrency, seconds=self.seconds, headers=headers, method=method
                )

            if cpu_key and processes is not None and (concurrency == 64 or cpu_levels):
                result, cores = cpu_during(load, processes())
                budget = cpu_budget(result.rps, cores, self.results["machine"]["cores"])
                if concurrency == 64:
                    self.results.setdefault("cpu_at_64", {})[cpu_key] = cores
                    self.results.setdefault("cpu_budget", {})[cpu_key] = budget
                if cpu_levels:
                    self.results.setdefault("cpu_by_level", {}).setdefault(cpu_key, {})[str(concurrency)] = {
                        **budget,
                        "core_us_per_answer_by_process": per_answer_us(result.rps, cores),
                    }
            else:
                result = load()
            log(
                f"  c={concurrency}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, errors {result.errors}"
            )
            points.append(result.as_dict())
        return points
