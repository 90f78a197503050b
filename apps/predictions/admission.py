"""Admission control: refuse work at once, before enqueueing, when a client or a queue is over
its limit. One Redis round trip: the key's counter for this second and the queue's length."""

import time

from django.conf import settings

from apps.predictions.errors import ApiError
from apps.predictions.results import result_waiter_get

RETRY_AFTER_S = "1"


async def admission_check(*, owner: str, rate: int, queue: str) -> None:
    """429 past `rate` requests per second for `owner` (0: unlimited); 503 when `queue` is full."""
    window = f"inference:throttle:{owner}:{int(time.time())}"
    pipe = result_waiter_get().redis.pipeline(transaction=False)
    pipe.incr(window)
    pipe.expire(window, 2)
    pipe.llen(queue)
    count, _, depth = await pipe.execute()
    if rate and count > rate:
        raise ApiError(
            429,
            "throttled",
            f"more than {rate} requests per second for this API key",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    if depth >= settings.INFERENCE_MAX_QUEUE_DEPTH:
        raise ApiError(
            503,
            "overloaded",
            f"{depth} requests already wait in {queue}; retry shortly",
            headers={"Retry-After": RETRY_AFTER_S},
        )
