"""Celery's Redis broker transport, without a new Redis client for every command.

kombu's Redis channel builds a fresh `redis.Redis` for each publish, acknowledgement and event
it sends (`Channel.conn_or_acquire`), and redis-py's constructor fills a table of ~170 response
callbacks each time: 150-650 µs of CPU per call measured here, once per batch in the API and
five times per batch in a worker's Celery parent (reserve, ack, three task-event publishes). The
connection pool behind those clients was already shared; this channel keeps one client per
pool. A `redis.Redis` over a pool is safe to share between threads: each command checks a
connection out of the pool and returns it.

Only those short-lived clients are kept. The channel's own `client` (BRPOP) and `subclient`
(fanout) pin a connection of their own and are built once by kombu already.

It pops with the reliable-queue move of inference_project/reliable_queue.py, which closes the
window in which a consumer killed right after kombu's BRPOP lost the message, and serves
priority levels highest first.

Selected with `CELERY_BROKER_TRANSPORT` (settings/base.py); the URL stays `redis://...`. With
Redis Sentinel (`REDIS_SENTINELS`) the settings pick `SentinelTransport`: kombu's SentinelChannel
(which asks the Sentinels for the master on every new connection, so a failover is followed by
reconnecting) with the same client reuse and reliable pop; the URL is then `sentinel://...;...`.
"""

from typing import Any

from kombu.transport import redis as kombu_redis

from inference_project.reliable_queue import ReliableChannel


# kombu-stubs (celery-types) declare no `_create_client`, kombu's private hook: hence the ignores.
class Channel(ReliableChannel):
    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous or self.pool.connection_kwargs.get("credential_provider") is not None:
            # A pinned connection (BRPOP) or credentials that may rotate: kombu's own way.
            return super()._create_client(asynchronous)  # type: ignore[misc]
        client = self.__dict__.get("_shared_client")
        if client is None or client.connection_pool is not self.pool:
            client = self.__dict__["_shared_client"] = super()._create_client()  # type: ignore[misc]
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel, Channel):
    """kombu's Sentinel pools (`_get_pool`) under our client reuse and reliable pop."""

    from_transport_options = (*kombu_redis.SentinelChannel.from_transport_options, "priority_max_skips")


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
