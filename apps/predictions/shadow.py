"""Shadow rollouts on the API side: a copy of a live request, once answered, goes to the
candidate; its answer goes to nobody and is compared with live's.

    infer → live answer → shadow_mirror(route, response, inputs)      (returns at once)
      └─ its own task: shed? → the candidate's batch → compare → the candidate's figures in Redis
    enqueue → 202 → shadow_mirror_job(route, served, job_id, inputs)  (returns at once)
      └─ its own task: shed? → live's answer, once stored → the same as above

An async job is copied once the live version has answered it, not when it is accepted, so the
copy never competes with the job itself for a worker; a live job that fails or is not answered
within INFERENCE_SHADOW_TIMEOUT_S is not copied (only answered requests are mirrored).

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
from collections.abc import Awaitable, Callable

import numpy as np
from django.conf import settings
from prometheus_client import Counter

from apps.predictions.admission import admission_gate_get
from apps.predictions.errors import ApiError
from apps.predictions.results import result_waiter_get
from apps.predictions.selectors import Route, ServedModel
from apps.predictions.services import prediction_job_wait, prediction_shadow_run
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

# Each copy would cost this process a Redis round trip or two of its own; the queue's depth is
# read at most every DEPTH_READ_S per queue, and the pairs' figures are summed here and written
# every PAIRS_FLUSH_S, one pipeline for all.
DEPTH_READ_S = 0.1
PAIRS_FLUSH_S = 0.25
_depths: dict[str, tuple[float, int]] = {}  # queue -> (loop time read, depth)
_pairs: dict[tuple[str, int], dict[str, float]] = {}  # (model, candidate version) -> sums
_pairs_flusher: asyncio.Task[None] | None = None


def shadow_mirror(*, route: Route, response: InferenceResponse, inputs: dict[str, np.ndarray]) -> None:
    """Copy an answered request to the route's shadow (for `mirror_percent` of the requests the
    live version answered); returns at once."""
    shadow = route.mirror(response.served)
    if shadow is not None:
        _start(shadow, lambda: _answered(response), inputs)


def shadow_mirror_job(
    *, route: Route, served: ServedModel, job_id: str, inputs: dict[str, np.ndarray]
) -> None:
    """Copy an accepted async job to the route's shadow once the live version answered it (for
    `mirror_percent` of the jobs the live version takes); returns at once."""
    shadow = route.mirror(served)
    if shadow is not None:
        timeout_s = settings.INFERENCE_SHADOW_TIMEOUT_S
        _start(shadow, lambda: prediction_job_wait(served=served, job_id=job_id, timeout_s=timeout_s), inputs)


async def _answered(response: InferenceResponse) -> InferenceResponse:
    return response


def _start(
    shadow: ServedModel, live: Callable[[], Awaitable[InferenceResponse]], inputs: dict[str, np.ndarray]
) -> None:
    if len(_tasks) >= settings.INFERENCE_SHADOW_MAX_INFLIGHT:
        SHADOW_REQUESTS.labels(shadow.name, str(shadow.version), "shed").inc()
        return
    task = asyncio.get_running_loop().create_task(
        _shadow_run(shadow, live, inputs), context=contextvars.Context()
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _shadow_run(
    shadow: ServedModel,
    live_answer: Callable[[], Awaitable[InferenceResponse]],
    inputs: dict[str, np.ndarray],
) -> None:
    labels = (shadow.name, str(shadow.version))
    try:
        live = await live_answer()
    except (TimeoutError, ApiError):  # live did not answer: nothing to compare with
        return
    except Exception:
        logger.warning("waiting for the live answer of a shadow copy failed", exc_info=True)
        return
    try:
        if await _queue_depth(shadow.queue) >= settings.INFERENCE_SHADOW_MAX_QUEUE_DEPTH:
            SHADOW_REQUESTS.labels(*labels, "shed").inc()
            return
        answer = await prediction_shadow_run(
            served=shadow, inputs=inputs, timeout_s=settings.INFERENCE_SHADOW_TIMEOUT_S
        )
        fields = pair_compare(live.outputs, answer.outputs)
        _pairs_add(shadow, fields)
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


async def _queue_depth(queue: str) -> int:
    now = asyncio.get_running_loop().time()
    read = _depths.get(queue)
    if read is None or now - read[0] >= DEPTH_READ_S:
        _, depth = await admission_gate_get().counts(owner=None, queue=queue)
        read = _depths[queue] = (now, depth)
    return read[1]


def _pairs_add(shadow: ServedModel, fields: dict[str, float]) -> None:
    global _pairs_flusher
    sums = _pairs.setdefault((shadow.name, shadow.version), dict.fromkeys(fields, 0.0))
    for name, value in fields.items():
        sums[name] = sums.get(name, 0.0) + value
    if _pairs_flusher is None or _pairs_flusher.done():
        _pairs_flusher = asyncio.get_running_loop().create_task(_pairs_flush(), context=contextvars.Context())


async def _pairs_flush() -> None:
    """Into each candidate's current bucket (inference_common/version_stats.py), which the
    rollout's analysis reads as agreement."""
    await asyncio.sleep(PAIRS_FLUSH_S)
    pending = dict(_pairs)
    _pairs.clear()
    pipe = result_waiter_get().redis.pipeline(transaction=False)
    for (model, version), fields in pending.items():
        version_stats_add(
            pipe, environment=settings.INFERENCE_ENVIRONMENT, model=model, version=version, fields=fields
        )
    try:
        await pipe.execute()
    except Exception:  # Redis out: these pairs are not counted; the next ones will be
        logger.warning("the figures of %d shadow pairs were not recorded", len(pending), exc_info=True)
