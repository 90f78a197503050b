"""Registering versions: what an artifact may be, what a signature must say, and the model card.

`model_card_register` is the one way in for a trained model's files and its `model_card.json`
(the REST upload and `manage.py register_model` both call it); `model_version_register` stores
the artifacts and numbers the version.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    actor_permission_require,
    actor_superuser_require,
)
from apps.models_registry.services.deployments import deployment_set
from apps.models_registry.services.events import registry_event_record
from apps.models_registry.services.profiling import version_profile_request
from apps.models_registry.services.trust import files_signature_check, load_policy
from apps.models_registry.storage import Progress, sha256_file, storage_get
from inference_common.frameworks import FRAMEWORKS
from inference_common.safe_artifacts import ArtifactRefused, artifact_check

ARTIFACT_KINDS = {
    ".keras": Artifact.Kind.MODEL,
    ".h5": Artifact.Kind.MODEL,
    # The simulated accelerator's "weights": its kernel's timing (workers/simulated.py).
    ".simulated": Artifact.Kind.MODEL,
    ".pickle": Artifact.Kind.PREPROCESSING,
    ".pkl": Artifact.Kind.PREPROCESSING,
    ".csv": Artifact.Kind.VALIDATION,
    ".xlsx": Artifact.Kind.VALIDATION,
    ".json": Artifact.Kind.OTHER,
    # The OpenSSF model-signing signature over the other files (inference_common/signing.py).
    ".sig": Artifact.Kind.SIGNATURE,
}
MODEL_CARD_FILENAME = "model_card.json"
DEFAULT_FRAMEWORK = "keras"
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
    framework: str = DEFAULT_FRAMEWORK,
    notes: str = "",
    trust_unsafe_reason: str = "",
    user: User = None,
    actor: str | None = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Store a new version's artifacts (checksummed) and record it as the model's next version.

    Every artifact is checked first (`artifacts_refuse`): one whose loading could run code is
    refused, naming it. `trust_unsafe_reason` (a superuser's) lets the model file need Keras'
    unsafe deserialization. A signature among the files is verified against every trusted key
    and its result kept on the version (gates decide per environment).

    `framework` picks the runtime that loads it in the workers (workers/predictor.py).

    `gate` ({"metric", "minimum"}) configures the promotion gate and `batching`
    ({"max_batch_size", "max_delay_ms"}) the dynamic batching when the model is new; later they
    are changed in the admin, not by whoever uploads a version.
    """
    paths = [Path(f) for f in files]
    model_name_validate(name=name)
    signature_validate(signature=signature)
    kinds = {path: artifact_kind_for(filename=path.name) for path in paths}
    if list(kinds.values()).count(Artifact.Kind.MODEL) != 1:
        model_suffixes = sorted(k for k, v in ARTIFACT_KINDS.items() if v == Artifact.Kind.MODEL)
        raise ValidationError(f"a version needs exactly one model file ({', '.join(model_suffixes)})")
    if len({p.name for p in paths}) != len(paths):
        raise ValidationError("artifact file names must be unique")
    if list(kinds.values()).count(Artifact.Kind.SIGNATURE) > 1:
        raise ValidationError({"files": ["send one signature (.sig) per version"]})
    if trust_unsafe_reason:
        actor_superuser_require(user=user, what="trusting unsafe deserialization")
    artifacts_refuse(name=name, paths=paths, unsafe_trusted=bool(trust_unsafe_reason.strip()), user=user)
    signed = files_signature_check(files={p.name: p for p in paths}, environment=None)
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
            framework=framework,
            notes=notes,
            created_by=actor_account(user=user),
            signature_status=signed.status,
            signer=signed.signer,
            signature_detail=signed.detail,
            unsafe_trusted_reason=trust_unsafe_reason.strip(),
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
            actor=actor,
            details={
                "artifacts": {p.name: checksums[p] for p in paths},
                "metrics": metrics or {},
                "signature": {"status": signed.status, "signer": signed.signer, "detail": signed.detail},
            },
        )
        if trust_unsafe_reason.strip():
            registry_event_record(
                model=model,
                action=RegistryEvent.Action.TRUSTED,
                version=version,
                user=user,
                actor=actor,
                reason=trust_unsafe_reason.strip(),
            )
    return version


def artifacts_refuse(*, name: str, paths: list[Path], unsafe_trusted: bool, user: User) -> None:
    """Refuse (ValidationError naming the file) an upload holding an artifact whose loading
    could run code, or that is not the data its name says; an existing model's history records
    the refusal."""
    policy = load_policy(unsafe_trusted=unsafe_trusted)
    for path in paths:
        try:
            artifact_check(path, policy=policy)
        except ArtifactRefused as exc:
            model = RegisteredModel.objects.filter(name=name).first()
            if model is not None:
                registry_event_record(
                    model=model,
                    action=RegistryEvent.Action.REFUSED,
                    user=user,
                    details={"artifact": exc.filename, "reason": exc.reason, "stage": "registration"},
                )
            raise ValidationError({"files": [str(exc)]}) from exc


