"""What a 100 % shadow costs live traffic (issue #17): live p50 at 8 clients, paired runs.

    python -m bench.shadow [--rounds 4] [--seconds 10] [--pace-ms 50] [--docs]

Starts the platform as `make bench` does (digits only), registers the demo model trained again
with another seed as the candidate, then alternates runs without and with a shadow rollout that
mirrors 100 % of the live requests to it (off, on, off, ..., off: `--rounds` runs with it, each
between two without). Each run is wrk with 8 connections on the native JSON route, each waiting
`--pace-ms` after an answer before its next request (so the machine keeps room, as live traffic
with headroom does; the wait is not in the latencies). A run with the shadow checks that the
candidate compared as many copies as live answered (the API's
`inference_shadow_requests_total{outcome="compared"}`).

Printed per run: requests/s, p50/p90/p99, the cores each process used; then each run with the
shadow against the mean of the runs just before and after it (drift cancels out), and the mean
p50 with against without. Writes bench/results/shadow.json; `--docs` also writes the figures in
docs/benchmarks.md's kept section "Shadow rollouts: what live traffic pays".
"""

import argparse
import json
import re
import statistics
import sys
import textwrap
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from bench.harness import ROOT, TOKEN, Bench, cpu_during, log, machine
from bench.loadgen import LoadResult, wrk
from bench.models import digits_prepare, digits_trained
from bench.systems.ours import Platform, platform_start, platform_stop

CLIENTS = 8
SETTLE_S = 2.5  # the API's registry cache (INFERENCE_REGISTRY_CACHE_S, 2 s) sees a rollout start or end
NEVER = 10**9  # min_samples no run reaches: the analysis never ends the shadow by itself
ADMIN = {"DJANGO_SUPERUSER_USERNAME": "admin", "DJANGO_SUPERUSER_PASSWORD": "bench-admin-password"}


def compared(api: httpx.Client) -> float:
    """Copies the shadow answered and compared so far (every candidate version)."""
    text = api.get("/metrics").text
    found = re.findall(r'^inference_shadow_requests_total\{[^}]*outcome="compared"[^}]*\} (\S+)', text, re.M)
    return sum(float(n) for n in found)


def run(bench: Bench, platform: Platform, body: bytes, pace_ms: float) -> tuple[LoadResult, dict[str, float]]:
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = f"{platform.base}/api/v1/predictions"
    return cpu_during(
        lambda: wrk(url, body, concurrency=CLIENTS, seconds=bench.seconds, headers=auth, pace_ms=pace_ms),
        platform.processes(),
    )


