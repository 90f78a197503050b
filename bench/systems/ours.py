"""Our platform, as `make run` starts it (`python -m inference_project.local_platform`) on free
ports with the run's models deployed: digits on its native JSON route, the no-op route on the
same stack, each MobileNetV2 signature on the Open Inference Protocol with binary tensors, and
2,000 requests held in flight by one API process."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
import psutil

from apps.predictions.transports.oip import grpc_predict_v2_pb2 as pb
from bench.harness import HEAVY_CHILDREN, PYTHON, ROOT, TOKEN, Bench, free_port, log, rss_mb, wait_until
from bench.loadgen import LoadResult, h2load_grpc, wrk
from bench.models import ACCEL_NAMES, ACCEL_SIGNATURES, HEAVY_NAMES, HEAVY_SIGNATURES


def platform_env(root: Path, digits_dir: Path, *, redis_port: int, api_port: int) -> dict[str, str]:
    """The environment `make bench` runs our platform in: its own Redis, database and folders
    under `root`, free ports, no throttle or queue bound, no line per request, no Prometheus
    (bench/paired.py uses it too)."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CELERY_", "REDIS_", "DATABASE_", "INFERENCE_", "DJANGO_"))
        },
        "DJANGO_SETTINGS_MODULE": "inference_project.settings.local",
        "DATABASE_URL": f"sqlite:///{root / 'db.sqlite3'}",
        "ARTIFACTS_ROOT": str(root / "artifacts"),
        "ARTIFACT_CACHE_DIR": str(root / "cache"),
        "INFERENCE_VAR_DIR": str(root / "var"),
        "INFERENCE_DEMO_DIR": str(digits_dir),
        "REDIS_PORT": str(redis_port),
        "API_PORT": str(api_port),
        "GRPC_PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "INFERENCE_DEMO_TOKEN": TOKEN,
        "WORKER_CONCURRENCY": "1",
        "INFERENCE_THROTTLE_PER_SECOND": "0",
        "INFERENCE_MAX_QUEUE_DEPTH": "1000000",
        "INFERENCE_SYNC_TIMEOUT_S": "120",
        # Like the peers, no line per request; INFO costs ~14 % at 64 clients (docs/benchmarks.md).
        "LOG_LEVEL": "WARNING",
        "START_PROMETHEUS": "false",
    }


class Platform:
    """The platform of a run: its environment (the naive Celery peer reuses it and its Redis), its
    API's base URL, its `local_platform` process (`platform_start`) and the processes that one
    lists in var/run/pids.json."""

    proc: subprocess.Popen[bytes]

    def __init__(self, bench: Bench, name: str = "platform", **overrides: str) -> None:
        self.root = bench.work / name
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir()
        self.redis_port, self.api_port = free_port(), free_port()
        self.env = {
            **platform_env(self.root, bench.digits_dir, redis_port=self.redis_port, api_port=self.api_port),
            # The compute-bound model gets one child per core, each with its share of the threads
            # (workers/placement.py); digits keeps one child: it is bound by the API, not compute.
            **{
                f"WORKER_CONCURRENCY_{name.upper().replace('-', '_')}": str(HEAVY_CHILDREN)
                for name in HEAVY_NAMES.values()
            },
            # Extra platform settings for a tuning run, e.g. BENCH_PLATFORM_ENV='{"API_WORKERS": "2"}'.
            **json.loads(os.environ.get("BENCH_PLATFORM_ENV", "{}")),
            **overrides,
        }
        self.base = f"http://127.0.0.1:{self.api_port}"

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = json.loads((self.root / "var" / "run" / "pids.json").read_text())
        return pids

    def processes(self) -> dict[str, int]:
        """The platform's processes by name, with each model worker's children
        (`worker-digits/child0`, ...)."""
        pids = self.pids()
        named = dict(pids)
        for name, pid in pids.items():
            if name.startswith("worker-") and name != "worker-platform":
                for index, child in enumerate(psutil.Process(pid).children()):
                    named[f"{name}/child{index}"] = child.pid
        return named

    def manage(self, *args: str) -> str:
        """Run a management command on this platform's database and storage; its output."""
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True
        )
        return done.stdout

    def memory(self) -> dict[str, float]:
        """RSS in MB of the API and of every worker child."""
        return {
            name: round(rss_mb(pid), 1)
            for name, pid in self.processes().items()
            if name == "api" or "/child" in name
        }