# --- the model card ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCard:
    """What a `model_card.json` says about a trained model; unknown keys are kept with the file,
    not read. `framework` is the runtime's name, given as a string or as `{name: version}`."""

    name: str | None = None
    signature: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    gate: dict[str, Any] | None = None
    batching: dict[str, Any] | None = None
    framework: str = DEFAULT_FRAMEWORK


def _framework(value: Any) -> str:
    """`"keras"`, or `{"keras": "3.15.1"}` as the demo model's card says it (name: version)."""
    if value is None:
        return DEFAULT_FRAMEWORK
    if isinstance(value, dict) and len(value) == 1:
        (value,) = value
    if value not in FRAMEWORKS:
        raise ValidationError(
            {
                "framework": [
                    f"{MODEL_CARD_FILENAME}: framework must name a runtime: one of {list(FRAMEWORKS)}"
                ]
            }
        )
    return str(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _card_object(card: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = card.get(key)
    if value is not None and not isinstance(value, dict):
        raise ValidationError({key: [f"{MODEL_CARD_FILENAME}: {key} must be an object"]})
    return value


def model_card_parse(*, text: str) -> ModelCard:
    """Read and check a model card; a `ValidationError` keyed by the field names what is wrong."""
    try:
        card = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError({"model_card": [f"{MODEL_CARD_FILENAME} is not valid JSON: {exc}"]}) from exc
    if not isinstance(card, dict):
        raise ValidationError({"model_card": [f"{MODEL_CARD_FILENAME} must be a JSON object"]})
    for key in ("name", "description"):
        if card.get(key) is not None and not isinstance(card[key], str):
            raise ValidationError({key: [f"{MODEL_CARD_FILENAME}: {key} must be a string"]})
    gate = _card_object(card, "gate")
    if gate is not None:
        if not _number(gate.get("minimum")):
            raise ValidationError({"gate": [f"{MODEL_CARD_FILENAME}: gate.minimum must be a number"]})
        if not isinstance(gate.get("metric", "accuracy"), str):
            raise ValidationError({"gate": [f"{MODEL_CARD_FILENAME}: gate.metric must be a metric's name"]})
    batching = _card_object(card, "batching")
    if batching is not None:
        size, delay = batching.get("max_batch_size"), batching.get("max_delay_ms")
        if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size >= 1):
            raise ValidationError({"batching": [f"{MODEL_CARD_FILENAME}: max_batch_size must be >= 1"]})
        if delay is not None and not (_number(delay) and delay >= 0):
            raise ValidationError({"batching": [f"{MODEL_CARD_FILENAME}: max_delay_ms must be >= 0"]})
    return ModelCard(
        name=card.get("name") or None,
        signature=_card_object(card, "signature"),
        metrics=_card_object(card, "metrics") or {},
        description=card.get("description") or "",
        gate=gate,
        batching=batching,
        framework=_framework(card.get("framework")),
    )


def model_card_register(
    *,
    files: Iterable[Path],
    name: str | None = None,
    signature: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    notes: str = "",
    deploy: str | None = None,
    trust_unsafe_reason: str = "",
    user: User = None,
    actor: str | None = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Register a trained model from its files, one of which may be its `model_card.json`.

    The card gives the name, signature, metrics, description, gate and batching; `name`,
    `signature` and `metrics` given here win over the card's (the REST route names the model,
    a form may send the signature). Then the version's reference statistics are requested
    (REGISTRY_PROFILE_ON_REGISTER) and, with `deploy`, the version goes live in that environment
    without gates: only for bootstrapping an installation (a superuser or a trusted caller).
    """
    actor_permission_require(user=user, perm="models_registry.add_modelversion")
    if deploy:
        actor_superuser_require(user=user, what="deploying without gates")
    paths = [Path(f) for f in files]
    cards = [p for p in paths if p.name == MODEL_CARD_FILENAME]
    if len(cards) > 1:
        raise ValidationError({"model_card": [f"send one {MODEL_CARD_FILENAME}, not {len(cards)}"]})
    card = model_card_parse(text=cards[0].read_text()) if cards else ModelCard()
    name = name or card.name
    if not name:
        raise ValidationError({"name": [f"no model name: send a {MODEL_CARD_FILENAME} with one, or a name"]})
    signature = signature or card.signature
    if not signature:
        raise ValidationError(
            {"signature": [f"no signature: send a {MODEL_CARD_FILENAME} with one, or a signature"]}
        )
    if metrics is not None and not isinstance(metrics, dict):
        raise ValidationError({"metrics": ["metrics must be an object"]})
    version = model_version_register(
        name=name,
        files=paths,  # the card is kept with the version: a signature covers it too
        signature=signature,
        metrics=metrics or card.metrics,
        description=card.description,
        gate=card.gate,
        batching=card.batching,
        framework=card.framework,
        notes=notes,
        trust_unsafe_reason=trust_unsafe_reason,
        user=user,
        actor=actor,
        progress=progress,
    )
    version_profile_request(version=version)
    if deploy:
        deployment_set(version=version, environment=deploy, user=user, actor=actor)
    return version
