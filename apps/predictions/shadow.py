"""Shadow rollouts on the API side: a copy of a live request, once answered, goes to the
candidate; its answer goes to nobody and is compared with live's.

    infer → live answer → shadow_mirror(route, response, inputs)      (returns at once)
      └─ its own task: shed? → the candidate's batch → compare → the candidate's figures in Redis

The copy starts after the live answer exists, in a task of its own with a fresh context, so it
never delays, changes or fails what the client gets. It is shed first (never queued behind live
work) when this process already has `INFERENCE_SHADOW_MAX_INFLIGHT` copies out or the model's
queue holds `INFERENCE_SHADOW_MAX_QUEUE_DEPTH` batches. The worker records the candidate's own
figures (errors, latency, confidence) as for any batch; here the pair's comparison is added to
the candidate's bucket (inference_common/version_stats.py `pair_compare`), which the rollout's
analysis reads as agreement.
"""

import asyncio
import contextvars
import logging

import numpy as np
from django.conf import settings
from prometheus_client import Counter

from apps.predictions.admission import admission_gate_get
from apps.predictions.errors import ApiError
from apps.predictions.results import result_waiter_get
from apps.predictions.selectors import Route, ServedModel
from apps.predictions.services import prediction_shadow_run
from apps.predictions.types import InferenceResponse
from inference_common.version_stats import pair_compare, version_stats_add

logger = logging.getLogger(__name__)

SHADOW_REQUESTS = Counter(
    "inference_shadow_requests_total",
    "Live requests copied to a shadow candidate, by model, candidate version and outcome "
    "(compared, shed, failed, timeout).",
    ["model", "version", "outcome"],
)
SHADOW_ROWS = Counter(
    "inference_shadow_rows_total",
    "Mirrored class-score rows compared with live's, by model, candidate version and whether the "
    'top-1 class agreed (agreement: rate of agree="true" over both).',
    ["model", "version", "agree"],
)
OUTCOMES = ("compared", "shed", "failed", "timeout")

_tasks: set[asyncio.Task[None]] = set()  # referenced until done (asyncio's advice)


def shadow_mirror(*, route: Route, response: InferenceResponse, inputs: dict[str, np.ndarray]) -> None:
    """Copy an answered request to the route's shadow (for `mirror_percent` of the requests the
    live version answered); returns at once."""
    shadow = route.mirror(response.served)
    if shadow is None:
        return
    if len(_tasks) >= settings.INFERENCE_SHADOW_MAX_INFLIGHT:
        SHADOW_REQUESTS.labels(shadow.name, str(shadow.version), "shed").inc()
        return
    task = asyncio.get_running_loop().create_task(
        _shadow_run(shadow, response, inputs), context=contextvars.Context()
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _shadow_run(shadow: ServedModel, live: InferenceResponse, inputs: dict[str, np.ndarray]) -> None:
    labels = (shadow.name, str(shadow.version))
    try:
        _, depth = await admission_gate_get().counts(owner=None, queue=shadow.queue)
        if depth >= settings.INFERENCE_SHADOW_MAX_QUEUE_DEPTH:
            SHADOW_REQUESTS.labels(*labels, "shed").inc()
            return
        answer = await prediction_shadow_run(
            served=shadow, inputs=inputs, timeout_s=settings.INFERENCE_SHADOW_TIMEOUT_S
        )
        fields = pair_compare(live.outputs, answer.outputs)
        pipe = result_waiter_get().redis.pipeline(transaction=False)
        version_stats_add(
            pipe,
            environment=settings.INFERENCE_ENVIRONMENT,
            model=shadow.name,
            version=shadow.version,
            fields=fields,
        )
        await pipe.execute()
    except TimeoutError:
        SHADOW_REQUESTS.labels(*labels, "timeout").inc()
        return
    except ApiError as exc:  # the candidate failed (its worker counts it in its figures)
        SHADOW_REQUESTS.labels(*labels, "failed").inc()
        logger.debug("shadow copy to %s v%s failed: %s", *labels, exc.message)
        return
    except Exception:  # Redis out, anything: the client's answer is long gone; never raise
        SHADOW_REQUESTS.labels(*labels, "failed").inc()
        logger.warning("shadow copy to %s v%s failed", *labels, exc_info=True)
        return
    SHADOW_REQUESTS.labels(*labels, "compared").inc()
    class_rows = int(fields["pair_class_rows"])
    if class_rows:
        agree = int(fields["pair_agree_rows"])
        SHADOW_ROWS.labels(*labels, "true").inc(agree)
        SHADOW_ROWS.labels(*labels, "false").inc(class_rows - agree)
