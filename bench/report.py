"""Turn a benchmark run into docs/benchmarks.md and a PNG (throughput and latency vs clients)."""

from pathlib import Path
from typing import Any

from bench.models import HEAVY_SIGNATURES

SERIES = {
    "ours_digits": "ours (digits)",
    "ours_digits_grpc": "ours (digits, gRPC)",
    "naive_digits": "naive Celery (digits)",
    "redis_loop_digits": "Redis-list loop (digits)",
    "ray_digits": "Ray Serve (digits)",
    "ours_heavy": "ours (MobileNetV2, FP32 input)",
    "ours_heavy_uint8": "ours (MobileNetV2, UINT8 input)",
    "ours_heavy_grpc": "ours (MobileNetV2, FP32 input, gRPC)",
    "ours_accel_fp32": "ours (simulated accelerator, FP32 224×224×3, v2 binary REST)",
    "ours_accel_fp32_grpc": "ours (simulated accelerator, FP32, gRPC raw contents)",
    "ours_accel_uint8": "ours (simulated accelerator, UINT8, v2 binary REST)",
    "ours_accel_uint8_grpc": "ours (simulated accelerator, UINT8, gRPC raw contents)",
    "redis_loop_accel_fp32": "Redis-list loop (simulated accelerator, FP32, raw bytes)",
    "redis_loop_accel_uint8": "Redis-list loop (simulated accelerator, UINT8, raw bytes)",
}
# Series measured with the CPU of every process at every level (the serving path per image).
ACCEL_SERIES = [key for key in SERIES if "accel" in key]
RAW_NAMES = {"digits": "digits", **{key: f"MobileNetV2 {dtype}" for key, dtype in HEAVY_SIGNATURES.items()}}
BUDGET_NAMES = {
    **{key: f"ours, {name}" for key, name in RAW_NAMES.items()},
    "noop": "ours, no-op endpoint (GET /healthz)",
    "digits_grpc": "ours, digits over gRPC",
    "digits_events_on": "ours, digits only, Celery task events on",
    "digits_events_off": "ours, digits only, Celery task events off",
    **{
        key.removeprefix("ours_"): label.replace("ours (", "ours, ").rstrip(")")
        for key, label in SERIES.items()
        if key.startswith("ours_accel")
    },
    **{
        key: label.replace(" (", ", ").rstrip(")")
        for key, label in SERIES.items()
        if key.startswith("redis_loop_accel")
    },
    "heavy_grpc": "ours, MobileNetV2 FP32 over gRPC",
    "redis_loop": "Redis-list loop, digits",
}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, label in SERIES.items():
        if key in ACCEL_SERIES:  # images on a free model: the tables say it better
            continue
        points = results.get(key)
        if not isinstance(points, list):
            continue
        xs = [p["concurrency"] for p in points]
        left.plot(xs, [p["rps"] for p in points], marker="o", label=label)
        right.plot(xs, [p["p50_ms"] for p in points], marker="o", label=f"{label} p50")
        right.plot(xs, [p["p99_ms"] for p in points], marker="x", linestyle="--", label=f"{label} p99")
    raw_best = max(v["rows_per_s"] for v in results["raw"]["digits"].values())
    left.axhline(raw_best, color="grey", linestyle=":", label="raw digits predict (best batch)")
    left.set(
        xscale="log", yscale="log", xlabel="concurrent clients", ylabel="requests / s", title="Throughput"
    )
    right.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="ms", title="Latency")
    left.legend(fontsize=7)
    right.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{results['machine']['cpu']} · {results['machine']['cores']} cores · {results['mode']} run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(points: Any) -> list[str]:
    if not isinstance(points, list):
        return [f"_{points.get('skipped', 'not measured')}_", ""]
    rows = ["| clients | req/s | p50 ms | p90 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    rows += [
        f"| {p['concurrency']} | {p['rps']:.0f} | {p['p50_ms']:.1f} | {p['p90_ms']:.1f} | {p['p99_ms']:.1f} | {p['errors']} |"
        for p in points
    ]
    return [*rows, ""]


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    heavy = r["raw_layout"]["heavy"]
    card = r["heavy_batching"]
    lines = [
        "# Benchmarks",
        "",
        f"Command: `{r['command']}` ({r['mode']} run, {r['seconds_per_point']:g} s per point, closed-loop load from `wrk`",
        "(REST) and nghttp2's `h2load` (gRPC, one stream per connection): each connection sends its next",
        "request when the answer arrives; latency is per request).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB, no GPU. Python {m['python']}, TensorFlow",
        f"{m['tensorflow']}, Keras {m['keras']}, Django {m['django']}, Celery {m['celery']}, uvicorn {m['uvicorn']},",
        f"Redis {m['redis']}, Ray {m['ray']}. Everything (load generator, API, Redis, workers, peers) shares these cores.",
        "",
        "Our platform: 1 API process (uvicorn); digits: 1 worker child, `max_batch_size` 64 rows,",
        f"`max_delay_ms` 2; MobileNetV2 (each signature its own worker): {heavy['processes']} worker children with {heavy['threads']}",
        f"TensorFlow thread(s) each, `max_batch_size` {card['max_batch_size']} rows, `max_delay_ms` {card['max_delay_ms']:g}; tensors of batches",
        "over 64 KB beside the task in Redis, `LOG_LEVEL=WARNING` (no line per request, as the peers), no Prometheus.",
        "MobileNetV2 runs with two signatures of the same network (bench/models.py): FP32 images, and UINT8",
        "pixels scaled by the model's first layer (a quarter of the bytes on the wire and in Redis).",
        "Peers get the same model and one model process each.",
        "",
        "## Targets",
        "",
        "| measure | value | target | met |",
        "|---|---|---|---|",
    ]
    names = {
        "heavy_vs_raw": "MobileNetV2 FP32: our throughput / raw best-batch throughput (best layout)",
        "heavy_vs_one_process": "MobileNetV2 FP32: our throughput / raw in one process (TensorFlow's threads)",
        "heavy_uint8_vs_raw": "MobileNetV2 UINT8: our throughput / raw best-batch throughput (best layout)",
        "heavy_uint8_vs_one_process": "MobileNetV2 UINT8: our throughput / raw in one process",
        "small_vs_naive_at_64": "digits at 64 clients: ours / naive Celery",
        "small_vs_best_peer_at_64": "digits at 64 clients: ours / best other peer",
        "p99_vs_best_peer_at_64_ms": "digits at 64 clients: our p99 − that peer's p99 (ms)",
        "small_vs_noop_at_64": "digits at 64 clients: ours / no-op endpoint on the same stack",
        "p50_one_client_minus_raw_ms": "p50 at 1 client − raw single predict (ms)",
        "inflight_2000_errors": "errors with 2,000 requests in flight on one API process",
    }
    for key, label in names.items():
        item = r["targets"].get(key)
        if item is None:
            continue
        peer = f" ({item['peer']})" if "peer" in item else ""
        target = (
            "—"
            if item["target"] is None
            else (f"≤ {item['target']:g}" if item.get("lower_is_better") else f"≥ {item['target']:g}")
        )
        met = "—" if item["met"] is None else ("yes" if item["met"] else "**no**")
        lines.append(f"| {label}{peer} | {item['value']:.2f} | {target} | {met} |")
    lines += [
        "",
        "## Raw in-process `predict_on_batch` (the limit)",
        "",
        "| model | batch | rows/s | p50 ms per call |",
        "|---|---|---|---|",
    ]
    for model, sizes in r["raw"].items():
        name = RAW_NAMES.get(model, model)
        lines += [f"| {name} | {b} | {v['rows_per_s']:.0f} | {v['p50_ms']:.2f} |" for b, v in sizes.items()]
    lines += [
        "",
        f"The heavy worker's layout, raw: {heavy['processes']} processes measuring at the same time, "
        f"{heavy['threads']} TensorFlow thread(s) each",
        "(rows/s summed; p50 of the slowest). Each heavy target divides by its model's best row of both tables.",
        "",
        "| model | batch | rows/s | p50 ms per call |",
        "|---|---|---|---|",
        *[
            f"| {RAW_NAMES.get(model, model)} | {b} | {v['rows_per_s']:.0f} | {v['p50_ms']:.2f} |"
            for model, layout in r["raw_layout"].items()
            for b, v in layout["batches"].items()
        ],
        "",
    ]
    for key, label in [*SERIES.items(), ("noop", "no-op endpoint (GET /healthz, same server stack)")]:
        lines += [f"## {label}", "", *_table(r.get(key))]
    if cpu := r.get("cpu_at_64"):
        series = list(cpu)
        processes = list(dict.fromkeys(name for cores in cpu.values() for name in cores))
        lines += [
            "## CPU at 64 clients (cores used, during the point above)",
            "",
            "Where the machine's cores went: every platform process, the load generator, and what",
            "stayed idle. `worker-<model>` is a model worker's Celery parent, `worker-<model>/child<n>`",
            "its children (TensorFlow); the kernel's share of moving request bodies is in whichever",
            "process was running.",
            "",
            "| process | " + " | ".join(series) + " |",
            "|---|" + "---|" * len(series),
            *[
                f"| {name} | " + " | ".join(f"{cpu[key].get(name, 0):.2f}" for key in series) + " |"
                for name in processes
            ],
            "",
        ]
    if budget := r.get("cpu_budget"):
        lines += [
            "## CPU per answer at 64 clients, and the ceiling it sets",
            "",
            "Busy cores are the machine's cores less idle (every process and the kernel). The ceiling is",
            "the throughput at which that cost per answer fills every core: more work in flight can raise",
            "a latency-bound system up to it, only less CPU per answer past it.",
            "",
            "| system | req/s | busy cores | core-µs per answer | CPU ceiling, req/s |",
            "|---|---|---|---|---|",
            *[
                f"| {BUDGET_NAMES.get(key, key)} | {b['rps']:.0f} | {b['busy_cores']:.2f} | "
                f"{b['core_us_per_answer']:.0f} | {b['ceiling_rps']:.0f} |"
                for key, b in budget.items()
            ],
            "",
        ]
    for key, need in r.get("cpu_needed", {}).items():
        if key == "digits":
            noop = f"; the no-op route alone spent {need['noop_us']:.0f}" if "noop_us" in need else ""
            lines.append(
                f"- digits: {need['target']:g} × the Redis-list peer allows {need['allowed_us']:.0f} core-µs per answer on "
                f"this machine (the peer spent {need['peer_us']:.0f}); ours spent {need['spent_us']:.0f}{noop}."
            )
        else:
            lines.append(
                f"- {RAW_NAMES.get(key, key)}: raw TensorFlow costs {need['raw_us']:.0f} core-µs per image "
                f"(the best raw layout); {need['target']:g} of raw allows {need['allowed_us']:.0f} end to end, "
                f"{need['allowed_us'] - need['raw_us']:.0f} for all that is not TensorFlow; ours spent "
                f"{need['spent_us']:.0f}."
            )
    if r.get("cpu_needed"):
        lines.append("")
    lines += _serving_path(r)
    inflight = r["inflight_2000"]
    lines += [
        "## 2,000 requests in flight",
        "",
        f"{inflight['concurrency']} connections for {inflight['seconds']:g} s on one API process: {inflight['requests']} answers,",
        f"{inflight['rps']:.0f} req/s, p50 {inflight['p50_ms']:.0f} ms, p99 {inflight['p99_ms']:.0f} ms, {inflight['errors']} errors.",
        "",
        "## Memory (RSS, MB)",
        "",
        f"After the load above: {r.get('memory_after_load')}.",
    ]
    if "memory_run" in r:
        samples = r["memory_run"]["samples"]
        growth = {
            k: (max(s.get(k, 0) for s in samples[1:]) / samples[1][k] - 1)
            for k in samples[1]
            if samples[1][k]
        }
        lines += [
            f"Over {r['memory_run']['seconds']:.0f} s at 64 clients, sampled every 30 s: first {samples[1]}, last {samples[-1]};",
            "largest growth after warm-up: " + ", ".join(f"{k} {v:+.1%}" for k, v in growth.items()) + ".",
        ]
    lines += [
        "",
        "Why the targets that are missed are missed, and what to try next: `docs/architecture.md`,",
        'section "Dynamic batching and the HTTP fast path".',
        "",
    ]
    return "\n".join(lines)


