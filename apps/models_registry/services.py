"""Writes to the registry. Admin actions, REST endpoints and commands all call these."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from apps.models_registry.models import Artifact, Deployment, ModelVersion, RegisteredModel
from apps.models_registry.storage import sha256_file, storage_get

ARTIFACT_KINDS = {
    ".keras": Artifact.Kind.MODEL,
    ".h5": Artifact.Kind.MODEL,
    ".pickle": Artifact.Kind.PREPROCESSING,
    ".pkl": Artifact.Kind.PREPROCESSING,
    ".csv": Artifact.Kind.VALIDATION,
    ".xlsx": Artifact.Kind.VALIDATION,
    ".json": Artifact.Kind.OTHER,
}


def artifact_kind_for(*, filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in ARTIFACT_KINDS:
        allowed = ", ".join(sorted(ARTIFACT_KINDS))
        raise ValidationError(f"{filename}: extension not allowed (allowed: {allowed})")
    return ARTIFACT_KINDS[suffix]


def signature_validate(*, signature: dict[str, Any]) -> None:
    """A signature names typed tensors; the first dimension of each is the batch (-1)."""
    for side in ("inputs", "outputs"):
        tensors = signature.get(side)
        if not isinstance(tensors, list) or not tensors:
            raise ValidationError(f"signature.{side} must be a non-empty list")
        for tensor in tensors:
            shape = tensor.get("shape")
            if not tensor.get("name") or not tensor.get("datatype") or not isinstance(shape, list):
                raise ValidationError(f"signature.{side}: each tensor needs name, datatype, shape")
            if shape[0] != -1 or not all(isinstance(d, int) for d in shape):
                raise ValidationError(f"signature.{side}.{tensor['name']}: shape must be [-1, ...]")


@transaction.atomic
def model_version_register(
    *,
    name: str,
    files: Iterable[Path],
    signature: dict[str, Any],
    metrics: dict[str, float] | None = None,
    description: str = "",
    notes: str = "",
    user: AbstractBaseUser | None = None,
) -> ModelVersion:
    """Store a new version's artifacts (checksummed) and record it as the model's next version."""
    files = [Path(f) for f in files]
    signature_validate(signature=signature)
    kinds = {path: artifact_kind_for(filename=path.name) for path in files}
    if list(kinds.values()).count(Artifact.Kind.MODEL) != 1:
        raise ValidationError("a version needs exactly one model file (.keras or .h5)")

    model, _ = RegisteredModel.objects.get_or_create(name=name, defaults={"description": description})
    latest = model.versions.aggregate(latest=Max("number"))["latest"] or 0
    version = ModelVersion.objects.create(
        model=model,
        number=latest + 1,
        signature=signature,
        metrics=metrics or {},
        notes=notes,
        created_by=user,
    )
    storage = storage_get()
    for path, kind in kinds.items():
        uri = storage.put(key=f"{name}/{version.number}/{path.name}", source=path)
        Artifact.objects.create(
            version=version,
            kind=kind,
            filename=path.name,
            uri=uri,
            size=path.stat().st_size,
            sha256=sha256_file(path),
        )
    return version


@transaction.atomic
def deployment_set(
    *, version: ModelVersion, environment: str, user: AbstractBaseUser | None = None
) -> Deployment:
    """Make `version` the live version of its model in `environment`."""
    if environment not in settings.INFERENCE_ENVIRONMENTS:
        raise ValidationError(
            f"unknown environment {environment!r} (known: {settings.INFERENCE_ENVIRONMENTS})"
        )
    deployment, _ = Deployment.objects.update_or_create(
        model=version.model,
        environment=environment,
        defaults={"version": version, "deployed_by": user},
    )
    return deployment
