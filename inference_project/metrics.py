"""Prometheus plumbing shared by the API and the workers.

Each process type keeps its metrics in prometheus_client's default registry. Where one service
runs several processes (uvicorn --workers N, a Celery worker's prefork children), set
PROMETHEUS_MULTIPROC_DIR to an empty folder per service instance before it starts: each process
then writes its samples there and the scrape endpoint adds them up (prometheus_client's
multiprocess mode). `make run` and the container images set it.
"""

import os
import re
from collections.abc import Iterable
from pathlib import Path

import psutil
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
CONTENT_TYPE = CONTENT_TYPE_LATEST
_PID_FILE = re.compile(r"_(\d+)\.db$")

# Latency buckets (seconds) from a 1 ms small-model answer to a 60 s deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def dead_processes_forget(path: str) -> None:
    """Drop the live-gauge files of processes that died without a clean exit (a SIGKILLed
    child), so "requests in flight" and "loaded version" do not count ghosts."""
    for file in Path(path).glob("gauge_live*.db"):
        match = _PID_FILE.search(file.name)
        if match and not psutil.pid_exists(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), path)


def registry_for_scrape() -> CollectorRegistry:
    if not MULTIPROC_DIR:
        return REGISTRY
    dead_processes_forget(MULTIPROC_DIR)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    return registry


class OneShot(Collector):
    """Samples computed for this scrape only (queue depths read from Redis, ...)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def metrics_text(*extra: Collector) -> bytes:
    """The exposition text of this process (or service, in multiprocess mode) plus `extra`."""
    body = generate_latest(registry_for_scrape())
    if extra:
        registry = CollectorRegistry()
        for collector in extra:
            registry.register(collector)
        body += generate_latest(registry)
    return body
