"""Registering versions: what an artifact may be, what a signature must say;
`model_version_register` stores the artifacts and numbers the version."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import Max

from apps.models_registry.models import Artifact, ModelVersion, RegisteredModel, RegistryEvent
from apps.models_registry.services.actors import (
    User,
    actor_account,
)
from apps.models_registry.services.events import registry_event_record
from apps.models_registry.storage import Progress, sha256_file, storage_get

ARTIFACT_KINDS = {
    ".keras": Artifact.Kind.MODEL,
    ".h5": Artifact.Kind.MODEL,
    ".pickle": Artifact.Kind.PREPROCESSING,
    ".pkl": Artifact.Kind.PREPROCESSING,
    ".csv": Artifact.Kind.VALIDATION,
    ".xlsx": Artifact.Kind.VALIDATION,
    ".json": Artifact.Kind.OTHER,
}
MODEL_NAME_MAX_LENGTH = 64  # RegisteredModel.name


def artifact_kind_for(*, filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in ARTIFACT_KINDS:
        allowed = ", ".join(sorted(ARTIFACT_KINDS))
        raise ValidationError(f"{filename}: extension not allowed (allowed: {allowed})")
    return ARTIFACT_KINDS[suffix]


def signature_validate(*, signature: dict[str, Any]) -> None:
    """A signature names typed tensors; the first dimension of each is the batch (-1)."""
    if not isinstance(signature, dict):
        raise ValidationError("signature must be an object with inputs and outputs")
    for side in ("inputs", "outputs"):
        tensors = signature.get(side)
        if not isinstance(tensors, list) or not tensors:
            raise ValidationError(f"signature.{side} must be a non-empty list")
        for tensor in tensors:
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            if not isinstance(shape, list) or not tensor.get("name") or not tensor.get("datatype"):
                raise ValidationError(f"signature.{side}: each tensor needs name, datatype, shape")
            if not shape or shape[0] != -1 or not all(isinstance(d, int) for d in shape):
                raise ValidationError(f"signature.{side}.{tensor['name']}: shape must be [-1, ...]")


def model_name_validate(*, name: str) -> None:
    """A model's name is a slug (it names URLs, queues and storage keys)."""
    if len(name) > MODEL_NAME_MAX_LENGTH:
        raise ValidationError({"name": [f"a model name has at most {MODEL_NAME_MAX_LENGTH} characters"]})
    try:
        validate_slug(name)
    except ValidationError as exc:
        raise ValidationError({"name": [f"{name!r}: letters, digits, hyphens and underscores only"]}) from exc


def model_version_register(
    *,
    name: str,
    files: Iterable[Path],
    signature: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    description: str = "",
    gate: dict[str, Any] | None = None,
    batching: dict[str, Any] | None = None,
    notes: str = "",
    user: User = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Store a new version's artifacts (checksummed) and record it as the model's next version.

    `gate` ({"metric", "minimum"}) configures the promotion gate and `batching`
    ({"max_batch_size", "max_delay_ms"}) the dynamic batching when the model is new; later they
    are changed in the admin, not by whoever uploads a version.
    """
    paths = [Path(f) for f in files]
    model_name_validate(name=name)
    signature_validate(signature=signature)
    kinds = {path: artifact_kind_for(filename=path.name) for path in paths}
    if list(kinds.values()).count(Artifact.Kind.MODEL) != 1:
        raise ValidationError("a version needs exactly one model file (.keras or .h5)")
    if len({p.name for p in paths}) != len(paths):
        raise ValidationError("artifact file names must be unique")
    checksums = {path: sha256_file(path) for path in paths}

    with transaction.atomic():
        defaults: dict[str, Any] = {"description": description}
        if gate:
            defaults.update(gate_metric=gate.get("metric", "accuracy"), gate_minimum=float(gate["minimum"]))
        if batching:
            defaults.update(
                {k: batching[k] for k in ("max_batch_size", "max_delay_ms") if batching.get(k) is not None}
            )
        model, _ = RegisteredModel.objects.get_or_create(name=name, defaults=defaults)
        model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        latest = model.versions.aggregate(latest=Max("number"))["latest"] or 0
        version = ModelVersion.objects.create(
            model=model,
            number=latest + 1,
            signature=signature,
            metrics=metrics or {},
            notes=notes,
            created_by=actor_account(user=user),
        )
        storage = storage_get()
        for path, kind in kinds.items():
            uri = storage.put(key=f"{name}/{version.number}/{path.name}", source=path, progress=progress)
            Artifact.objects.create(
                version=version,
                kind=kind,
                filename=path.name,
                uri=uri,
                size=path.stat().st_size,
                sha256=checksums[path],
            )
        registry_event_record(
            model=model,
            action=RegistryEvent.Action.REGISTER,
            version=version,
            user=user,
            details={"artifacts": {p.name: checksums[p] for p in paths}, "metrics": metrics or {}},
        )
    return version
