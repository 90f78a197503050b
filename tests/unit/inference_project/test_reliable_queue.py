"""The reliable-queue pop (inference_project/reliable_queue.py) against a real redis-server: a
message is always in the queue, a processing list or kombu's unacked hash; what a dead consumer or
a lost reply leaves in a processing list goes back to the head of its queue."""

import threading
import time
from typing import Any

import redis
from kombu import Connection

from inference_common.priority import (
    HIGH,
    LOW,
    MESSAGE_PRIORITY,
    NORMAL,
    PRIORITY_STEPS,
    doorbell_key,
    queue_lists,
)
from inference_project import reliable_queue

OPTIONS = {"priority_steps": [0], "visibility_timeout": 30}


def _connection(url: str, options: dict[str, Any] = OPTIONS) -> Connection:
    return Connection(url, transport=reliable_queue.Transport, transport_options=options)


def _reliable(channel: object) -> reliable_queue.ReliableChannel:
    assert isinstance(channel, reliable_queue.ReliableChannel)
    return channel


def test_a_pop_moves_the_message_into_the_consumers_list_then_into_unacked(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    seen: list[tuple[int, int, int]] = []

    class Observed(reliable_queue.Transport):
        def _deliver(self, message: Any, queue: str | None) -> None:
            # Between the pop and the bookkeeping: only a processing list holds it.
            processing = sum(client.llen(key) for key in client.keys("reliable.processing.*"))
            seen.append((client.llen("rq-pop"), processing, client.hlen("unacked")))
            super()._deliver(message, queue)

    with Connection(redis_server, transport=Observed, transport_options=OPTIONS) as connection:
        queue = connection.SimpleQueue("rq-pop")
        queue.put({"n": 1})
        channel = _reliable(queue.consumer.channel)
        message = queue.get(timeout=2)
        assert seen == [(0, 1, 0)]
        assert client.llen(channel.processing_key) == 0 and client.hlen("unacked") == 1
        assert client.hget(reliable_queue.CONSUMERS_KEY, channel.consumer_id) == b"rq-pop"
        assert client.ttl(channel.heartbeat_key) > 0
        message.ack()
        assert client.hlen("unacked") == 0
        queue.close()
    # A clean close leaves no registration behind.
    assert client.hlen(reliable_queue.CONSUMERS_KEY) == 0


def test_a_dead_consumers_list_goes_back_to_the_head_of_its_queue(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    # What a consumer killed right after its pop leaves: an entry, its registration, no heartbeat.
    client.hset(reliable_queue.CONSUMERS_KEY, "dead.1", "rq-dead")
    client.lpush("reliable.processing.dead.1", b"lost-in-the-window")
    client.lpush("rq-dead", b"newer")
    # A live consumer elsewhere: its list is left alone.
    client.hset(reliable_queue.CONSUMERS_KEY, "alive.2", "rq-dead")
    client.set("reliable.alive.alive.2", 1, ex=30)
    client.lpush("reliable.processing.alive.2", b"being-recorded")
    with _connection(redis_server) as connection:
        channel = _reliable(connection.default_channel)
        channel.reliable_sweep()
    # BRPOP/BLMOVE take from the right: the restored message is next.
    assert client.lrange("rq-dead", 0, -1) == [b"newer", b"lost-in-the-window"]
    assert client.llen("reliable.processing.dead.1") == 0
    assert client.hexists(reliable_queue.CONSUMERS_KEY, "dead.1") is False
    assert client.lrange("reliable.processing.alive.2", 0, -1) == [b"being-recorded"]


def test_an_entry_left_in_its_own_list_on_two_sweeps_goes_back(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    with _connection(redis_server) as connection:
        queue = connection.SimpleQueue("rq-stale")
        queue.put({"n": 1})
        message = queue.get(timeout=2)
        message.ack()
        channel = _reliable(queue.consumer.channel)
        # A reply lost on a broken connection: the entry stays in this consumer's own list.
        client.lpush(channel.processing_key, b"reply-lost")
        channel.reliable_sweep()
        assert client.llen(channel.processing_key) == 1  # could still be a pop in flight
        channel.reliable_sweep()
        assert client.llen(channel.processing_key) == 0
        assert client.lrange("rq-stale", 0, -1) == [b"reply-lost"]
        queue.close()


def test_other_channels_keep_kombus_brpop(redis_server: str) -> None:
    with Connection(redis_server, transport=reliable_queue.Transport) as connection:
        queue = connection.SimpleQueue("rq-priorities")  # default priority steps: four lists
        queue.put({"n": 2})
        message = queue.get(timeout=2)
        assert message.payload == {"n": 2}
        assert _reliable(queue.consumer.channel)._reliable_source() is None
        message.ack()
        queue.close()


LEVELED = {"priority_steps": PRIORITY_STEPS, "visibility_timeout": 30}


class _SlowTimeout(reliable_queue.Transport):
    """A blocked consumer that only the doorbell can wake within the test's time."""

    brpop_timeout = 10


def _drain(queue: Any, count: int) -> list[str]:
    taken = []
    for _ in range(count):
        message = queue.get(timeout=2)
        taken.append(message.payload)
        message.ack()
    return taken


def test_levels_are_served_highest_first_and_in_order_within_a_level(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    options = LEVELED | {"priority_max_skips": 0}
    with _connection(redis_server, options) as connection:
        queue = connection.SimpleQueue("rq-levels")
        for n in range(3):
            queue.put(f"low{n}", priority=MESSAGE_PRIORITY[LOW])
        for n in range(4):
            queue.put(f"normal{n}", priority=MESSAGE_PRIORITY[NORMAL])
        for n in range(2):
            queue.put(f"high{n}", priority=MESSAGE_PRIORITY[HIGH])
        assert [client.llen(name) for name in queue_lists("rq-levels")] == [2, 4, 3]
        assert client.llen("rq-levels") == 4  # normal keeps the queue's own name
        taken = _drain(queue, 9)
        assert taken == ["high0", "high1"] + [f"normal{n}" for n in range(4)] + [f"low{n}" for n in range(3)]
        # Every move went through the consumer's list into unacked, and nothing is left behind.
        channel = _reliable(queue.consumer.channel)
        assert client.llen(channel.processing_key) == 0 and client.hlen("unacked") == 0
        assert client.llen(doorbell_key("rq-levels")) == 0
        queue.close()


def test_lower_levels_keep_their_share_while_a_higher_one_is_saturated(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    max_skips = 4
    options = LEVELED | {"priority_max_skips": max_skips}
    order = {HIGH: 0, NORMAL: 1, LOW: 2}
    with _connection(redis_server, options) as connection:
        queue = connection.SimpleQueue("rq-share")
        for level in (HIGH, NORMAL, LOW):
            for n in range(30):
                queue.put(f"{level}-{n}", priority=MESSAGE_PRIORITY[level])
        names = _drain(queue, 30)
        taken = [name.split("-")[0] for name in names]
        # Every level waits throughout: neither lower one is passed over more than 4 pops in a row.
        for level in (NORMAL, LOW):
            passed_over = 0
            for name in taken:
                passed_over = 0 if name == level else passed_over + (order[name] < order[level])
                assert passed_over <= max_skips, taken
        assert taken.count(HIGH) >= 20 and taken.count(NORMAL) >= 4 and taken.count(LOW) >= 4
        # Within a level, still first in, first out; the doorbell never holds more tokens than
        # messages wait.
        for level in (HIGH, NORMAL, LOW):
            numbers = [int(name.split("-")[1]) for name in names if name.startswith(level)]
            assert numbers == list(range(len(numbers)))
        assert client.llen(doorbell_key("rq-share")) <= 60
        queue.close()


def test_a_level_that_is_not_starving_takes_no_turn_from_a_higher_one(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    with _connection(redis_server, LEVELED | {"priority_max_skips": 2}) as connection:
        queue = connection.SimpleQueue("rq-sparse")
        for n in range(40):
            queue.put(f"normal-{n}", priority=MESSAGE_PRIORITY[NORMAL])
        # A high request now and then, with normal ones served between: each is served next.
        for n in range(10):
            assert _drain(queue, 2) == [f"normal-{2 * n}", f"normal-{2 * n + 1}"]
            queue.put(f"high-{n}", priority=MESSAGE_PRIORITY[HIGH])
            assert _drain(queue, 1) == [f"high-{n}"]
        queue.close()


def test_a_consumer_blocked_on_empty_levels_wakes_at_a_publish(redis_server: str) -> None:
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    with Connection(redis_server, transport=_SlowTimeout, transport_options=LEVELED) as consumer_side:
        queue = consumer_side.SimpleQueue("rq-wake")
        got: list[tuple[str, float]] = []

        def consume() -> None:
            message = queue.get(timeout=8)
            got.append((message.payload, time.monotonic()))
            message.ack()

        thread = threading.Thread(target=consume)
        thread.start()
        time.sleep(0.5)  # the consumer found nothing and now blocks on the doorbell
        with _connection(redis_server, LEVELED) as producer:
            sent_at = time.monotonic()
            producer.SimpleQueue("rq-wake").put("wake", priority=MESSAGE_PRIORITY[HIGH])
        thread.join(timeout=10)
        assert got and got[0][0] == "wake"
        assert got[0][1] - sent_at < 1.0  # woken by the doorbell, not after its 10 s timeout
        assert client.llen(doorbell_key("rq-wake")) == 0
        queue.close()
