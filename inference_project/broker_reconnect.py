"""A worker reconnects to the broker soon after losing it, not on kombu's fixed backoff.

Celery's consumer reconnects with kombu's `Connection.ensure_connection`, whose waits between
rounds of attempts are fixed at 2 s, then 4 s, 6 s... (`interval_start=2, interval_step=2`; Celery
passes no intervals). A Redis primary failed over by Sentinel is back in about 2 s, and the
workers' first round then comes too early, so they took nothing from the queue until the round
after the 4 s wait: sync requests were served again 7 s after the primary was killed (the
multi-host harness's fault 3), 5 s after the promotion. Here the waits start at
RECONNECT_START_S and grow by as much up to RECONNECT_MAX_S.

Selected with `Celery(amqp=...)`: its AMQP class names the Connection class that every broker
connection of the app is made with. Publishing keeps its own short retry policy
(CELERY_TASK_PUBLISH_RETRY_POLICY).
"""

from typing import Any

from celery.app.amqp import AMQP
from kombu import Connection

RECONNECT_START_S = 0.5
RECONNECT_MAX_S = 5.0


class ReconnectingConnection(Connection):
    def _ensure_connection(  # type: ignore[override]
        self,
        errback: Any = None,
        max_retries: int | None = None,
        interval_start: float = RECONNECT_START_S,
        interval_step: float = RECONNECT_START_S,
        interval_max: float = RECONNECT_MAX_S,
        **kwargs: Any,
    ) -> Any:
        # kombu-stubs type the waits as int; kombu's retry_over_time takes float seconds.
        return super()._ensure_connection(
            errback,
            max_retries,
            interval_start,  # type: ignore[arg-type]
            interval_step,  # type: ignore[arg-type]
            interval_max,  # type: ignore[arg-type]
            **kwargs,
        )


class ReconnectingAMQP(AMQP):
    Connection = ReconnectingConnection
