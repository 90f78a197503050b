"""The per-process model runtime of a worker child: finds, verifies, loads, swaps and runs versions.

One `ModelRuntime` lives in each worker child (created after the fork). It keeps loaded versions
in memory, marks them in Redis for readiness, and turns a task's request into outputs. A
subscriber thread hears about promotions and rollbacks: it loads the new version beside the old
one (traffic moves once the API sees the new version's readiness mark), then retires the old
one after a grace period; a batch already running on the old one finishes on it. A change that
does not retire the others (a rollout's candidate) only loads the version beside them.
Each batch's figures (requests, errors, latency, confidence) are added to the version's live
stats in Redis (inference_common/version_stats.py), which a rollout's analysis compares.
Plain Python: Celery only calls `runtime_get().run(request)` (or `batch_run`, workers/serving.py).
"""

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
from django.conf import settings
from django.db import close_old_connections

from apps.models_registry import selectors
from apps.models_registry.models import Artifact, Deployment, ModelVersion, RegistryEvent
from apps.models_registry.services.deployments import deployment_load_failure_handle, deployment_served_record
from apps.models_registry.services.events import registry_event_record
from apps.models_registry.services.trust import (
    files_signature_check,
    signature_refusal,
    signature_required,
    version_files_fetch,
    version_load_policy,
)
from apps.models_registry.storage import ChecksumMismatch, artifact_fetch_verified
from inference_common.deployments import DeploymentChange, deployments_channel
from inference_common.readiness import serving_mark, serving_unmark
from inference_common.results import Answer, answer_encode, failure_encode
from inference_common.safe_artifacts import ArtifactRefused
from inference_common.shm_tensors import ShmReader
from inference_common.signing import SIGNATURE_FILENAME
from inference_common.tensor_store import VOLATILE
from inference_common.version_stats import ERROR_CODES, scores_confidence, version_stats_record
from inference_common.wire import tensor_decode
from inference_project.errors import DATABASE_UNAVAILABLE
from inference_project.heap import heap_freeze, heap_thaw
from inference_project.redis_clients import redis_sync
from workers.metrics import (
    AUTOMATIC_ROLLBACKS,
    BATCH_REQUESTS,
    BATCH_SIZE,
    LOAD_SECONDS,
    LOADED,
    PREDICT,
    REDELIVERIES,
)
from workers.monitoring import DriftMonitor, SummaryPublisher
from workers.predictor import ModelFiles, Predictor
from workers.runtimes import predictor_for