def platform_start(bench: Bench, *, digits_only: bool = False, **overrides: str) -> Platform:
    """Migrate, register and deploy the heavy models (`digits_only`: none, only the demo model),
    start the platform with `overrides` to its environment and wait for /readyz."""
    platform = Platform(bench, "platform-digits" if digits_only else "platform", **overrides)
    platform.manage("migrate", "--noinput")
    for path in [] if digits_only else [*bench.heavy_dirs.values(), *bench.accel_dirs.values()]:
        platform.manage("register_model", str(path), "--deploy")
    log(f"starting the platform{' (digits only)' if digits_only else ''} {overrides or ''}")
    platform.proc = bench.procs.start(
        platform.root.name, [PYTHON, "-m", "inference_project.local_platform"], platform.env
    )
    wait_until(
        lambda: httpx.get(f"{platform.base}/readyz", timeout=2).status_code == 200, 300, "the platform"
    )
    return platform


def platform_stop(bench: Bench, platform: Platform) -> None:
    bench.procs.stop(platform.proc)


def heavy_image(size: int, datatype: str) -> np.ndarray:
    """One size x size x 3 image: FP32 in [0, 1), or UINT8."""
    image = np.random.default_rng(1).random((1, size, size, 3), dtype=np.float32)
    return (image * 255).astype(np.uint8) if datatype == "UINT8" else image


def heavy_request(size: int, datatype: str, *, name: str = "images") -> tuple[bytes, dict[str, str]]:
    """One size x size image as tritonclient sends it with binary_data=True."""
    image = heavy_image(size, datatype)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(image.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": image.nbytes},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }
    return header + image.tobytes(), headers


GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request(model: str, name: str, array: np.ndarray) -> bytes:
    """A ModelInfer request with the tensor as raw_input_contents (what tritonclient.grpc sends)."""
    datatype = {"float32": "FP32", "uint8": "UINT8"}[array.dtype.name]
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
    request.raw_input_contents.append(
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    )
    return request.SerializeToString()


def _grpc_answers(platform: Platform) -> dict[str, float]:
    """The API's count of ModelInfer calls by status (499: h2load cancelled calls in flight when its
    duration ran out, not errors)."""
    text = httpx.get(f"{platform.base}/metrics", timeout=10).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("inference_requests_total{") and 'route="grpc/ModelInfer"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def _grpc_sweep(
    bench: Bench,
    platform: Platform,
    message: bytes,
    cpu_key: str,
    levels: list[int] | None = None,
    *,
    cpu_levels: bool = False,
) -> list[dict[str, float]]:
    """Closed-loop ModelInfer calls with h2load at each level (the run's by default); a call the
    server answered with an error status counts as an error of its point."""
    url = f"http://127.0.0.1:{platform.env['GRPC_PORT']}{GRPC_INFER}"
    auth = {"authorization": f"Bearer {TOKEN}"}

    def load(concurrency: int) -> LoadResult:
        before = _grpc_answers(platform)
        result = h2load_grpc(url, message, concurrency=concurrency, seconds=bench.seconds, headers=auth)
        after = _grpc_answers(platform)
        failed = sum(v - before.get(s, 0.0) for s, v in after.items() if s not in ("200", "499"))
        result.errors += int(failed)
        return result

    load(4)  # warm-up
    return bench.sweep(
        url,
        message,
        auth,
        levels or bench.levels,
        cpu_key=cpu_key,
        processes=platform.processes,
        loader=load,
        cpu_levels=cpu_levels,
    )


ACCEL_LEVELS = [1, 8, 64]


def accel_measure(bench: Bench, platform: Platform) -> None:
    """results["ours_<accel key>"] (v2 binary REST) and ["ours_<accel key>_grpc"] (raw contents):
    the simulated accelerator at 1, 8 and 64 clients, with every process's CPU at each level
    (results["cpu_by_level"]): the serving path a GPU tier needs, with a model that costs none."""
    for key, datatype in ACCEL_SIGNATURES.items():
        name = ACCEL_NAMES[datatype]
        url = f"{platform.base}/v2/models/{name}/infer"
        body, headers = heavy_request(bench.heavy_size, datatype, name="input")
        wrk(url, body, concurrency=4, seconds=2, headers=headers)  # warm-up
        log(f"ours, simulated accelerator with {datatype} input (v2 binary REST)")
        bench.results[f"ours_{key}"] = bench.sweep(
            url, body, headers, ACCEL_LEVELS, cpu_key=key, processes=platform.processes, cpu_levels=True
        )
        log(f"ours, simulated accelerator with {datatype} input (gRPC raw contents, h2load)")
        message = grpc_request(name, "input", heavy_image(bench.heavy_size, datatype))
        bench.results[f"ours_{key}_grpc"] = _grpc_sweep(
            bench, platform, message, f"{key}_grpc", ACCEL_LEVELS, cpu_levels=True
        )


