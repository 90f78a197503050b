"""docs/scaling.md and docs/scaling.png from a run's figures (bench/scale/run.py --docs)."""

import os
import platform
from pathlib import Path
from typing import Any

from bench.scale.measure import OTHER
from bench.scale.topology import ROOT

DOCS = ROOT / "docs"


def _cores(point: dict[str, Any]) -> str:
    used = {k: v for k, v in point["cpu_cores"].items() if k != "machine busy"}
    ranked = sorted(used.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {value:.2f}" for name, value in ranked if value >= 0.01)


def _attempts(saw: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in saw["attempts"].items())


def _postgres_detail(four: dict[str, Any]) -> str:
    return (
        f"PostgreSQL down {four['outage_s']} s (registry and API key caches {four['registry_cache_s']:g} s, "
        f"shorter than the outage); {four['served_during_outage']} predictions answered meanwhile; "
        f"registry writes (a staff upload through HAProxy) answered "
        f"{', '.join(f'{k}: {v}' for k, v in four['writes_refused_statuses'].items())} "
        f"({four['writes_refused_without_retry_after']} without Retry-After) for "
        f"{four['writes_refused_for_s']} s, then {four['write_status']} "
        f"{four['write_after_restart_s']} s after PostgreSQL accepted logins again"
    )


def _redis_detail(three: dict[str, Any]) -> str:
    sync, jobs = three["clients_saw"], three["async_clients_saw"]
    gaps = ", ".join(f"{g} s" for g in three["watch_gaps_s"]) or "none"
    return (
        f"{three['promoted']} promoted {three['promoted_after_s']} s after the kill; served again "
        f"{sync['served_again_s']} s (sync) and {jobs['served_again_s']} s (async) after it; async "
        f"({three['async_clients']} clients): {_attempts(jobs)}, {three['async_done']} of "
        f"{three['async_accepted']} jobs answered 202 done; {three['host']} restarted "
        f"{three['replica_back_after_s']} s after the kill as a {three['restarted_as']} of "
        f"{three['promoted']}; the harness's result subscription was away {gaps}, so computed "
        f"twice is a lower bound here"
    )


def _fault_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    one = results["fault_worker_host"]
    five = results["fault_api_host"]
    faults: list[tuple[dict[str, Any], str]] = [
        (
            one,
            f"requests {one['host']} held when it was cut: {one['stranded_requests']}; answered by "
            f"{', '.join(f'{h} ({n})' for h, n in one['stranded_served_by'].items()) or 'nobody'}, "
            f"redelivered {one['first_redelivered_after_s']}–{one['redelivered_after_s']} s after the cut",
        ),
        (
            five,
            f"requests retried with their Idempotency-Key: {five['clients_saw']['requests_retried']}; "
            f"errors {five['clients_saw']['errors_from_s']}–{five['clients_saw']['errors_until_s']} s "
            f"after the cut",
        ),
    ]
    if "fault_postgres" in results:
        faults.append((results["fault_postgres"], _postgres_detail(results["fault_postgres"])))
    if "fault_redis_primary" in results:
        faults.append((results["fault_redis_primary"], _redis_detail(results["fault_redis_primary"])))
    for fault, detail in faults:
        saw = fault["clients_saw"]
        attempts = _attempts(saw)
        rows.append(
            f"| {fault['fault']} ({fault['host']}) | {fault['requests']} | {attempts} | "
            f"{saw['slowest_answer_s']} s | {fault['lost']} | {fault['computed_twice']} | "
            f"{fault['computed_for_nobody']} | {fault['wrong_answers']} | {detail} |"
        )
    return rows


def _reading(results: dict[str, Any]) -> list[str]:
    """What the table says, from its figures: where the last point stands against the no-op
    ceiling of the same hosts, and why efficiency may pass 1."""
    points = results["points"]
    last = points[-1]
    lines = []
    over = [p for p in points if p["efficiency"] > 1.05]
    first_rows, last_rows = points[0].get("rows_per_batch"), last.get("rows_per_batch")
    if over and first_rows and last_rows and last_rows > first_rows * 1.05:
        lines.append(
            f"Efficiency above 1 ({', '.join(str(p['worker_hosts']) for p in over)} hosts): T(1) is measured "
            f"with the fewest clients, whose requests meet less often within the model's 2 ms batching "
            f"delay ({first_rows} rows per batch at 1 host, {last_rows} at {last['worker_hosts']}), so each "
            f"host answers more per kernel call as clients grow."
        )
    elif over:
        other = points[0]["cpu_cores"].get(OTHER, 0.0)
        lines.append(
            f"Efficiency above 1 ({', '.join(str(p['worker_hosts']) for p in over)} hosts) with the same "
            f"rows per batch ({first_rows} → {last_rows}): T(1) is low; while it was measured, "
            f"{other:.2f} cores went to work outside the platform."
        )
    noop = results.get("noop")
    if noop:
        share = last["rps"] / noop["rps"]
        ranked = sorted(
            (k for k in noop["cpu_cores"] if k != "machine busy"), key=lambda k: -float(noop["cpu_cores"][k])
        )
        first, second = ranked[0], ranked[1]
        lines.append(
            f"At {last['worker_hosts']} worker hosts the platform answers {last['rps']:.0f} req/s, "
            f"{share:.0%} of what the same hosts answer with a no-op kernel ({noop['rps']:.0f} req/s, "
            f"{noop['cpu_cores']['machine busy']:.2f} of {os.cpu_count()} cores busy): "
            + (
                "the kernel's sleep is no longer what limits it, this machine's cores are. "
                if share >= 0.85
                else "the kernel's sleep still limits it more than the cores do. "
            )
            + f"Each answer costs "
            f"{last.get('cpu_us_per_answer')} µs of CPU across all tiers, so more worker hosts on "
            f"these {os.cpu_count()} cores cannot add throughput; on separate machines the same "
            f"figures say where the next cap is: {first} ({noop['cpu_cores'][first]:.2f} cores at the no-op "
            f"point), then {second} ({noop['cpu_cores'][second]:.2f})."
        )
    return lines


def _broker_line(noop: dict[str, Any]) -> str:
    """The broker's own ceiling: Redis runs its commands on one thread, so at its CPU per answer
    it saturates at rps / cores-used."""
    redis_cores = float(noop["cpu_cores"].get("Redis", 0.0))
    if redis_cores <= 0:
        return "Redis's CPU was not measurable."
    per_answer_us = redis_cores / noop["rps"] * 1e6
    return (
        f"Redis (broker and result store) used {redis_cores:.2f} of its one thread's core, "
        f"{per_answer_us:.0f} µs per answer: on its own it would saturate at about "
        f"{noop['rps'] / redis_cores:.0f} req/s."
    )


def report_markdown(results: dict[str, Any], *, command: str) -> str:
    layout = results["layout"]
    lines = [
        "# Scaling past one machine: the multi-host harness",
        "",
        "Hosts are Linux network namespaces on one bridge (`bench/scale/netns.py`); each runs the",
        "start script `deploy/` runs for its process type: Redis (`deploy/bin/redis`: a primary and",
        "its replica, and three Sentinels, `deploy/bin/sentinel`, quorum 2; every client, the",
        "harness's own too, finds the primary through `REDIS_SENTINELS`), PostgreSQL",
        "(`deploy/bin/postgres`) for the registry, two API hosts (`deploy/bin/api`, migrated with",
        "`deploy/bin/migrate`), HAProxy (`deploy/bin/haproxy`, health-checking `/healthz`) and 1 to 8",
        "worker hosts (`deploy/bin/worker accel`, one child each). The model is the simulated",
        f"accelerator (`workers/simulated.py`): {layout['batch_ms']} ms + {layout['row_ms']} ms per row",
        f"asleep per batch, batches of at most {layout['max_batch_size']} rows, registered and",
        "deployed with `manage.py register_model --deploy` like any version. Load: wrk, closed loop,",
        "from the root namespace against HAProxy's address, "
        f"{results.get('clients_per_host', 8)} connections per worker host, {results['seconds_per_point']} s a point.",
        "Small batches keep one host's accelerator the cap at one host, so what",
        "adding hosts buys is visible; `--batch-ms`, `--row-ms` and `--max-batch` change the kernel.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"Run {results.get('date', '')} as root on {os.cpu_count()} cores ({platform.platform()}); "
        f"registry on {results['database']};",
        f"the platform started in {results['start_s']} s, the whole run took {results['total_s']} s.",
        "",
        "## Throughput across worker hosts",
        "",
        "Efficiency is T(k) / (k·T(1)). CPU is cores used during the point, per component (every",
        "process of its hosts, found by network namespace), the kernel's interrupt time (packets",
        "crossing the bridge) and `other`: the machine's busy time none of these accounts for",
        "(other users of the machine, this harness's own Python).",
        "",
        "| worker hosts | clients | req/s | p50 ms | p99 ms | errors | efficiency | rows per batch "
        "| CPU µs per answer (machine) | cores used (by component) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        lines.append(
            f"| {p['worker_hosts']} | {p['concurrency']} | {p['rps']:.0f} | {p['p50_ms']} | {p['p99_ms']} | "
            f"{p['errors']} | {p['efficiency']:.2f} | {p.get('rows_per_batch')} | {p.get('cpu_us_per_answer')} | "
            f"{p['cpu_cores']['machine busy']:.2f} busy: {_cores(p)} |"
        )
    lines += ["", f"**Cap:** {results['cap']}.", "", *_reading(results), ""]
    noop = results.get("noop")
    if noop:
        lines += [
            "## The serving path's own cap (no-op kernel)",
            "",
            f"The same hosts with a version whose kernel takes 0 ms: {noop['rps']:.0f} req/s at",
            f"{noop['concurrency']} clients (p50 {noop['p50_ms']} ms, p99 {noop['p99_ms']} ms,",
            f"{noop['errors']} errors). Cores: {_cores(noop)}. Cap: {noop['cap']}.",
            _broker_line(noop),
            "",
        ]
    lines += [
        "## Faults",
        "",
        "One cluster serves every fault, in this order (the Redis primary last: it changes which",
        "host is the primary). Clients: closed-loop synchronous requests through HAProxy, each with its own",
        "`Idempotency-Key` and input, retried with the same key after any error (for the Redis fault",
        'also asynchronous ones, `"async": true`, whose jobs are polled afterwards); the table\'s',
        "attempts are the synchronous clients'. Lost, computed",
        "twice and computed for nobody are counted from the platform's records: every answer is",
        "published on its `celery-task-meta-<id>` key and stored there (a subscriber counts",
        "publications per id), and the lost host's requests are the ones kombu still held as",
        "unacknowledged a second and two seconds after the cut.",
        "",
        "| fault | requests | attempts clients saw | slowest answer | lost | computed twice "
        "| computed for nobody | wrong answers | detail |",
        "|---|---|---|---|---|---|---|---|---|",
        *_fault_rows(results),
        "",
        "- Fault 1 (worker host cut off mid-batch, then SIGKILLed): the host's messages stay in kombu's",
        "  unacked hash; the live workers' sweep (visibility timeout 6 s, every second:",
        "  `CELERY_BROKER_TRANSPORT_OPTIONS`) puts them back, another host answers them, and the",
        "  clients waiting on them get their answer late instead of an error.",
        "- Fault 5 (API host lost): HAProxy's checks (500 ms, fall 2) take it out and shut its",
        "  sessions (`on-marked-down shutdown-sessions`), so its clients see a closed connection about",
        "  two seconds after the cut and retry with their key through the other API host, which",
        "  answers the first attempt's id and answer when it had been accepted.",
        "- Fault 4 (PostgreSQL stopped with SIGTERM, a fast shutdown, and started again on its host):",
        "  predictions are answered from the APIs' last registry state (routes, readiness list, API",
        "  keys); the harness sets the registry and API key caches to 1 s (`INFERENCE_REGISTRY_CACHE_S`,",
        "  `INFERENCE_API_KEY_CACHE_S`) so that the outage outlasts them and what serves is that",
        "  fallback; registry writes answer 503 with `Retry-After` until PostgreSQL is back.",
        "- Fault 3 (the primary's `redis-server` SIGKILLed, its host kept): the Sentinels (down after",
        "  1 s, quorum 2) promote the replica; clients get 503 with `Retry-After` meanwhile and",
        "  retry with their key. The old primary's host then starts `deploy/bin/redis` again with its",
        "  first start's environment, as a supervisor would: the script asks the Sentinels and comes",
        "  back as the promoted node's replica, never as a primary (which would take writes that its",
        "  conversion into a replica then wipes). Requests are accepted once the replica holds their",
        "  message (`INFERENCE_PUBLISH_REPLICAS=1`), so an async job answered 202 survives the kill.",
        "  The harness's subscriber follows the Sentinels too and subscribes again after the",
        "  failover; answers published while it was away are not counted, so computed twice is a",
        "  lower bound for this fault. Computed for nobody: requests answered 503 whose message",
        "  had been published (an async job short of replicas, refused rather than risked) may",
        "  still run; the refusal gave up their Idempotency-Key claim, so the client's retry ran",
        "  under a new id (`apps/predictions/idempotency.py`).",
        "",
        "Figures of the run: `test-artifacts/scale.json`; every process's output:",
        "`test-artifacts/scale-logs/`.",
        "",
    ]
    return "\n".join(lines)


def report_plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["points"]
    hosts = [p["worker_hosts"] for p in points]
    figure, throughput = plt.subplots(figsize=(7, 4))
    throughput.plot(hosts, [p["rps"] for p in points], "o-", color="tab:blue", label="throughput")
    ideal = [points[0]["rps"] * k for k in hosts]
    throughput.plot(hosts, ideal, ":", color="tab:blue", alpha=0.5, label="k · T(1)")
    throughput.set_ylim(bottom=0)
    throughput.set_xlabel("worker hosts")
    throughput.set_ylabel("req/s")
    throughput.set_xticks(hosts)
    efficiency = throughput.twinx()
    efficiency.plot(hosts, [p["efficiency"] for p in points], "s--", color="tab:orange", label="efficiency")
    efficiency.axhline(0.9, color="tab:orange", alpha=0.3)
    efficiency.set_ylabel("efficiency T(k) / (k·T(1))")
    efficiency.set_ylim(0, 1.3)
    handles = throughput.get_legend_handles_labels()[0] + efficiency.get_legend_handles_labels()[0]
    figure.legend(handles=handles, loc="lower right", bbox_to_anchor=(0.86, 0.15))
    throughput.set_title("Simulated accelerator across worker hosts (network namespaces, one machine)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report_write(results: dict[str, Any], *, command: str) -> None:
    (DOCS / "scaling.md").write_text(report_markdown(results, command=command))
    report_plot(results, DOCS / "scaling.png")