logger = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """The requested version cannot be served by this worker; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def model_files_get(version: ModelVersion, *, environment: str) -> ModelFiles:
    """Local copies of a version's model and preprocessing files, checksums verified; where
    `environment` requires a signature, it is verified again over every file (a file replaced
    in storage since the gate is caught here) or the version is refused."""
    artifacts = {a.kind: a for a in version.artifacts.all()}
    # Where a signature is checked, every file is fetched (and hashed) once, for both uses.
    fetched = version_files_fetch(version=version) if signature_required(environment=environment) else None
    if fetched is not None:
        refusal = signature_refusal(
            check=files_signature_check(files=fetched, environment=environment), environment=environment
        )
        if refusal:
            raise ArtifactRefused(SIGNATURE_FILENAME, refusal)

    def fetch(kind: str) -> Any:
        artifact = artifacts.get(kind)
        if artifact is None:
            return None
        if fetched is not None:
            return fetched[artifact.filename]
        return artifact_fetch_verified(uri=artifact.uri, sha256=artifact.sha256, filename=artifact.filename)

    return ModelFiles(
        model=fetch(Artifact.Kind.MODEL),
        preprocessing=fetch(Artifact.Kind.PREPROCESSING),
        signature=version.signature,
        policy=version_load_policy(version=version),
    )


def predictor_build(*, model_name: str, version_number: int, worker_id: str) -> Predictor:
    """Fetch a registered version's artifacts, verify their checksums and load it.

    A failure is recorded in the registry's history (visible in the admin) and raised as
    ModelUnavailable; whatever version was loaded before keeps serving.
    """
    version = selectors.model_version_get(model_name=model_name, number=version_number)
    if version is None:
        raise ModelUnavailable("not_found", f"model {model_name!r} has no version {version_number}")
    started = time.perf_counter()
    fetched = False
    try:
        files = model_files_get(version, environment=settings.INFERENCE_ENVIRONMENT)
        fetched = True
        predictor = predictor_for(version.framework, files)
        predictor.load()
    except Exception as exc:
        logger.exception("could not load %s v%s", model_name, version_number)
        try:
            rolled_back = deployment_load_failure_handle(
                version=version,
                environment=settings.INFERENCE_ENVIRONMENT,
                worker_id=worker_id,
                error=f"{type(exc).__name__}: {exc}",
                definite=_load_failure_definite(exc, fetched=fetched),
                details={"artifact": exc.filename, "reason": exc.reason}
                if isinstance(exc, ArtifactRefused)
                else None,
            )
            if rolled_back is not None:
                AUTOMATIC_ROLLBACKS.labels(model_name, settings.INFERENCE_ENVIRONMENT).inc()
        except DATABASE_UNAVAILABLE:
            logger.warning("could not record the failed load of %s v%s", model_name, version_number)
        except Exception:  # the bookkeeping never hides the failure itself from the caller
            logger.exception(
                "could not record or act on the failed load of %s v%s", model_name, version_number
            )
        code = "model_unavailable" if isinstance(exc, ChecksumMismatch | OSError) else "load_failed"
        raise ModelUnavailable(code, f"{model_name} v{version_number} could not be loaded: {exc}") from exc
    seconds = time.perf_counter() - started
    served_record(model_name, version_number, worker_id=worker_id)
    LOAD_SECONDS.labels(model_name, str(version_number)).observe(seconds)
    # Exported from 0 on, so rate(), increase() and alerts see the first increment.
    REDELIVERIES.labels(model_name)
    AUTOMATIC_ROLLBACKS.labels(model_name, settings.INFERENCE_ENVIRONMENT)
    logger.info(
        "loaded %s v%s in %.2fs",
        model_name,
        version_number,
        seconds,
        extra={"model": model_name, "version": version_number, "load_seconds": round(seconds, 3)},
    )
    return predictor


def _load_failure_definite(exc: Exception, *, fetched: bool) -> bool:
    """Whether a failed load will fail again on any worker: refused or corrupt artifacts, and a
    model that does not load from files that were read. Not storage that cannot be read now
    (OSError, S3 client and transfer errors are all raised while fetching) and not a host out
    of memory."""
    if isinstance(exc, ArtifactRefused | ChecksumMismatch):
        return True
    # TensorFlow's out-of-memory error, by name: this module does not import TensorFlow.
    out_of_memory = isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError"
    return fetched and not out_of_memory


def served_record(model_name: str, version_number: int, *, worker_id: str) -> None:
    """A version loaded (or found loaded when made live): when it is the live one, the registry
    records it served and keeps it as the deployment's last good version."""
    try:
        if deployment_served_record(
            model_name=model_name,
            environment=settings.INFERENCE_ENVIRONMENT,
            version=version_number,
            worker_id=worker_id,
        ):
            logger.info(
                "%s v%s is the last good version in %s",
                model_name,
                version_number,
                settings.INFERENCE_ENVIRONMENT,
            )
    except DATABASE_UNAVAILABLE:
        logger.warning("could not record %s v%s as the last good version", model_name, version_number)
    except Exception:  # the bookkeeping never fails a load or a swap that worked
        logger.exception("could not record %s v%s as the last good version", model_name, version_number)


@dataclass(frozen=True)
class BatchRun:
    """A batch's answers, (request id, result) per part, and its figures for the version's live
    stats: `latency_s` is the predict wall time (None: the version could not be loaded), the
    confidence is over the rows of the first output when it holds class scores."""

    results: list[tuple[str, dict[str, Any]]]
    errors: int = 0
    rows: int = 0
    latency_s: float | None = None
    confidence_sum: float = 0.0
    confidence_rows: int = 0


