"""Priority on the broker: which way to let high-priority messages overtake a backlog.

    python -m bench.priority_broker [--messages N]

Three ways, each on a real redis-server, one consumer (prefetch 1, ack after the work, as the
workers run):
- `kombu-priority`: Celery's Redis priority support as kombu ships it: one list per priority step
  of the queue, one BRPOP over them in step order.
- `queue-per-level`: a queue per level (`q.high`, `q.normal`), one consumer on both: kombu's BRPOP
  over the two, whose order it rotates after each message (round robin).
- `reliable-levels`: the platform's (inference_project/reliable_queue.py): one list per level, a
  Lua script that moves from the highest non-empty level into the consumer's own list, a doorbell
  to block on. The only one without the kill window (bench/delivery.py, tests/integration/
  test_kill_window.py): the other two pop with BRPOP.

Measured for each:
- overtaking: with 200 normal messages queued, a high one is published and the consumer pops
  until it comes; how many normal ones came first (mean over the trials).
- share under a saturated high level: 200 of each queued, the first 100 pops; how many were
  normal (the minimum share a lower level keeps).
- cost: N normal messages published and consumed one by one; wall µs per message, and CPU µs per
  message of this process (publisher + consumer) and of redis-server.

Prints a table and writes bench/results/priority_broker.json.
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from bench.harness import free_port
from inference_common.priority import HIGH, MESSAGE_PRIORITY, NORMAL, PRIORITY_STEPS
from inference_project import reliable_queue

RESULTS = Path(__file__).parent / "results"
QUEUE = "pb"
BACKLOG = 200
TRIALS = 50


class _Mode:
    """How one way publishes a level and which queues its consumer reads."""

    def __init__(self, name: str, transport: type[kombu_redis.Transport], options: dict[str, Any]) -> None:
        self.name = name
        self.transport = transport
        self.options = options

    def queues(self) -> list[str]:
        return [QUEUE]

    def route(self, level: str) -> tuple[str, int]:
        """(queue, message priority) for a message of `level`."""
        return QUEUE, MESSAGE_PRIORITY[level]


class _KombuPriority(_Mode):
    def route(self, level: str) -> tuple[str, int]:
        return QUEUE, {HIGH: 0, NORMAL: 3}[level]  # kombu's Redis order: lower first


class _QueuePerLevel(_Mode):
    def queues(self) -> list[str]:
        return [f"{QUEUE}.{HIGH}", f"{QUEUE}.{NORMAL}"]

    def route(self, level: str) -> tuple[str, int]:
        return f"{QUEUE}.{level}", 0


MODES: list[_Mode] = [
    _KombuPriority("kombu-priority", kombu_redis.Transport, {"priority_steps": [0, 3, 6]}),
    _QueuePerLevel("queue-per-level", kombu_redis.Transport, {"priority_steps": [0]}),
    _Mode(
        "reliable-levels",
        reliable_queue.Transport,
        {"priority_steps": PRIORITY_STEPS, "priority_max_skips": 10},
    ),
]


@contextmanager
def _redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required (make test-deps installs it)"
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


class _Bench:
    def __init__(self, url: str, mode: _Mode) -> None:
        self.mode = mode
        self.conn = Connection(url, transport=mode.transport, transport_options=mode.options)
        channel = self.conn.channel()
        exchanges = {q: Exchange(q, type="direct") for q in mode.queues()}
        for q, exchange in exchanges.items():
            Queue(q, exchange, routing_key=q)(channel).declare()
        self.producers = {q: Producer(channel, exchange=exchanges[q], routing_key=q) for q in mode.queues()}
        self.taken: list[str] = []

        def on_message(body: dict[str, Any], message: Any) -> None:
            self.taken.append(body["level"])
            message.ack()

        queues = [Queue(q, exchanges[q], routing_key=q) for q in mode.queues()]
        self.consumer = Consumer(self.conn.channel(), queues=queues, callbacks=[on_message], accept=["json"])
        self.consumer.qos(prefetch_count=1)
        self.consumer.consume()

    def publish(self, level: str) -> None:
        queue, priority = self.mode.route(level)
        self.producers[queue].publish({"level": level}, serializer="json", priority=priority)

    def pop(self) -> str:
        before = len(self.taken)
        while len(self.taken) == before:
            self.conn.drain_events(timeout=5)
        return self.taken[-1]

    def close(self) -> None:
        self.consumer.cancel()
        self.conn.release()


def _redis_cpu(url: str) -> float:
    info = redis.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _measured(url: str, mode: _Mode, messages: int) -> dict[str, Any]:
    redis.Redis.from_url(url).flushdb()
    bench = _Bench(url, mode)
    try:
        for _ in range(BACKLOG):
            bench.publish(NORMAL)
        overtaken_by = []
        for _ in range(TRIALS):
            bench.publish(HIGH)
            bench.publish(NORMAL)  # keeps the backlog at BACKLOG
            before = 0
            while bench.pop() != HIGH:
                before += 1
            overtaken_by.append(before)
        redis.Redis.from_url(url).flushdb()
        bench.close()
        bench = _Bench(url, mode)
        for _ in range(BACKLOG):
            bench.publish(HIGH)
            bench.publish(NORMAL)
        normal_share = sum(bench.pop() == NORMAL for _ in range(100))
        redis.Redis.from_url(url).flushdb()
        bench.close()
        bench = _Bench(url, mode)
        wall, cpu, server = time.perf_counter(), time.process_time(), _redis_cpu(url)
        for _ in range(messages):
            bench.publish(NORMAL)
            bench.pop()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        server = _redis_cpu(url) - server
    finally:
        bench.close()
    return {
        "mode": mode.name,
        "normal_before_high_mean": round(sum(overtaken_by) / len(overtaken_by), 2),
        "normal_before_high_max": max(overtaken_by),
        "normal_share_of_100_pops_under_saturated_high": normal_share,
        "wall_us_per_message": round(wall / messages * 1e6, 1),
        "client_cpu_us_per_message": round(cpu / messages * 1e6, 1),
        "redis_cpu_us_per_message": round(server / messages * 1e6, 1),
    }


def run(messages: int, on_row: Callable[[dict[str, Any]], None] = print) -> list[dict[str, Any]]:
    rows = []
    with _redis_server() as url:
        for mode in MODES:
            row = _measured(url, mode, messages)
            on_row(row)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    rows = run(args.messages)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "priority_broker.json").write_text(json.dumps(rows, indent=2))
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


if __name__ == "__main__":
    main()
