"""What the registry trusts a version with: what its loading may accept, and who signed it.

The load policy (settings + a superuser's trust in one version) goes with the version to the
gate process and the worker, which apply it with the same code as the upload check
(`inference_common.safe_artifacts`). The signature is checked at upload against every trusted
key, at the gate against the target environment's keys, and by the worker before every load
where its environment requires one (`inference_common.signing`).
"""

from collections.abc import Mapping
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.models_registry.models import Artifact, ModelVersion, RegistryEvent
from apps.models_registry.services.actors import User, actor_superuser_require
from apps.models_registry.services.events import registry_event_record
from apps.models_registry.storage import artifact_fetch_verified
from inference_common.safe_artifacts import LoadPolicy
from inference_common.signing import SignatureCheck, signature_verify


def load_policy(*, unsafe_trusted: bool = False) -> LoadPolicy:
    return LoadPolicy(
        pickle_allowed=tuple(settings.INFERENCE_PICKLE_ALLOWED_GLOBALS),
        keras_allowed=tuple(settings.INFERENCE_KERAS_ALLOWED_OBJECTS),
        unsafe_trusted=unsafe_trusted,
        table_max_rows=settings.INFERENCE_TABLE_MAX_ROWS,
        table_max_bytes=settings.INFERENCE_TABLE_MAX_BYTES,
    )


def version_load_policy(*, version: ModelVersion) -> LoadPolicy:
    return load_policy(unsafe_trusted=bool(version.unsafe_trusted_reason))


def trusted_keys(*, environment: str | None) -> dict[str, str]:
    """The public keys an environment trusts (name -> path); every environment's for None."""
    keys: Mapping[str, Mapping[str, str]] = settings.INFERENCE_TRUSTED_KEYS
    if environment is not None:
        return dict(keys.get(environment, {}))
    return {name: path for per_environment in keys.values() for name, path in per_environment.items()}


def signature_required(*, environment: str) -> bool:
    return environment in settings.INFERENCE_REQUIRE_SIGNED_ENVIRONMENTS


def files_signature_check(*, files: Mapping[str, Path], environment: str | None) -> SignatureCheck:
    """Check the signature among `files` (name -> local path) over the others."""
    signatures = [name for name in files if Path(name).suffix == ".sig"]
    if len(signatures) > 1:
        return SignatureCheck("invalid", detail=f"more than one signature: {', '.join(signatures)}")
    signature = files[signatures[0]] if signatures else None
    signed = {name: path for name, path in files.items() if name not in signatures}
    return signature_verify(
        files=signed, signature=signature, trusted_keys=trusted_keys(environment=environment)
    )


def version_files_fetch(*, version: ModelVersion) -> dict[str, Path]:
    """Every artifact of a version, fetched and checksum-verified, by file name."""
    return {
        a.filename: artifact_fetch_verified(uri=a.uri, sha256=a.sha256, filename=a.filename)
        for a in version.artifacts.all()
    }


def signature_refusal(*, check: SignatureCheck, environment: str) -> str:
    """Why a version may not serve `environment` ("" when it may)."""
    if not signature_required(environment=environment) or check.verified:
        return ""
    keys = ", ".join(trusted_keys(environment=environment)) or "none configured"
    return (
        f"{environment} requires a signature by one of its trusted keys ({keys}): "
        f"{check.status.replace('_', ' ')}: {check.detail}"
    )


def version_trust_unsafe(*, version: ModelVersion, user: User, reason: str) -> ModelVersion:
    """A superuser lets one version load with Keras' unsafe deserialization (a Lambda layer),
    with a written reason kept in the history. Pickles stay on the allow list regardless."""
    actor_superuser_require(user=user, what="trusting unsafe deserialization")
    if not reason.strip():
        raise ValidationError({"reason": ["trusting unsafe deserialization requires a written reason"]})
    with transaction.atomic():
        version.unsafe_trusted_reason = reason.strip()
        version.save(update_fields=["unsafe_trusted_reason"])
        registry_event_record(
            model=version.model,
            action=RegistryEvent.Action.TRUSTED,
            version=version,
            user=user,
            reason=reason.strip(),
            details={"model_file": [a.filename for a in version.artifacts.filter(kind=Artifact.Kind.MODEL)]},
        )
    return version
