"""Where worker children compute: the CPU thread split and the GPU pinning (workers/placement.py)."""

import os
from pathlib import Path

import pytest

from workers.placement import THREAD_VARIABLES, child_gpu_pin, cpu_cores, cpu_threads_share

VARIABLES = (
    *THREAD_VARIABLES,
    "CUDA_VISIBLE_DEVICES",
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "INFERENCE_GPU_COUNT",
    "INFERENCE_GPU_PER_CHILD",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset for the test, and restored afterwards even when the code under test sets them."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_several_children_split_the_cores() -> None:
    threads = cpu_threads_share(2)
    assert threads == max(1, cpu_cores() // 2)
    assert [os.environ[name] for name in THREAD_VARIABLES] == [str(threads)] * 2


def test_more_children_than_cores_get_one_thread_each() -> None:
    assert cpu_threads_share(cpu_cores() * 4) == 1
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "1"


def test_one_child_keeps_tensorflow_defaults() -> None:
    assert cpu_threads_share(1) is None
    assert not any(name in os.environ for name in THREAD_VARIABLES)


def test_explicit_count_and_tf_defaults() -> None:
    assert cpu_threads_share(1, "3") == 3
    assert os.environ["TF_NUM_INTEROP_THREADS"] == "3"
    for name in THREAD_VARIABLES:
        del os.environ[name]
    assert cpu_threads_share(4, "tf") is None
    assert not any(name in os.environ for name in THREAD_VARIABLES)


def test_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "5")
    assert cpu_threads_share(2) is None
    assert os.environ["TF_NUM_INTRAOP_THREADS"] == "5"
    assert "TF_NUM_INTEROP_THREADS" not in os.environ


def test_gpu_pinning_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GPU_COUNT", "2")
    assert child_gpu_pin(1) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_each_child_sees_one_gpu_round_robin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GPU_PER_CHILD", "true")
    monkeypatch.setenv("INFERENCE_GPU_COUNT", "2")
    assert child_gpu_pin(3) == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_no_gpu_means_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERENCE_GPU_PER_CHILD", "true")
    monkeypatch.setenv("INFERENCE_GPU_COUNT", "0")
    assert child_gpu_pin(0) is None
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_container_cpu_limit_caps_the_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from workers import placement

    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(placement, "CGROUP_CPU_MAX", cpu_max)
    affinity = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")
    assert cpu_cores() == affinity
    cpu_max.write_text("50000 100000\n")  # half a core: rounded up to one
    assert cpu_cores() == 1
    cpu_max.unlink()
    assert cpu_cores() == affinity