def measure(bench: Bench, rounds: int, pace_ms: float) -> dict[str, Any]:
    candidate_dir = digits_trained(bench, seed=1)  # the demo model trained again with another seed
    platform = platform_start(bench, digits_only=True, **ADMIN)
    try:
        platform.manage("register_model", str(candidate_dir))
        token = re.search(r"[0-9a-f]{40}", platform.manage("drf_create_token", "admin"))
        assert token is not None
        staff = httpx.Client(base_url=platform.base, headers={"Authorization": f"Token {token.group(0)}"})
        api = httpx.Client(base_url=platform.base, headers={"Authorization": f"Bearer {TOKEN}"})
        versions = staff.get("/api/v1/models/digits").json()
        live = versions["deployments"]["dev"]["version"]
        candidate = max(v["number"] for v in versions["versions"])
        body = bench.digits_body()
        run(bench, platform, body, pace_ms)  # warm-up
        runs: list[dict[str, Any]] = []
        for phase in ["off", *["on", "off"] * rounds]:
            rollout = None
            if phase == "on":
                started = staff.post(
                    "/api/v1/models/digits/rollouts",
                    json={
                        "version": candidate,
                        "environment": "dev",
                        "strategy": "shadow",
                        "mirror_percent": 100,
                        "dwell_s": 3600,
                        "thresholds": {"min_samples": NEVER},
                    },
                )
                assert started.status_code == 201, started.text
                rollout = started.json()
            time.sleep(SETTLE_S)
            copies = compared(api)
            load, cores = run(bench, platform, body, pace_ms)
            time.sleep(1.5)  # the last copies compared (a batch of copies waits up to 1 s)
            copies = compared(api) - copies
            if rollout is not None:
                staff.post(f"/api/v1/models/digits/rollouts/{rollout['id']}/abort", json={})
            figures = {"phase": phase, **load.as_dict(), "copies_compared": copies, "cores": cores}
            log(
                f"shadow {phase}: {load.rps:.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, "
                f"errors {load.errors}, copies compared {copies:.0f}, cores {cores}"
            )
            runs.append(figures)
    finally:
        platform_stop(bench, platform)
    p50 = [r["p50_ms"] for r in runs]
    paired = [
        round(p50[i] / ((p50[i - 1] + p50[i + 1]) / 2), 3) for i, r in enumerate(runs) if r["phase"] == "on"
    ]
    mean = {side: statistics.mean(r["p50_ms"] for r in runs if r["phase"] == side) for side in ("on", "off")}
    return {
        "command": "python -m bench.shadow " + " ".join(sys.argv[1:]),
        "machine": bench.results["machine"],
        "clients": CLIENTS,
        "pace_ms": pace_ms,
        "seconds": bench.seconds,
        "live_version": live,
        "candidate_version": candidate,
        "runs": runs,
        "p50_paired_ratios": paired,
        "p50_ratio_median": round(statistics.median(paired), 3),
        "p50_ratio_of_means": round(mean["on"] / mean["off"], 3),
        "errors": sum(r["errors"] for r in runs),
        "every_copy_compared": all(
            r["copies_compared"] >= 0.95 * r["requests"] for r in runs if r["phase"] == "on"
        ),
    }


SECTION = "## Shadow rollouts: what live traffic pays"


def docs_write(result: dict[str, Any], docs: Path) -> None:
    """Replace (or add) this section in docs/benchmarks.md's kept part."""
    rows = "\n".join(
        f"| {i} | {r['phase']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
        f"| {r['copies_compared']:.0f} | {sum(v for k, v in r['cores'].items() if not k.startswith('idle')):.2f} |"
        for i, r in enumerate(result["runs"], start=1)
    )
    setup = textwrap.fill(
        f"`{result['command']}` ({time.strftime('%Y-%m-%d')}, {result['machine'].get('cores', '?')} cores): "
        f"the digits platform as `make bench` runs it, {result['clients']} wrk connections each waiting "
        f"{result['pace_ms']:.0f} ms on average between an answer and its next request, "
        f"{result['seconds']:.0f} s per run, runs without (off) and with (on) a shadow rollout mirroring "
        f"100 % of the live requests to v{result['candidate_version']} (live: v{result['live_version']}), "
        "alternating.",
        width=100,
    )
    outcome = textwrap.fill(
        "Live p50 with the shadow against the mean of the runs just before and after it: "
        f"{result['p50_ratio_median']} (median of {result['p50_paired_ratios']}); mean p50 with against "
        f"without: {result['p50_ratio_of_means']}. Errors: {result['errors']}; every copy compared: "
        f"{'yes' if result['every_copy_compared'] else 'no'}. Target (issue #17): within 10 % (≤ 1.10).",
        width=100,
    )
    section = f"""{SECTION}

{setup}

| run | shadow | req/s | p50 ms | p90 ms | p99 ms | copies compared | busy cores |
|---|---|---|---|---|---|---|---|
{rows}

{outcome}
"""
    text = docs.read_text()
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section.rstrip() + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    docs.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pace-ms", type=float, default=50.0)
    parser.add_argument("--docs", action="store_true", help="write the figures in docs/benchmarks.md")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="bench-shadow-") as folder:
        bench = Bench(False, Path(folder))
        bench.seconds = args.seconds
        bench.results["machine"] = machine()
        digits_prepare(bench)
        try:
            result = measure(bench, args.rounds, args.pace_ms)
        finally:
            bench.procs.stop_all()
    out = ROOT / "bench" / "results" / "shadow.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.docs:
        docs_write(result, ROOT / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
