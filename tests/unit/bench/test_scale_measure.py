"""Efficiency and the named cap of the multi-host measurement (bench/scale/measure.py), and the
CPU accounting between two snapshots."""

from typing import Any

from bench.scale.measure import OTHER, CpuSnapshot, cap_name, cpu_cores, efficiency


def point(hosts: int, rps: float, cores: dict[str, float]) -> dict[str, Any]:
    return {"worker_hosts": hosts, "rps": rps, "cpu_cores": cores}


def test_efficiency_is_throughput_over_k_times_one_host() -> None:
    points = [point(1, 100, {}), point(2, 196, {}), point(4, 300, {}), point(8, 320, {})]
    assert efficiency(points) == [1.0, 0.98, 0.75, 0.4]


def test_the_cap_is_the_machine_when_its_cores_are_busy_else_the_busiest_component() -> None:
    full = point(8, 320, {"API hosts": 1.1, "Redis": 0.2, "worker parents": 0.5, "machine busy": 1.95})
    assert cap_name(full, cores=2) == (
        "the machine's 2 cores (1.95 busy); largest users (cores): "
        "API hosts 1.10, worker parents 0.50, Redis 0.20"
    )
    single = point(8, 320, {"Redis": 0.98, "API hosts": 0.4, "machine busy": 1.5})
    assert cap_name(single, cores=4).startswith("Redis (0.98 cores; 1.50 of 4 cores busy)")


def test_cpu_between_snapshots_counts_new_processes_from_zero_and_the_rest_as_other() -> None:
    before = CpuSnapshot(
        at=10.0, seconds={1: ("API hosts", 5.0)}, machine_busy_s=100.0, interrupts_s=1.0, loadgen_s=2.0
    )
    after = CpuSnapshot(
        at=12.0,
        seconds={1: ("API hosts", 6.0), 2: ("Redis", 0.5)},
        machine_busy_s=104.0,
        interrupts_s=1.2,
        loadgen_s=2.4,
    )
    cores = cpu_cores(before, after)
    assert cores["API hosts"] == 0.5 and cores["Redis"] == 0.25 and cores["load generator"] == 0.2
    assert cores["machine busy"] == 2.0
    assert round(cores[OTHER], 3) == round((4.0 - 1.0 - 0.5 - 0.4 - 0.2) / 2, 3)