def ours_measure(bench: Bench, platform: Platform) -> None:
    """results["ours_digits"], ["noop"], ["ours_<heavy key>"], ["memory_after_load"] and
    ["inflight_2000"], with the CPU of each at 64 clients; the same over gRPC; the simulated
    accelerator's series with the CPU at every level."""
    base = platform.base
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = bench.digits_body()
    wrk(f"{base}/api/v1/predictions", body, concurrency=8, seconds=2, headers=auth)  # warm-up
    log("ours, digits (native JSON route)")
    bench.results["ours_digits"] = bench.sweep(
        f"{base}/api/v1/predictions", body, auth, bench.levels, cpu_key="digits", processes=platform.processes
    )
    log("ours, digits (gRPC ModelInfer, raw contents, h2load)")
    row = json.loads(body)["inputs"][0]
    bench.results["ours_digits_grpc"] = _grpc_sweep(
        bench, platform, grpc_request("digits", "pixels", np.array([row], dtype=np.float32)), "digits_grpc"
    )
    log("no-op endpoint on the same stack (GET /healthz)")
    bench.results["noop"] = bench.sweep(
        f"{base}/healthz", b"", {}, [64], method="GET", cpu_key="noop", processes=platform.processes
    )
    for key, datatype in HEAVY_SIGNATURES.items():
        url = f"{base}/v2/models/{HEAVY_NAMES[datatype]}/infer"
        heavy_body, heavy_headers = heavy_request(bench.heavy_size, datatype)
        wrk(url, heavy_body, concurrency=4, seconds=2, headers=heavy_headers)  # warm-up
        log(f"ours, MobileNetV2 with {datatype} input (Open Inference Protocol, binary tensors)")
        bench.results[f"ours_{key}"] = bench.sweep(
            url, heavy_body, heavy_headers, bench.levels, cpu_key=key, processes=platform.processes
        )
        if datatype == "FP32":
            log("ours, MobileNetV2 with FP32 input (gRPC ModelInfer, raw contents, h2load)")
            message = grpc_request(HEAVY_NAMES[datatype], "images", heavy_image(bench.heavy_size, datatype))
            bench.results[f"ours_{key}_grpc"] = _grpc_sweep(bench, platform, message, f"{key}_grpc")
    accel_measure(bench, platform)
    bench.results["memory_after_load"] = platform.memory()
    log("2,000 concurrent requests held by one API process")
    bench.results["inflight_2000"] = wrk(
        f"{base}/api/v1/predictions", body, concurrency=2000, seconds=bench.seconds + 5, headers=auth
    ).as_dict()
    log(f"  {bench.results['inflight_2000']}")


def events_measure(bench: Bench) -> None:
    """results["ours_digits_events_off"]: digits at 64 clients on a platform of its own whose
    workers send no Celery task events (CELERY_WORKER_SEND_TASK_EVENTS=false: Flower keeps its
    worker view, not its task list), beside a platform started the same way with them on, the
    CPU of every process counted in both (cpu_at_64 "digits_events_on" and "digits_events_off").
    A run-time `celery control disable_events` is no substitute: the workers answer "already
    disabled" and go on sending them."""
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = bench.digits_body()
    for state, value in (("on", "true"), ("off", "false")):
        platform = platform_start(bench, digits_only=True, CELERY_WORKER_SEND_TASK_EVENTS=value)
        try:
            url = f"{platform.base}/api/v1/predictions"
            wrk(url, body, concurrency=8, seconds=2, headers=auth)  # warm-up
            log(f"ours, digits with Celery task events {state}")
            bench.results[f"ours_digits_events_{state}"] = bench.sweep(
                url, body, auth, [64], cpu_key=f"digits_events_{state}", processes=platform.processes
            )
        finally:
            platform_stop(bench, platform)
