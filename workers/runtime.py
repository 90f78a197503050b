"""The per-process model runtime of a worker child: finds, verifies, loads and runs versions.

One `ModelRuntime` lives in each worker child (created after the fork). It keeps the loaded
versions in memory, reports them to Redis for readiness, and turns a task's request into
outputs. Plain Python: Celery only calls `runtime_get().run(request)`.
"""

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from typing import Any

import redis
from django.conf import settings

from apps.models_registry import selectors
from apps.models_registry.models import Artifact
from apps.models_registry.storage import ChecksumMismatch, artifact_fetch_verified
from apps.predictions.readiness import serving_mark, serving_unmark
from apps.predictions.wire import tensor_decode, tensor_encode
from workers.predictor import KerasPredictor, ModelFiles, Predictor

logger = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """The requested version cannot be served by this worker; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def predictor_build(*, model_name: str, version_number: int) -> Predictor:
    """Fetch a registered version's artifacts, verify their checksums and load it."""
    version = selectors.model_version_get(model_name=model_name, number=version_number)
    if version is None:
        raise ModelUnavailable("not_found", f"model {model_name!r} has no version {version_number}")
    artifacts = {a.kind: a for a in version.artifacts.all()}
    try:
        files = ModelFiles(
            model=artifact_fetch_verified(
                uri=artifacts[Artifact.Kind.MODEL].uri, sha256=artifacts[Artifact.Kind.MODEL].sha256
            ),
            preprocessing=(
                artifact_fetch_verified(
                    uri=artifacts[Artifact.Kind.PREPROCESSING].uri,
                    sha256=artifacts[Artifact.Kind.PREPROCESSING].sha256,
                )
                if Artifact.Kind.PREPROCESSING in artifacts
                else None
            ),
            signature=version.signature,
        )
    except (ChecksumMismatch, FileNotFoundError) as exc:
        raise ModelUnavailable("model_unavailable", str(exc)) from exc
    predictor = KerasPredictor(files)
    started = time.perf_counter()
    predictor.load()
    logger.info("loaded %s v%s in %.2fs", model_name, version_number, time.perf_counter() - started)
    return predictor


class ModelRuntime:
    """Loaded versions of one worker child, least recently used evicted past `max_loaded`."""

    def __init__(self, *, environment: str, worker_id: str, max_loaded: int = 2) -> None:
        self.environment = environment
        self.worker_id = worker_id
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[tuple[str, int], Predictor] = OrderedDict()
        self._lock = threading.Lock()
        self._redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)

    def predictor_get(self, *, model_name: str, version: int) -> Predictor:
        key = (model_name, version)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
        predictor = predictor_build(model_name=model_name, version_number=version)
        with self._lock:
            self._loaded[key] = predictor
            while len(self._loaded) > self.max_loaded:
                (old_name, old_version), old = self._loaded.popitem(last=False)
                old.unload()
                self._unmark(old_name, old_version)
        self.heartbeat()
        return predictor

    def preload(self, *, model_names: list[str]) -> None:
        """Load the versions deployed in this environment, so the first request is fast."""
        for deployment in selectors.deployment_list(environment=self.environment):
            if model_names and deployment.model.name not in model_names:
                continue
            try:
                self.predictor_get(model_name=deployment.model.name, version=deployment.version.number)
            except Exception:
                logger.exception("could not preload %s", deployment)

    def run(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one task: `{"model", "version", "inputs": {name: wire tensor}}`."""
        model_name, version = request["model"], int(request["version"])
        try:
            predictor = self.predictor_get(model_name=model_name, version=version)
        except ModelUnavailable as exc:
            return {"error": {"code": exc.code, "message": str(exc)}}
        inputs = {name: tensor_decode(wire) for name, wire in request["inputs"].items()}
        outputs = predictor.predict(inputs)
        return {
            "model": model_name,
            "version": version,
            "worker": self.worker_id,
            "outputs": {name: tensor_encode(array) for name, array in outputs.items()},
        }

    def heartbeat(self) -> None:
        with self._lock:
            keys = list(self._loaded)
        for model_name, version in keys:
            serving_mark(
                self._redis,
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
            predictor.unload()
            self._unmark(model_name, version)

    def _unmark(self, model_name: str, version: int) -> None:
        try:
            serving_unmark(
                self._redis,
                environment=self.environment,
                model=model_name,
                version=version,
                worker_id=self.worker_id,
            )
        except redis.RedisError:
            logger.warning("could not clear the serving mark of %s v%s", model_name, version)


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


def heartbeat_start(runtime: ModelRuntime, *, interval: float) -> threading.Thread:
    def beat() -> None:
        while True:
            try:
                runtime.heartbeat()
            except redis.RedisError:
                logger.warning("readiness heartbeat failed; retrying")
            time.sleep(interval)

    thread = threading.Thread(target=beat, name="readiness-heartbeat", daemon=True)
    thread.start()
    return thread
