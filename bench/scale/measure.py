"""Throughput across worker hosts, and where the CPU went while it was measured.

Load: wrk (bench/loadgen.py) from the root namespace against HAProxy's address, closed loop: each
connection sends its next request when the previous answer arrived, so the rate is what the
platform sustains and latency is per request.

CPU: every process of every host, found by namespace (`ip netns pids`), read with psutil before
and after the run and grouped by component; wrk's own from getrusage (it is this process's
waited-for child); the machine's busy time and its interrupt time (packets crossing the bridge)
from /proc/stat. What is busy but in none of these (other users of the machine) is "other".
"""

import os
import resource
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bench.loadgen import wrk
from bench.scale.topology import Cluster

COMPONENTS = {
    "api": "API hosts",
    "haproxy": "HAProxy",
    "redis": "Redis",
    "postgres": "PostgreSQL",
}
WORKER_PARENTS = "worker parents"
WORKER_CHILDREN = "worker children"
LOADGEN = "load generator"
KERNEL = "kernel (irq, softirq: the bridge and veths)"
OTHER = "other (not the platform)"


def component_pids(cluster: Cluster) -> dict[int, str]:
    """Each live process of the platform and its component. On a worker host the Celery parent
    is the process whose parent is outside the host (the harness started it); its pool children
    are the others."""
    named: dict[int, str] = {}
    for component, hosts in cluster.components().items():
        for host in hosts:
            if host.cut_at is not None:
                continue
            pids = set(host.pids())
            for pid in pids:
                if component != "worker":
                    named[pid] = COMPONENTS[component]
                    continue
                try:
                    parent_inside = psutil.Process(pid).ppid() in pids
                except psutil.NoSuchProcess:
                    continue
                named[pid] = WORKER_CHILDREN if parent_inside else WORKER_PARENTS
    return named


@dataclass
class CpuSnapshot:
    at: float
    seconds: dict[int, tuple[str, float]]
    machine_busy_s: float
    interrupts_s: float
    loadgen_s: float


def cpu_snapshot(cluster: Cluster) -> CpuSnapshot:
    seconds: dict[int, tuple[str, float]] = {}
    for pid, component in component_pids(cluster).items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[pid] = (component, times.user + times.system)
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSnapshot(
        at=time.monotonic(),
        seconds=seconds,
        machine_busy_s=busy,
        interrupts_s=getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0),
        loadgen_s=children.ru_utime + children.ru_stime,
    )


def cpu_cores(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Cores used per component between two snapshots (CPU seconds / wall seconds). A process
    born between them counts from 0; one that died is lost (none should, during a point)."""
    wall = after.at - before.at
    used: dict[str, float] = {}
    for pid, (component, seconds) in after.seconds.items():
        start = before.seconds.get(pid, (component, 0.0))[1]
        used[component] = used.get(component, 0.0) + (seconds - start)
    used[LOADGEN] = after.loadgen_s - before.loadgen_s
    used[KERNEL] = after.interrupts_s - before.interrupts_s
    machine = after.machine_busy_s - before.machine_busy_s
    used[OTHER] = max(0.0, machine - sum(used.values()))
    cores = {name: round(seconds / wall, 3) for name, seconds in sorted(used.items())}
    cores["machine busy"] = round(machine / wall, 3)
    return cores


def batches_popped(cluster: Cluster) -> int:
    """Messages the workers have taken so far: each batch task is one move of the reliable pop
    (inference_project/reliable_queue.py): an LMOVE inside its Lua script with priority levels
    (Redis counts the commands a script calls; the script moves only from a non-empty list), a
    BLMOVE without (one that times out on an idle consumer counts too: rare under load)."""
    stats = cluster.redis_client().info("commandstats")
    return sum(int(stats.get(f"cmdstat_{command}", {}).get("calls", 0)) for command in ("lmove", "blmove"))


def load_point(cluster: Cluster, *, clients: int, seconds: float, warmup_s: float = 2.0) -> dict[str, Any]:
    """One closed-loop point through HAProxy with the worker hosts the cluster has now."""
    url = f"{cluster.url}/api/v1/predictions"
    body = cluster.body(3.0)
    headers = cluster.headers
    wrk(url, body, concurrency=clients, seconds=warmup_s, headers=headers)
    pops_before = batches_popped(cluster)
    before = cpu_snapshot(cluster)
    result = wrk(url, body, concurrency=clients, seconds=seconds, headers=headers)
    after = cpu_snapshot(cluster)
    batches = batches_popped(cluster) - pops_before
    busy = after.machine_busy_s - before.machine_busy_s
    return {
        "batches": batches,
        "rows_per_batch": round(result.requests / batches, 2) if batches else None,
        "cpu_us_per_answer": round(busy / result.requests * 1e6) if result.requests else None,
        "worker_hosts": sum(1 for h in cluster.workers if h.cut_at is None),
        "api_hosts": sum(1 for h in cluster.apis if h.cut_at is None),
        "version": cluster.version,
        **result.as_dict(),
        "cpu_cores": cpu_cores(before, after),
    }


def efficiency(points: list[dict[str, Any]]) -> list[float]:
    """T(k) / (k·T(1)) for each point, T(1) from the point with one worker host."""
    one = next(float(p["rps"]) for p in points if p["worker_hosts"] == 1)
    return [round(float(p["rps"]) / (int(p["worker_hosts"]) * one), 3) for p in points]


def cap_name(point: dict[str, Any], *, cores: int | None = None) -> str:
    """What caps a point, named with its CPU: the machine's cores when they are (nearly) all
    busy, with the largest user first; else the busiest component."""
    cores = cores or os.cpu_count() or 1
    used: dict[str, float] = dict(point["cpu_cores"])
    busy = used.pop("machine busy")
    ranked = sorted(used.items(), key=lambda item: -item[1])
    top = ", ".join(f"{name} {value:.2f}" for name, value in ranked[:3])
    if busy >= 0.85 * cores:
        return f"the machine's {cores} cores ({busy:.2f} busy); largest users (cores): {top}"
    return f"{ranked[0][0]} ({ranked[0][1]:.2f} cores; {busy:.2f} of {cores} cores busy); then {top}"
