"""The memory run of a full `make bench`: our platform under digits load at 64 clients for
BENCH_MEMORY_S seconds (600 by default), the RSS of the API and every worker child sampled every
30 s, to show whether anything grows once warm."""

from bench.harness import TOKEN, Bench, log
from bench.loadgen import wrk
from bench.systems.ours import Platform


def memory_run(bench: Bench, platform: Platform, seconds: float) -> None:
    """results["memory_run"]: {"seconds", "samples"}, the first sample taken before the load."""
    log(f"memory: {seconds:.0f} s at c=64, RSS sampled every 30 s")
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    samples = [platform.memory()]
    remaining = seconds
    while remaining > 0:
        step = min(30.0, remaining)
        wrk(
            f"{platform.base}/api/v1/predictions",
            bench.digits_body(),
            concurrency=64,
            seconds=step,
            headers=auth,
        )
        samples.append(platform.memory())
        remaining -= step
    bench.results["memory_run"] = {"seconds": seconds, "samples": samples}
