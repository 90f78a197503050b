"""Where a worker's children compute: their share of the CPU cores, or one GPU each.

CPU: TensorFlow sizes its thread pools to every core of the host in each process, so N prefork
children would run N x cores threads that preempt one another. `cpu_threads_share` gives each
child cores / N threads instead (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, which
TensorFlow reads when it starts in the child). Measured on 2 cores with MobileNetV2: one process
with TensorFlow's 2 threads runs 208-219 images/s, two processes with 1 thread each 294-302 together
(docs/benchmarks.md). One child keeps TensorFlow's defaults.

GPU: with `INFERENCE_GPU_PER_CHILD=true` each prefork child sees only GPU `index % count` (set
through CUDA_VISIBLE_DEVICES before TensorFlow is imported, which happens after the fork), and
TensorFlow allocates GPU memory as needed instead of all of it. On a machine without GPUs it does
nothing, so the same image and code run on CPU.
"""

import math
import os
import shutil
import subprocess
from pathlib import Path

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's
    CPU limit, rounded up)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def cpu_threads_share(concurrency: int, setting: str = "auto") -> int | None:
    """Give each of `concurrency` children its share of the cores (cgroup quota included):
    sets TensorFlow's thread variables in this (parent) process, inherited by the children.

    `setting` is INFERENCE_CHILD_THREADS: "auto" (cores // concurrency when there are several
    children), a number of threads, or "tf" for TensorFlow's defaults. Variables the operator set
    are kept. Returns the threads per child it set, or None when it left TensorFlow's defaults.
    """
    if setting == "tf" or any(name in os.environ for name in THREAD_VARIABLES):
        return None
    if setting == "auto":
        if concurrency <= 1:
            return None
        threads = max(1, cpu_cores() // concurrency)
    else:
        threads = max(1, int(setting))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    return threads


def gpu_count() -> int:
    """GPUs on this host: `INFERENCE_GPU_COUNT`, else what `nvidia-smi -L` lists, else 0."""
    if configured := os.environ.get("INFERENCE_GPU_COUNT"):
        return int(configured)
    if shutil.which("nvidia-smi") is None:
        return 0
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False, timeout=10)
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def child_gpu_pin(child_index: int) -> str | None:
    """Pin this process to one GPU (before TensorFlow loads); the device it got, or None."""
    if os.environ.get("INFERENCE_GPU_PER_CHILD", "").lower() not in {"1", "true", "yes"}:
        return None
    count = gpu_count()
    if count == 0:
        return None
    device = str(child_index % count)
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return device