class ModelRuntime:
    """Loaded versions of one worker child; least recently used evicted past `max_loaded`."""

    def __init__(self, *, environment: str, worker_id: str, max_loaded: int = 3) -> None:
        self.environment = environment
        self.worker_id = worker_id
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[str, int], Predictor] = OrderedDict()
        self._last_used: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self.redis = redis_sync()
        self._monitors: dict[tuple[str, int], DriftMonitor] = {}
        self._monitor_checked: dict[tuple[str, int], float] = {}
        self._publish_summary = SummaryPublisher(self.redis, environment=environment, worker_id=worker_id)
        self._tensor_redis: redis.Redis | None = None
        self.shm = ShmReader()  # the API regions of offloaded tensors (inference_common/shm_tensors.py)

    def tensor_client(self, store: str | None) -> redis.Redis | None:
        """The Redis holding offloaded tensors of `store` (inference_common/tensor_store.py): the
        broker's for None, INFERENCE_TENSOR_REDIS_URL's for VOLATILE (None if it is not set)."""
        if store is None:
            return self.redis
        if store != VOLATILE or not settings.INFERENCE_TENSOR_REDIS_URL:
            return None
        if self._tensor_redis is None:
            self._tensor_redis = redis_sync(settings.INFERENCE_TENSOR_REDIS_URL)
        return self._tensor_redis

    def predictor_get(self, *, model_name: str, version: int) -> Predictor:
        key = (model_name, version)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                self._last_used[key] = time.monotonic()
                return self._loaded[key]
        # One load per version at a time: a swap and a request for it load it once, and a load
        # that hangs holds up only that version.
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            predictor = predictor_build(
                model_name=model_name, version_number=version, worker_id=self.worker_id
            )
            LOADED.labels(model_name, str(version)).set(1)
            with self._lock:
                self._loaded[key] = predictor
                self._last_used[key] = time.monotonic()
                evicted = []
                while len(self._loaded) > self.max_loaded:
                    evicted.append(self._loaded.popitem(last=False))
        for (old_name, old_version), old in evicted:
            self._retire(old_name, old_version, old)
        # The new model stays for good (or until retired): full collections skip it from now on.
        # One pass after the evictions also collects what they dropped.
        heap_freeze()
        self.heartbeat()
        return predictor

    def loaded_versions(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._loaded)

    def preload(self, *, model_names: list[str]) -> None:
        """Load the versions deployed in this environment, so the first request is fast, and the
        candidate of a rollout running here, so a child that starts (or restarts) mid-rollout
        serves the candidate's share again without waiting for the next deployment message."""
        for deployment in selectors.deployment_list(environment=self.environment):
            if model_names and deployment.model.name not in model_names:
                continue
            try:
                self.predictor_get(model_name=deployment.model.name, version=deployment.version.number)
            except ModelUnavailable:
                logger.exception("could not preload %s", deployment)
                self._preload_last_good(deployment)
            self._preload_candidate(deployment)

    def _preload_last_good(self, deployment: Deployment) -> None:
        """The live version cannot load: load the last one that served, so it keeps serving."""
        good = deployment.last_good_version
        if good is None or good.pk == deployment.version_id:
            return
        try:
            self.predictor_get(model_name=deployment.model.name, version=good.number)
        except ModelUnavailable:
            logger.exception("could not preload the last good version %s either", good)
        else:
            logger.warning("%s cannot load; its last good version v%s serves", deployment, good.number)

    def _preload_candidate(self, deployment: Deployment) -> None:
        """After the live version (whose load it never stops): the running rollout's candidate.
        One that cannot load is logged (and recorded by `predictor_build`); live serves its share."""
        rollout = selectors.rollout_running(model_name=deployment.model.name, environment=self.environment)
        if rollout is None or rollout.candidate_id == deployment.version_id:
            return
        try:
            self.predictor_get(model_name=deployment.model.name, version=rollout.candidate.number)
        except ModelUnavailable:
            logger.exception(
                "could not preload %s, the candidate of the %s rollout running in %s",
                rollout.candidate,
                rollout.strategy,
                self.environment,
            )

    def load_watched(self, *, model_name: str, version: int, load_timeout_s: float) -> Predictor:
        """Load a version beside the loaded ones (or find it loaded), retiring none of them.

        A load that takes longer than `load_timeout_s` is reported to the registry as failed; the
        API keeps routing to the loaded versions, as the new one has no readiness mark.
        """
        watchdog = threading.Timer(
            load_timeout_s, self._report_slow_load, args=(model_name, version, load_timeout_s)
        )
        watchdog.daemon = True
        watchdog.start()
        try:
            return self.predictor_get(model_name=model_name, version=version)
        finally:
            watchdog.cancel()

    def swap(self, *, model_name: str, version: int, grace_s: float, load_timeout_s: float) -> None:
        """A new live version: load it beside the old one (`load_watched`), then retire the old
        ones once idle. Found loaded already (a rollback to a version not yet retired, a promoted
        rollout candidate), it is reported served here: no load reports it."""
        self.load_watched(model_name=model_name, version=version, load_timeout_s=load_timeout_s)
        served_record(model_name, version, worker_id=self.worker_id)
        time.sleep(grace_s)
        now = time.monotonic()
        with self._lock:
            idle = [
                key
                for key in self._loaded
                if key[0] == model_name and key[1] != version and now - self._last_used.get(key, 0) >= grace_s
            ]
            retired = [(key, self._loaded.pop(key)) for key in idle]
        for (name, number), predictor in retired:
            self._retire(name, number, predictor)
        if retired:
            heap_freeze()  # collects the retired versions' cycles, refreezes what serves

    def _report_slow_load(self, model_name: str, version: int, timeout_s: float) -> None:
        found = selectors.model_version_get(model_name=model_name, number=version)
        if found is None:
            return
        logger.error(
            "%s v%s did not load within %.0fs; the loaded versions keep serving",
            model_name,
            version,
            timeout_s,
        )
        registry_event_record(
            model=found.model,
            action=RegistryEvent.Action.LOAD_FAILED,
            version=found,
            environment=self.environment,
            actor=self.worker_id,
            details={"error": f"did not load within {timeout_s:.0f}s"},
        )

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one task: `{"model", "version", "inputs": {name: wire tensor}}`."""
        ((_, result),) = self.run_batch(
            [{"id": "", "inputs": request["inputs"]}],
            model_name=request["model"],
            version=int(request["version"]),
        )
        return result

    def run_batch(
        self, parts: list[dict[str, Any]], *, model_name: str, version: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """`batch_run`, its figures recorded at once. Returns (request id, result) per part."""
        run = self.batch_run(parts, model_name=model_name, version=version)
        self.stats_record(model_name=model_name, version=version, run=run)
        return run.results

    def batch_run(self, parts: list[dict[str, Any]], *, model_name: str, version: int) -> BatchRun:
        """Answer several requests for one version with one predict: concatenate their rows,
        predict once, split the outputs back. Every part is answered: a version that cannot be
        loaded, or that raises at predict, answers each part with that failure. The figures are
        not recorded here (`stats_record`), so a caller can store the answers first."""
        try:
            predictor = self.predictor_get(model_name=model_name, version=version)
        except ModelUnavailable as exc:
            error = failure_encode(exc.code, str(exc))
            return BatchRun(
                results=[(part["id"], error) for part in parts],
                errors=len(parts) if exc.code in ERROR_CODES else 0,
            )
        decoded = [{name: tensor_decode(wire) for name, wire in part["inputs"].items()} for part in parts]
        names = list(decoded[0])
        batch = {name: np.concatenate([inputs[name] for inputs in decoded]) for name in names}
        rows = len(batch[names[0]])
        started = time.perf_counter()
        try:
            outputs = predictor.predict(batch)
        except Exception as exc:  # a model's own failure: answered now, not at the deadline
            latency = time.perf_counter() - started
            logger.exception(
                "%s v%s failed at predict",
                model_name,
                version,
                extra={"model": model_name, "version": version},
            )
            error = failure_encode(
                "predict_failed", f"{model_name} v{version} failed at predict: {type(exc).__name__}: {exc}"
            )
            return BatchRun(
                results=[(part["id"], error) for part in parts],
                errors=len(parts),
                rows=rows,
                latency_s=latency,
            )
        latency = time.perf_counter() - started
        PREDICT.labels(model_name, str(version)).observe(latency)
        BATCH_SIZE.labels(model_name).observe(rows)
        BATCH_REQUESTS.labels(model_name).observe(len(parts))
        scores = next(iter(outputs.values()))
        self._monitor_observe(model_name, version, batch[names[0]], scores)
        confidence_sum, confidence_rows = scores_confidence(scores)
        results = []
        start = 0
        for part, inputs in zip(parts, decoded, strict=True):
            part_rows = len(inputs[names[0]])
            answer = Answer(
                model=model_name,
                version=version,
                worker=self.worker_id,
                outputs={name: array[start : start + part_rows] for name, array in outputs.items()},
            )
            results.append((part["id"], answer_encode(answer)))
            start += part_rows
        return BatchRun(
            results=results,
            rows=rows,
            latency_s=latency,
            confidence_sum=confidence_sum,
            confidence_rows=confidence_rows,
        )

    def stats_record(self, *, model_name: str, version: int, run: BatchRun) -> None:
        """Add a batch's figures to the version's live stats (INFERENCE_VERSION_STATS): one
        round trip; Redis failing here never fails the batch."""
        if not settings.INFERENCE_VERSION_STATS or not run.results:
            return
        try:
            version_stats_record(
                self.redis,
                environment=self.environment,
                model=model_name,
                version=version,
                requests=len(run.results),
                errors=run.errors,
                rows=run.rows,
                latency_s=run.latency_s,
                confidence_sum=run.confidence_sum,
                confidence_rows=run.confidence_rows,
            )
        except (redis.RedisError, OSError) as exc:
            logger.warning("could not record the live stats of %s v%s: %s", model_name, version, exc)

    def _monitor_observe(self, model_name: str, version: int, inputs: np.ndarray, scores: np.ndarray) -> None:
        """Feed the version's drift monitor, if it has one; never lets monitoring fail a batch."""
        monitor = self._monitors.get((model_name, version))
        if monitor is None:
            return
        try:
            monitor.observe(inputs, scores)
        except Exception:
            logger.exception("drift monitoring of %s v%s failed", model_name, version)

    def _monitors_refresh(self) -> None:
        """Start a drift monitor for each loaded version whose reference statistics exist. They
        are computed after registration, perhaps after this worker loaded the version: looked
        up every 10 s until found, here in the heartbeat thread, off the batch path."""
        for key in self.loaded_versions():
            if key in self._monitors or time.monotonic() - self._monitor_checked.get(key, -1e9) < 10:
                continue
            self._monitor_checked[key] = time.monotonic()
            close_old_connections()  # a long-lived thread: drop a connection the database closed
            try:
                found = selectors.model_version_get(model_name=key[0], number=key[1])
            except DATABASE_UNAVAILABLE:
                continue  # the registry is down: looked up again in 10 s; serving goes on
            if found is not None and found.reference_stats:
                self._monitors[key] = DriftMonitor(
                    model=key[0],
                    version=key[1],
                    reference=found.reference_stats,
                    window=settings.INFERENCE_DRIFT_WINDOW,
                    min_rows=settings.INFERENCE_DRIFT_MIN_ROWS,
                    eval_s=settings.INFERENCE_DRIFT_EVAL_S,
                    psi_threshold=settings.INFERENCE_DRIFT_PSI_THRESHOLD,
                    publish=self._publish_summary,
                )

    def heartbeat(self) -> None:
        """Refresh this child's readiness marks; start and evaluate the drift monitors."""
        self._monitors_refresh()
        for key, monitor in list(self._monitors.items()):
            try:
                monitor.evaluate_if_due()
            except Exception:
                logger.exception("drift evaluation of %s v%s failed", *key)
        for model_name, version in self.loaded_versions():
            serving_mark(
                self.redis,
                environment=self.environment,
                model=model_name,
                version=version,
                worker_id=self.worker_id,
            )

    def shutdown(self) -> None:
        with self._lock:
            loaded = list(self._loaded.items())
            self._loaded.clear()
        for (model_name, version), predictor in loaded:
            self._retire(model_name, version, predictor)

    def _retire(self, model_name: str, version: int, predictor: Predictor) -> None:
        try:
            serving_unmark(
                self.redis,
                environment=self.environment,
                model=model_name,
                version=version,
                worker_id=self.worker_id,
            )
        except redis.RedisError:
            logger.warning("could not clear the serving mark of %s v%s", model_name, version)
        # Its objects were frozen when it loaded: thawed, they are collected once dropped (the
        # caller refreezes with one collection after all its retirements; shutdown needs none).
        heap_thaw()
        predictor.unload()
        LOADED.labels(model_name, str(version)).set(0)
        self._monitors.pop((model_name, version), None)
        logger.info("unloaded %s v%s", model_name, version, extra={"model": model_name, "version": version})


