"""`python -m bench.scale.run [--quick] [--docs]`: the multi-host harness, end to end.

Builds the hosts (bench/scale/netns.py), starts the platform across them (topology.py), measures
closed-loop throughput through HAProxy with 1, 2, 4 and 8 worker hosts on the simulated
accelerator and the CPU of every component meanwhile (measure.py), the serving path's own cap
with a no-op kernel, then the faults (faults.py) on the same cluster: a worker host cut off
mid-batch (1), an API host lost (5), PostgreSQL restarted (4) and the Redis primary SIGKILLed (3),
last because it changes which host is the primary. Everything it built is removed at the end,
also on Ctrl-C.

--quick: 1 and 2 worker hosts, short points, no no-op point, every fault (the test's run).
--docs: write docs/scaling.md and docs/scaling.png from this run.
Figures: test-artifacts/scale.json; every process's output: test-artifacts/scale-logs/.
"""

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.scale.faults import (
    fault_api_host_cut,
    fault_postgres_restart,
    fault_redis_primary_kill,
    fault_worker_host_cut,
)
from bench.scale.measure import cap_name, efficiency, load_point
from bench.scale.netns import Network
from bench.scale.topology import (
    ROOT,
    Cluster,
    Layout,
    cluster_start,
    model_deploy,
    worker_host_add,
    workers_wait,
)

ARTIFACTS = ROOT / "test-artifacts"
RESULTS = ARTIFACTS / "scale.json"
LOG_DIR = ARTIFACTS / "scale-logs"
EFFICIENCY_TARGET = 0.9


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


def workers_grow(cluster: Cluster, count: int) -> None:
    while sum(1 for h in cluster.workers if h.cut_at is None) < count:
        worker_host_add(cluster, wait=False)
    workers_wait(cluster)
    time.sleep(1.0)  # every API sees the new children's readiness marks


def scale_run(
    *,
    quick: bool,
    layout: Layout | None = None,
    seconds: float | None = None,
    clients_per_host: int = 8,
    log_dir: Path = LOG_DIR,
) -> dict[str, Any]:
    """The whole run; returns (and writes to test-artifacts/scale.json) its figures."""
    layout = layout or Layout()
    counts = [1, 2] if quick else [1, 2, 4, 8]
    seconds = seconds or (4.0 if quick else 10.0)
    shutil.rmtree(log_dir, ignore_errors=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "quick": quick,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "layout": layout.__dict__,
        "seconds_per_point": seconds,
        "clients_per_host": clients_per_host,
    }
    with Network(log_dir=log_dir) as net:
        log("starting the platform across hosts")
        cluster = cluster_start(net, layout)
        results["database"] = "postgresql" if cluster.postgres else "sqlite"
        results["start_s"] = round(time.monotonic() - started, 1)
        log(f"ready in {results['start_s']} s: HAProxy at {cluster.url}")
        points: list[dict[str, Any]] = []
        for count in counts:
            workers_grow(cluster, count)
            clients = clients_per_host * count
            point = load_point(cluster, clients=clients, seconds=seconds)
            log(
                f"{count} worker host(s), {clients} clients: {point['rps']:.0f} req/s, "
                f"p50 {point['p50_ms']} ms, p99 {point['p99_ms']} ms, errors {point['errors']}"
            )
            points.append(point)
        for point, value in zip(points, efficiency(points), strict=True):
            point["efficiency"] = value
            point["cap"] = cap_name(point)
        results["points"] = points
        short = [p for p in points if float(p["efficiency"]) < EFFICIENCY_TARGET]
        results["cap"] = (
            f"from {short[0]['worker_hosts']} worker hosts: {short[0]['cap']}"
            if short
            else f"none up to {counts[-1]} worker hosts (efficiency ≥ {EFFICIENCY_TARGET})"
        )
        if not quick:
            log("the serving path's own cap: a no-op kernel (0 ms)")
            model_deploy(cluster, batch_ms=0.0, row_ms=0.0)
            workers_wait(cluster)
            time.sleep(1.0)
            noop = load_point(cluster, clients=clients_per_host * counts[-1], seconds=seconds)
            noop["cap"] = cap_name(noop)
            results["noop"] = noop
            log(f"no-op kernel: {noop['rps']:.0f} req/s; {noop['cap']}")
            model_deploy(cluster, batch_ms=layout.batch_ms, row_ms=layout.row_ms)
            workers_wait(cluster)
            time.sleep(1.0)
        results |= faults_run(cluster, quick=quick)
    results["total_s"] = round(time.monotonic() - started, 1)
    ARTIFACTS.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return results


def faults_run(cluster: Cluster, *, quick: bool) -> dict[str, Any]:
    """The faults in order on one cluster: 1 and 5 (hosts lost), 4 (PostgreSQL restarted), then 3
    (the Redis primary killed), last: it changes which host is the primary."""
    results: dict[str, Any] = {}
    log("fault 1: a worker host cut off mid-batch")
    results["fault_worker_host"] = fault_worker_host_cut(cluster, clients=16 if quick else 32)
    log(json.dumps(results["fault_worker_host"]))
    log("fault 5: an API host lost behind HAProxy")
    results["fault_api_host"] = fault_api_host_cut(cluster, clients=16 if quick else 32)
    log(json.dumps(results["fault_api_host"]))
    if cluster.postgres is not None:
        log("fault 4: PostgreSQL restarted")
        results["fault_postgres"] = fault_postgres_restart(cluster, clients=16 if quick else 32)
        log(json.dumps(results["fault_postgres"]))
    if cluster.sentinels:
        log("fault 3: the Redis primary SIGKILLed")
        results["fault_redis_primary"] = fault_redis_primary_kill(
            cluster, clients=16 if quick else 32, async_clients=4 if quick else 8
        )
        log(json.dumps(results["fault_redis_primary"]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 and 2 worker hosts, short points")
    parser.add_argument("--docs", action="store_true", help="write docs/scaling.md and docs/scaling.png")
    parser.add_argument("--seconds", type=float, help="seconds per load point (10; quick 4)")
    parser.add_argument("--clients-per-host", type=int, default=8, help="closed-loop clients per worker host")
    parser.add_argument("--batch-ms", type=float, default=Layout.batch_ms)
    parser.add_argument("--row-ms", type=float, default=Layout.row_ms)
    parser.add_argument("--max-batch", type=int, default=Layout.max_batch_size)
    args = parser.parse_args()
    layout = Layout(batch_ms=args.batch_ms, row_ms=args.row_ms, max_batch_size=args.max_batch)
    results = scale_run(
        quick=args.quick, layout=layout, seconds=args.seconds, clients_per_host=args.clients_per_host
    )
    log(f"figures in {RESULTS.relative_to(ROOT)}")
    if args.docs:
        from bench.scale.report import report_write

        command = "sudo .venv/bin/python -m bench.scale.run" + (" --quick" if args.quick else "") + " --docs"
        report_write(results, command=command)
        log("wrote docs/scaling.md and docs/scaling.png")


if __name__ == "__main__":
    main()
