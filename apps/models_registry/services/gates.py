"""The gates a version passes before it may serve an environment.

In order, stopping at the first failure: checksum (every artifact fetched and matched against
its sha256), signature (where the environment requires one: made by one of its trusted keys over
every file), smoke (`python -m workers.gates` loads the version in a separate process and
predicts its validation set; the API never imports TensorFlow) and metric (the metric computed
on that set is at least the model's minimum).
"""

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.models_registry.models import Artifact, ModelVersion
from apps.models_registry.services.trust import (
    files_signature_check,
    signature_refusal,
    signature_required,
    version_files_fetch,
    version_load_policy,
)
from apps.models_registry.storage import ChecksumMismatch
from inference_common.task_names import EVALUATE_GATE_TASK, PLATFORM_QUEUE
from inference_project.celery_app import app as celery_app


@dataclass
class GateResult:
    name: str
    passed: bool
    detail: str


@dataclass
class GateReport:
    results: list[GateResult] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "gates": [{"name": r.name, "passed": r.passed, "detail": r.detail} for r in self.results],
            "metrics": self.metrics,
        }


def gate_checksums(*, version: ModelVersion) -> tuple[GateResult, dict[str, Path]]:
    """Fetch every artifact and check its sha256; returns verified local paths by kind."""
    result, by_name = _checksums(version=version)
    kinds = {a.filename: a.kind for a in version.artifacts.all()}
    return result, {kinds[name]: path for name, path in by_name.items()}


def _checksums(*, version: ModelVersion) -> tuple[GateResult, dict[str, Path]]:
    pruned = version.artifacts.filter(pruned_at__isnull=False).first()
    if pruned is not None:
        return GateResult("checksum", False, f"{pruned.filename} was pruned by retention"), {}
    try:
        paths = version_files_fetch(version=version)
    except (ChecksumMismatch, OSError) as exc:
        return GateResult("checksum", False, str(exc)), {}
    return GateResult("checksum", True, f"{len(paths)} artifacts match their sha256"), paths


def gate_signature(*, files: dict[str, Path], environment: str) -> GateResult:
    """Where `environment` requires it, a valid signature by one of its trusted keys."""
    check = files_signature_check(files=files, environment=environment)
    refusal = signature_refusal(check=check, environment=environment)
    if refusal:
        return GateResult("signature", False, refusal)
    if check.verified:
        return GateResult("signature", True, f"signed by {check.signer}")
    required = "required" if signature_required(environment=environment) else "not required"
    return GateResult("signature", True, f"{required} in {environment} ({check.status}: {check.detail})")


def gate_job(*, version: ModelVersion, paths: dict[str, Path]) -> dict[str, Any]:
    """What `python -m workers.gates` reads: verified local paths, the signature and the framework."""
    return {
        "model": str(paths[Artifact.Kind.MODEL]),
        "preprocessing": str(paths[Artifact.Kind.PREPROCESSING])
        if Artifact.Kind.PREPROCESSING in paths
        else None,
        "validation": str(paths[Artifact.Kind.VALIDATION]),
        "signature": version.signature,
        "framework": version.framework,
        "policy": version_load_policy(version=version).as_dict(),
    }


def gate_subprocess_run(job: dict[str, Any]) -> dict[str, Any]:
    """Run the gate process; its JSON answer, or {"error"} if it crashed, hung or said so."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "workers.gates"],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=settings.PROMOTION_GATE_TIMEOUT_S,
            cwd=settings.BASE_DIR,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no answer within {settings.PROMOTION_GATE_TIMEOUT_S}s"}
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any]
    try:
        result = json.loads(lines[-1]) if lines else {"error": done.stderr[-500:] or "no output"}
    except json.JSONDecodeError:
        result = {"error": lines[-1][-500:]}
    if done.returncode != 0 and "error" not in result:
        result = {"error": f"exit code {done.returncode}: {done.stderr[-500:]}"}
    return result


def _gate_on_platform_worker(version: ModelVersion) -> dict[str, Any]:
    """The API image has no TensorFlow: the platform worker fetches, verifies and evaluates."""
    result = celery_app.send_task(EVALUATE_GATE_TASK, args=[version.pk], queue=PLATFORM_QUEUE)
    deadline = time.monotonic() + settings.PROMOTION_GATE_TIMEOUT_S + 30
    while time.monotonic() < deadline:
        meta = celery_app.backend.get_task_meta(result.id)
        if meta["status"] == "SUCCESS":
            answer: dict[str, Any] = meta["result"]
            return answer
        if meta["status"] in {"FAILURE", "REVOKED"}:
            return {"error": f"the gate task failed: {meta.get('result')}"}
        time.sleep(0.2)
    return {"error": "no platform worker answered the gate task in time"}


def reference_store(*, version: ModelVersion, result: dict[str, Any]) -> bool:
    """Keep the reference statistics a gate run computed, unless the version has them already
    (same model, same validation set: the same numbers)."""
    if version.reference_stats is not None or not result.get("reference"):
        return False
    version.reference_stats = result["reference"]
    version.save(update_fields=["reference_stats"])
    return True


def gate_evaluate(*, version: ModelVersion, paths: dict[str, Path]) -> tuple[GateResult, dict[str, float]]:
    """Load the version in a separate process and score its validation set; the reference
    statistics that run computes are kept (`reference_store`) as a by-product.

    PROMOTION_GATE_RUNNER="local" runs that process here; "worker" asks the platform worker.
    """
    if Artifact.Kind.VALIDATION not in paths:
        return GateResult("smoke", False, "the version has no validation set (.csv or .xlsx)"), {}
    if settings.PROMOTION_GATE_RUNNER == "worker":
        result = _gate_on_platform_worker(version)
    else:
        result = gate_subprocess_run(gate_job(version=version, paths=paths))
    if "error" in result:
        return GateResult("smoke", False, f"the model failed to load or predict: {result['error']}"), {}
    reference_store(version=version, result=result)
    detail = f"loaded in {result['load_seconds']}s, answered {result['rows']} validation rows"
    metrics: dict[str, float] = result["metrics"]
    return GateResult("smoke", True, detail), metrics


def gates_run(*, version: ModelVersion, environment: str) -> GateReport:
    """Checksums, the signature `environment` requires, then load + smoke batch in a separate
    process, then the metric minimum."""
    report = GateReport()
    checksum, by_name = _checksums(version=version)
    report.results.append(checksum)
    if not report.passed:
        return report
    report.results.append(gate_signature(files=by_name, environment=environment))
    if not report.passed:
        return report
    kinds = {a.filename: a.kind for a in version.artifacts.all()}
    paths = {kinds[name]: path for name, path in by_name.items()}
    smoke, metrics = gate_evaluate(version=version, paths=paths)
    report.results.append(smoke)
    report.metrics = metrics
    if not smoke.passed:
        return report
    model = version.model
    value = metrics.get(model.gate_metric)
    if value is None:
        report.results.append(GateResult("metric", False, f"metric {model.gate_metric!r} not computed"))
    else:
        passed = value >= model.gate_minimum
        relation = ">=" if passed else "<"
        report.results.append(
            GateResult(
                "metric", passed, f"{model.gate_metric} {value:.4f} {relation} minimum {model.gate_minimum}"
            )
        )
    return report