_runtime: ModelRuntime | None = None


def runtime_get() -> ModelRuntime:
    """This process's runtime, created on first use (always after the fork)."""
    global _runtime
    if _runtime is None:
        _runtime = ModelRuntime(
            environment=settings.INFERENCE_ENVIRONMENT,
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
        )
    return _runtime


def _forever(name: str, loop: Any) -> threading.Thread:
    def run() -> None:
        while True:
            try:
                loop()
            except Exception:  # a background duty must outlive any single failure
                logger.exception("%s failed; retrying", name)
                time.sleep(1)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def runtime_start(*, model_names: list[str]) -> ModelRuntime:
    """A worker child's start-up: follow deployment changes, load the deployed versions, and
    start the heartbeat (readiness marks, drift monitors)."""
    runtime = runtime_get()
    deployments_listen(
        runtime,
        model_names=model_names,
        grace_s=settings.INFERENCE_SWAP_GRACE_S,
        load_timeout_s=settings.INFERENCE_LOAD_TIMEOUT_S,
    )
    runtime.preload(model_names=model_names)
    heartbeat_start(runtime, interval=settings.INFERENCE_HEARTBEAT_S)
    return runtime


def heartbeat_start(runtime: ModelRuntime, *, interval: float) -> threading.Thread:
    def beat() -> None:
        runtime.heartbeat()
        time.sleep(interval)

    return _forever("readiness-heartbeat", beat)


