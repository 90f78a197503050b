"""The Redis result backend without Celery's per-task subscription on send.

Celery's Redis backend SUBSCRIBEs to a task's result channel whenever the process sends that
task (`on_task_call`), for `AsyncResult.get()` to read later. The API never calls `get()`: it
awaits results through its own pattern subscription (`apps.predictions.results`). Left in place,
every prediction would add a subscription that nobody reads or removes, so Redis would push every
result twice and buffer it for a connection that never drains.

`ProducerSentinelBackend` is the same over Celery's SentinelBackend (`REDIS_SENTINELS`): the
settings select it with a `sentinel://...;...` URL and `result_backend_transport_options`
(`master_name`, `sentinel_kwargs`).
"""

from typing import Any

from celery.backends.redis import RedisBackend, SentinelBackend


class ProducerRedisBackend(RedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


class ProducerSentinelBackend(SentinelBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None
