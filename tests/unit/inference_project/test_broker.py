"""The broker transport (inference_project/broker.py) against a real redis-server: one client per
pool for kombu's short-lived commands, the BRPOP client kept apart, messages delivered as before."""

import redis
from kombu import Connection

from inference_project import broker
from inference_project.celery_app import app

TRANSPORT = "inference_project.broker:Transport"


def test_the_platform_uses_this_transport() -> None:
    assert type(app.connection_for_write().transport).__module__ == "inference_project.broker"


def test_short_lived_commands_share_one_client_per_pool(redis_server: str) -> None:
    with Connection(redis_server, transport=TRANSPORT) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second and first.connection_pool is channel.pool
        # The BRPOP client pins a connection of its own: never the shared one.
        assert channel.client is not first
        # What kombu does when the connection is lost.
        channel._disconnect_pools()  # type: ignore[attr-defined]  # kombu-private: not in kombu-stubs
        with channel.conn_or_acquire() as third:
            assert third is not first and third.connection_pool is channel.pool
            assert third.ping()


def test_messages_are_published_acked_and_consumed(redis_server: str) -> None:
    with Connection(redis_server, transport=TRANSPORT) as connection:
        queue = connection.SimpleQueue("test-broker")
        for number in range(3):
            queue.put({"n": number})
        received = []
        for _ in range(3):
            message = queue.get(timeout=2)
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    assert received == [0, 1, 2]
    client = redis.Redis.from_url(redis_server)
    assert client.llen("test-broker") == 0 and client.hlen("unacked") == 0
