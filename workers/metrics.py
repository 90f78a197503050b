"""Prometheus metrics of the inference workers.

The samples are written by the prefork children (where batches run) and served by the Celery
parent on INFERENCE_WORKER_METRICS_PORT (default 9464) at /metrics, added up over its children
with prometheus_client's multiprocess mode: the worker needs PROMETHEUS_MULTIPROC_DIR, an empty
folder of its own (`make run` and the images set it). The parent also reports each child's
resident memory and CPU time.
"""

import logging
import os
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from inference_project.metrics import CONTENT_TYPE, LATENCY_BUCKETS, MULTIPROC_DIR, metrics_text

logger = logging.getLogger(__name__)

QUEUE_WAIT = Histogram(
    "inference_queue_wait_seconds",
    "Time a batch waited between the API publishing it and a worker starting it.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
PREDICT = Histogram(
    "inference_predict_duration_seconds",
    "Time of one batch's model call (predict_on_batch) in a worker.",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "inference_batch_size",
    "Rows in each batch a worker ran.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_REQUESTS = Histogram(
    "inference_batch_requests",
    "Requests in each batch a worker ran.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
WORKER_REQUESTS = Counter(
    "inference_worker_requests_total",
    "Requests answered by workers, by model, version and outcome (ok, an error code, or "
    "cancelled: skipped, its client went away before the batch ran).",
    ["model", "version", "outcome"],
)
LOAD_SECONDS = Histogram(
    "inference_model_load_duration_seconds",
    "Time to fetch, verify and load a model version in a worker child.",
    ["model", "version"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
LOADED = Gauge(
    "inference_model_loaded",
    "1 for each version a worker child has loaded (label pid: the child).",
    ["model", "version"],
    multiprocess_mode="liveall",
)
REDELIVERIES = Counter(
    "inference_task_redeliveries_total",
    "Batches delivered again (a worker died or the visibility timeout passed before the ack).",
    ["model"],
)
AUTOMATIC_ROLLBACKS = Counter(
    "inference_automatic_rollbacks_total",
    "Live versions this worker found unloadable and rolled back to the last good version.",
    ["model", "environment"],
)
RETRIES = Counter("inference_task_retries_total", "Task retries, by task name.", ["task"])


class ChildrenCollector(Collector):
    """Resident memory and CPU seconds of this process and each of its children (the pool)."""

    def collect(self) -> Iterable[Metric]:
        rss = GaugeMetricFamily(
            "inference_worker_resident_memory_bytes",
            "Resident memory of a worker process.",
            labels=["pid", "role"],
        )
        cpu = CounterMetricFamily(
            "inference_worker_cpu_seconds",
            "CPU time (user + system) of a worker process.",
            labels=["pid", "role"],
        )
        parent = psutil.Process()
        for process, role in [(parent, "parent"), *((child, "child") for child in parent.children())]:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    rss.add_metric([str(process.pid), role], process.memory_info().rss)
                    cpu.add_metric([str(process.pid), role], times.user + times.system)
            except psutil.Error:
                continue
        return [rss, cpu]


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = metrics_text(ChildrenCollector())
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return  # scrapes are not worth a log line each


def metrics_server_start(port: int, host: str) -> ThreadingHTTPServer | None:
    """Serve /metrics from the Celery parent; None (and a warning) without a multiprocess dir,
    where the children's samples could not be collected."""
    if not MULTIPROC_DIR:
        logger.warning("PROMETHEUS_MULTIPROC_DIR is not set: worker metrics are not exported")
        return None
    os.makedirs(MULTIPROC_DIR, exist_ok=True)
    server = ThreadingHTTPServer((host, port), _MetricsHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    logger.info("worker metrics on http://%s:%s/metrics", host, port, extra={"metrics_port": port})
    return server
