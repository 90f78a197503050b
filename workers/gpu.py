"""GPU placement for worker children: one child per GPU, memory growth on.

With `INFERENCE_GPU_PER_CHILD=true` each prefork child sees only GPU `index % count` (set through
CUDA_VISIBLE_DEVICES before TensorFlow is imported, which happens after the fork), and TensorFlow
allocates GPU memory as needed instead of all of it. On a machine without GPUs it does nothing,
so the same image and code run on CPU.
"""

import os
import shutil
import subprocess


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