def deployment_change_apply(
    runtime: ModelRuntime, change: DeploymentChange, *, grace_s: float, load_timeout_s: float
) -> None:
    """A new live version is swapped in (the others retired once idle); a change that retires
    no others (a rollout's candidate) is only loaded beside them. A failed load keeps what is
    loaded."""
    try:
        if change.retire_others:
            runtime.swap(
                model_name=change.model,
                version=change.version,
                grace_s=grace_s,
                load_timeout_s=load_timeout_s,
            )
        else:
            runtime.load_watched(
                model_name=change.model, version=change.version, load_timeout_s=load_timeout_s
            )
    except ModelUnavailable:
        logger.exception("keeping the loaded versions of %s", change.model)


def deployments_listen(
    runtime: ModelRuntime, *, model_names: list[str], grace_s: float, load_timeout_s: float
) -> threading.Thread:
    """Follow promotions, rollbacks and rollouts of this environment's models; each change is
    applied in its own thread, so a load that hangs never stops the next change from being heard."""
    channel = deployments_channel(runtime.environment)

    def listen() -> None:
        # No read timeout: a subscription waits as long as nothing is published. With Sentinel the
        # client reconnects to the promoted master when _forever calls this again after a failover.
        pubsub = redis_sync(read_timeout_s=None).pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        try:
            for message in pubsub.listen():
                change = DeploymentChange.decode(message["data"])
                if model_names and change.model not in model_names:
                    continue
                logger.info("deployment change: %s", change)
                threading.Thread(
                    target=deployment_change_apply,
                    args=(runtime, change),
                    kwargs={"grace_s": grace_s, "load_timeout_s": load_timeout_s},
                    name="deployment-swap",
                    daemon=True,
                ).start()
        finally:
            pubsub.close()

    return _forever("deployment-listener", listen)