def serving_path_us(r: dict[str, Any]) -> dict[str, float]:
    """Core-µs per image outside the model at 64 clients (the simulated accelerator costs no CPU),
    over v2 binary REST: the issue's `serving_path_core_us_per_image`."""
    budget = r.get("cpu_budget", {})
    return {
        dtype: budget[key]["core_us_per_answer"]
        for dtype, key in (("fp32", "accel_fp32"), ("uint8", "accel_uint8"))
        if key in budget
    }


def _serving_path(r: dict[str, Any]) -> list[str]:
    """The simulated accelerator's per-process cost per image at each level, ours and the loop's."""
    by_level = r.get("cpu_by_level", {})
    lines: list[str] = []
    if by_level:
        lines += [
            "## The serving path per image (simulated accelerator: no CPU in the model)",
            "",
            "Core-µs per image by process at 1, 8 and 64 clients; `busy` is the whole machine's",
            "(the kernel and the load generator included). On a GPU the model answers a batch in about a",
            "millisecond: this is what the CPU side must spend per image to feed it.",
            "",
        ]
        for key, levels in by_level.items():
            # The processes that spent something here (the other models' workers sit idle).
            processes = [
                p
                for p in dict.fromkeys(
                    p for level in levels.values() for p in level["core_us_per_answer_by_process"]
                )
                if any(level["core_us_per_answer_by_process"].get(p, 0) >= 10 for level in levels.values())
            ]
            lines += [
                f"**{BUDGET_NAMES.get(key, key)}**",
                "",
                "| clients | req/s | busy core-µs | " + " | ".join(processes) + " |",
                "|---|---|---|" + "---|" * len(processes),
                *[
                    f"| {level} | {v['rps']:.0f} | {v['core_us_per_answer']:.0f} | "
                    + " | ".join(f"{v['core_us_per_answer_by_process'].get(p, 0):.0f}" for p in processes)
                    + " |"
                    for level, v in levels.items()
                ],
                "",
            ]
        figure = serving_path_us(r)
        if figure:
            lines += [
                "Serving path at 64 clients, core-µs per image outside the model (v2 binary REST): "
                + ", ".join(f"{dtype.upper()} {us:.0f}" for dtype, us in figure.items())
                + " (the target is ≤ 1,500 for FP32).",
                "",
            ]
    budget = r.get("cpu_budget", {})
    if "digits_events_on" in budget and "digits_events_off" in budget:
        rows = []
        for state in ("on", "off"):
            b, cores = budget[f"digits_events_{state}"], r["cpu_at_64"][f"digits_events_{state}"]
            parent = cores.get("worker-digits", 0.0)
            rows.append(
                f"| {state} | {b['rps']:.0f} | {b['core_us_per_answer']:.0f} | "
                f"{parent / b['rps'] * 1e6:.0f} | {cores.get('flower', 0.0) / b['rps'] * 1e6:.0f} |"
            )
        lines += [
            "## Celery task events on and off (digits, 64 clients)",
            "",
            "Two platforms with only the demo model, started alike but for `CELERY_WORKER_SEND_TASK_EVENTS`.",
            "",
            "| task events | req/s | core-µs per answer (machine) | worker parent core-µs | Flower core-µs |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    return lines
