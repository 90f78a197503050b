"""Delivery under consumer kills: is a message ever lost, how often is it run twice, at what CPU.

    python -m bench.delivery [--messages N] [--kill-after-pop P] [--kill-before-ack P]

Publishes N messages to one queue on a real redis-server, then runs two consumer processes that
are SIGKILLed on purpose (and restarted):
- right after a pop, before kombu records the message as unacknowledged (the kill window:
  `Transport._deliver` runs between the two, so a subclass that dies there hits it exactly);
- after the work, before the acknowledgement (redelivered by the visibility sweep: a duplicate).
Each consumer counts the messages it handled in a Redis hash, so lost and duplicated messages are
counted from Redis, not from logs. The same trial runs for each transport: kombu's own Redis
transport, and inference_project.reliable_queue (BLMOVE into a per-consumer list). A no-fault
trial gives the consumers' CPU per message.

Prints a table and writes bench/results/delivery.json; the test of the kill window
(tests/integration/test_kill_window.py) calls `trial` with the reliable transport.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from inference_common.priority import MESSAGE_PRIORITY, PRIORITY_STEPS
from inference_project import reliable_queue

TRANSPORTS: dict[str, type[kombu_redis.Transport]] = {
    "kombu": kombu_redis.Transport,
    "reliable": reliable_queue.Transport,
    # The same with the platform's priority levels: messages at every level, the Lua-script move.
    "reliable-levels": reliable_queue.Transport,
}
try:  # Python >= 3.13 only: run in a virtualenv of its own (docs/architecture.md)
    from celery_redis_plus.transport import Transport as RedisPlusTransport  # type: ignore[import-not-found]

    TRANSPORTS["celery-redis-plus"] = RedisPlusTransport
except ImportError:
    pass
# celery-redis-plus restores unacked messages on a 60 s check (DEFAULT_REQUEUE_CHECK_INTERVAL).
STALL_S = {"celery-redis-plus": 75.0}
QUEUE = "delivery-trial"
PROCESSED = "delivery-trial.processed"  # hash: message id -> times handled
STOP = "delivery-trial.stop"  # set by the trial: consumers exit cleanly
CPU = "delivery-trial.cpu_s"  # consumers' CPU seconds from their first message to their exit
VISIBILITY_S = 2
OPTIONS = {
    "visibility_timeout": VISIBILITY_S,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 5,
    "priority_steps": [0],
}
LEVELED = {"reliable-levels"}


def _options(transport: str) -> dict[str, Any]:
    return OPTIONS | {"priority_steps": PRIORITY_STEPS} if transport in LEVELED else OPTIONS


@dataclass
class Trial:
    transport: str
    messages: int
    seconds: float
    kills_after_pop: int
    kills_before_ack: int
    lost: int
    duplicated: int
    consumer_cpu_us_per_message: float


def _faulty(transport: type[kombu_redis.Transport], after_pop: float) -> type[Any]:
    class Faulty(transport):  # type: ignore[valid-type,misc]
        def _deliver(self, message: Any, queue: str) -> None:
            if random.random() < after_pop:
                os.kill(os.getpid(), signal.SIGKILL)
            super()._deliver(message, queue)

    return Faulty


def consume(url: str, transport: str, after_pop: float, before_ack: float) -> None:
    """One consumer until the queue has stayed empty for a few seconds (or it is killed)."""
    counter = redis.Redis.from_url(url)
    cls = _faulty(TRANSPORTS[transport], after_pop)

    cpu_at_first: list[float] = []

    def on_message(body: dict[str, Any], message: Any) -> None:
        if not cpu_at_first:
            cpu_at_first.append(time.process_time())
        counter.hincrby(PROCESSED, str(body["id"]), 1)
        if random.random() < before_ack:
            os.kill(os.getpid(), signal.SIGKILL)
        message.ack()

    with Connection(url, transport=cls, transport_options=_options(transport)) as conn:
        consumer = Consumer(conn.channel(), queues=[Queue(QUEUE)], callbacks=[on_message], accept=["json"])
        consumer.qos(prefetch_count=1)
        with consumer:
            while not counter.exists(STOP):
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
    if cpu_at_first:  # the CPU of consuming, without the start-up: only clean exits report it
        counter.incrbyfloat(CPU, time.process_time() - cpu_at_first[0])


def _publish(url: str, transport: str, messages: int) -> None:
    with Connection(url, transport=TRANSPORTS[transport], transport_options=_options(transport)) as conn:
        producer = Producer(conn.channel(), exchange=Exchange(QUEUE, type="direct"), routing_key=QUEUE)
        producer.declare()
        Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)(conn.channel()).declare()
        levels = list(MESSAGE_PRIORITY.values()) if transport in LEVELED else [0]
        for index in range(messages):
            producer.publish({"id": index}, serializer="json", priority=levels[index % len(levels)])


def trial(
    url: str,
    transport: str,
    *,
    messages: int,
    after_pop: float,
    before_ack: float,
    consumers: int = 2,
    stall_s: float = VISIBILITY_S + 10,
) -> Trial:
    client = redis.Redis.from_url(url)
    client.flushdb()
    _publish(url, transport, messages)
    command = [
        sys.executable,
        "-m",
        "bench.delivery",
        "consume",
        url,
        transport,
        str(after_pop),
        str(before_ack),
    ]
    started = last_progress = time.monotonic()
    procs = [subprocess.Popen(command) for _ in range(consumers)]
    kills, handled = 0, 0
    # Done when every message was handled, or nothing moved for `stall_s` (restores included).
    while handled < messages and time.monotonic() - last_progress < stall_s:
        time.sleep(0.05)
        if (now_handled := client.hlen(PROCESSED)) != handled:
            handled, last_progress = now_handled, time.monotonic()
        for proc in list(procs):
            if proc.poll() is not None:
                procs.remove(proc)
                kills += proc.returncode == -signal.SIGKILL
                procs.append(subprocess.Popen(command))
    client.set(STOP, 1)
    for proc in procs:
        proc.wait(timeout=30)
    elapsed = time.monotonic() - started
    counts = [int(value) for value in client.hvals(PROCESSED)]
    cpu = float(client.get(CPU) or 0)
    # Kills of each kind are not told apart by the exit code; split them by the probabilities.
    share = after_pop / (after_pop + before_ack) if after_pop + before_ack else 0.0
    return Trial(
        transport=transport,
        messages=messages,
        seconds=round(elapsed, 2),
        kills_after_pop=round(kills * share),
        kills_before_ack=kills - round(kills * share),
        lost=messages - len(counts),
        duplicated=sum(count - 1 for count in counts),
        consumer_cpu_us_per_message=round(cpu / messages * 1e6, 1),
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "consume":
        url, transport, after_pop, before_ack = sys.argv[2:6]
        consume(url, transport, float(after_pop), float(before_ack))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default=os.environ.get("DELIVERY_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--kill-after-pop", type=float, default=0.01)
    parser.add_argument("--kill-before-ack", type=float, default=0.005)
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    args = parser.parse_args()
    results = []
    for transport in args.transports.split(","):
        faults = trial(
            args.url,
            transport,
            messages=args.messages,
            after_pop=args.kill_after_pop,
            before_ack=args.kill_before_ack,
        )
        clean = trial(args.url, transport, messages=args.messages, after_pop=0, before_ack=0)
        faults.consumer_cpu_us_per_message = clean.consumer_cpu_us_per_message
        results.append(faults)
    header = "| transport | messages | kills after pop | kills before ack | lost | duplicated | consumer CPU µs/message (no faults) |"
    print(header + "\n|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.transport} | {r.messages} | {r.kills_after_pop} | {r.kills_before_ack} | {r.lost} | "
            f"{r.duplicated} | {r.consumer_cpu_us_per_message} |"
        )
    out = Path(__file__).parent / "results" / "delivery.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
