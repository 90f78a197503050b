"""Paired probe of the serving path a GPU tier needs: the simulated accelerator at 64 clients.

    python -m bench.accel_probe [--env '{"CELERY_WORKER_SEND_TASK_EVENTS": "true"}' ...]
                                [--datatype FP32] [--rounds 2] [--seconds 10] [--aof-off]

Each `--env` (a JSON object of settings; none: the defaults) is one configuration. Every round
starts the platform of each configuration in turn with only the simulated accelerator deployed
(224x224x3, 1 ms a batch, no CPU: workers/simulated.py), runs wrk with 64 closed-loop clients
on v2 binary REST and prints images/s, the machine's busy core-µs per image, each process's
core-µs per image and the minor page faults per image of those that fault. `--aof-off` turns
the broker Redis's AOF off at run time (CONFIG SET) for a second point on the same platform.
Alternating cancels most of this shared machine's drift: compare columns of one run.
"""

import argparse
import json
import subprocess
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.harness import Bench, machine
from bench.loadgen import wrk
from bench.models import ACCEL_NAMES, accel_prepare, digits_prepare
from bench.systems.ours import Platform, heavy_request, platform_start, platform_stop


def faults(processes: dict[str, int]) -> dict[str, int]:
    """Minor page faults so far of each process (/proc/<pid>/stat, field 10)."""
    counts = {}
    for name, pid in processes.items():
        try:
            counts[name] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
        except (OSError, IndexError, ValueError):
            continue
    return counts


def point(bench: Bench, platform: Platform, datatype: str, label: str) -> None:
    url = f"{platform.base}/v2/models/{ACCEL_NAMES[datatype]}/infer"
    body, headers = heavy_request(bench.heavy_size, datatype, name="input")
    processes = platform.processes()
    before = faults(processes)
    bench.sweep(url, body, headers, [64], cpu_key=label, processes=platform.processes, cpu_levels=True)
    figures = bench.results["cpu_by_level"][label]["64"]
    images = figures["rps"] * bench.seconds
    after = faults(processes)
    by_process = {name: us for name, us in figures["core_us_per_answer_by_process"].items() if us >= 20}
    faulting = {name: round((after[name] - before[name]) / images, 1) for name in after if name in before}
    print(
        f"{label}: {figures['rps']:.0f} images/s, {figures['core_us_per_answer']:.0f} core-µs per image; "
        f"by process {by_process}; page faults per image { ({k: v for k, v in faulting.items() if v >= 1}) }",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", action="append", default=[], help="a configuration: JSON object of settings")
    parser.add_argument("--datatype", choices=sorted(ACCEL_NAMES), default="FP32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--aof-off", action="store_true")
    args = parser.parse_args()
    configurations = [json.loads(text) for text in args.env] or [{}]
    with TemporaryDirectory(prefix="accel-probe-") as folder:
        bench = Bench(False, Path(folder))
        bench.seconds = args.seconds
        bench.results["machine"] = machine()
        digits_prepare(bench)  # the platform deploys the demo model too
        key = f"accel_{args.datatype.lower()}"
        bench.heavy_dirs, bench.accel_dirs = {}, {}
        accel_prepare(bench, key)
        try:
            for round_ in range(args.rounds):
                for index, overrides in enumerate(configurations):
                    platform = platform_start(bench, **overrides)
                    try:
                        body, headers = heavy_request(bench.heavy_size, args.datatype, name="input")
                        url = f"{platform.base}/v2/models/{ACCEL_NAMES[args.datatype]}/infer"
                        wrk(url, body, concurrency=4, seconds=2, headers=headers)  # warm-up
                        label = f"round {round_ + 1}, configuration {index + 1} {overrides or '(defaults)'}"
                        point(bench, platform, args.datatype, label)
                        if args.aof_off:
                            redis = ["redis-cli", "-p", str(platform.redis_port)]
                            subprocess.run([*redis, "config", "set", "appendonly", "no"], check=True)
                            point(bench, platform, args.datatype, f"{label}, broker AOF off")
                    finally:
                        platform_stop(bench, platform)
        finally:
            bench.procs.stop_all()


if __name__ == "__main__":
    main()
