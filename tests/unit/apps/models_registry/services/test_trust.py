"""The registry's model of trust: artifacts that would run code are refused at registration and
at the gate (the real gate subprocess), and signed versions are required where settings say so."""

import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from pytest_django import Settings
from sklearn.preprocessing import StandardScaler

from apps.models_registry.models import Deployment, RegistryEvent
from apps.models_registry.services import registration
from apps.models_registry.services.deployments import PromotionRefused, deployment_set, model_version_promote
from apps.models_registry.services.events import release_event_payload
from apps.models_registry.services.trust import version_trust_unsafe
from inference_common.signing import SIGNATURE_FILENAME, files_sign
from tests.hostile import (
    keras_lambda_write,
    keras_without_weights,
    key_pair,
    pickle_write,
    xlsx_formula_write,
)
from tests.unit.apps.models_registry.helpers import register, staff

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def copy(demo_model_dir: Path, tmp_path: Path, name: str = "candidate") -> Path:
    folder = tmp_path / name
    shutil.copytree(demo_model_dir, folder)
    return folder


def refusals() -> list[dict[str, Any]]:
    return [e.details for e in RegistryEvent.objects.filter(action=RegistryEvent.Action.REFUSED)]


def test_hostile_artifacts_are_refused_at_registration_naming_the_file(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    register(demo_model_dir)  # the model exists: its history records each refusal
    marker = tmp_path / "ran"
    hostile = copy(demo_model_dir, tmp_path)
    pickle_write(hostile / "preprocessing.pickle", marker=marker)
    with pytest.raises(ValidationError, match=r"preprocessing.pickle: refused: it names posix.system"):
        register(hostile)

    lambda_model = copy(demo_model_dir, tmp_path, "lambda")
    (lambda_model / "model.keras").unlink()
    keras_lambda_write(lambda_model / "model.h5", marker=marker)
    marker.unlink(missing_ok=True)  # saving ran the lambda once, in the subprocess that built it
    with pytest.raises(ValidationError, match=r"model.h5: refused: a Lambda layer"):
        register(lambda_model)

    formula = copy(demo_model_dir, tmp_path, "formula")
    table = np.loadtxt(demo_model_dir / "validation.csv", delimiter=",", skiprows=1)[:5]
    (formula / "validation.csv").unlink()
    xlsx_formula_write(formula / "validation.xlsx", rows=table[:, :-1], labels=table[:, -1])
    with pytest.raises(ValidationError, match=r"validation.xlsx: refused: cell BM2 holds a formula"):
        register(formula)

    assert not marker.exists()
    assert [(r["artifact"], r["stage"]) for r in refusals()] == [
        ("validation.xlsx", "registration"),
        ("model.h5", "registration"),
        ("preprocessing.pickle", "registration"),
    ]
    assert RegistryEvent.objects.filter(action=RegistryEvent.Action.REGISTER).count() == 1


def test_a_superuser_may_trust_one_version_needing_unsafe_deserialization(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    lambda_model = copy(demo_model_dir, tmp_path, "lambda")
    (lambda_model / "model.keras").unlink()
    keras_lambda_write(lambda_model / "model.keras", marker=marker)
    operator = staff("add_modelversion")
    with pytest.raises(Exception, match="requires a superuser"):
        register(lambda_model, trust_unsafe_reason="ours", user=operator)

    version = register(lambda_model, trust_unsafe_reason="our own layer, reviewed in PR 12", user=None)

    assert version.unsafe_trusted_reason == "our own layer, reviewed in PR 12"
    trusted = RegistryEvent.objects.get(action=RegistryEvent.Action.TRUSTED)
    assert trusted.reason == "our own layer, reviewed in PR 12" and trusted.version == version
    other = register(demo_model_dir)
    with pytest.raises(ValidationError, match="written reason"):
        version_trust_unsafe(version=other, user=None, reason=" ")


def test_a_version_registered_before_the_checks_is_refused_by_the_gate_process(
    demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version already in the registry (registered by an older release, without these checks):
    the gate's own process loads with the same checks and runs nothing."""
    marker = tmp_path / "ran"
    hostile = copy(demo_model_dir, tmp_path)
    pickle_write(hostile / "preprocessing.pickle", marker=marker)
    monkeypatch.setattr(registration, "artifacts_refuse", lambda **_: None)
    version = register(hostile)

    with pytest.raises(
        PromotionRefused, match=r"preprocessing.pickle: refused: it names posix.system"
    ) as refused:
        model_version_promote(version=version, environment="dev")

    assert not marker.exists()
    assert refused.value.report is not None
    assert [g.name for g in refused.value.report.results] == ["checksum", "signature", "smoke"]
    assert not Deployment.objects.exists()


@pytest.fixture
def signing(settings: Settings, tmp_path: Path) -> dict[str, Path]:
    """prod trusts the key "release" and requires a signature; dev and staging require none."""
    keys = tmp_path / "keys"
    keys.mkdir()
    release, release_public = key_pair(keys, "release")
    stranger, _ = key_pair(keys, "stranger")
    settings.INFERENCE_TRUSTED_KEYS = {"dev": {}, "staging": {}, "prod": {"release": str(release_public)}}
    settings.INFERENCE_REQUIRE_SIGNED_ENVIRONMENTS = ["prod"]
    return {"release": release, "stranger": stranger}


def signed_copy(demo_model_dir: Path, tmp_path: Path, name: str, key: Path) -> Path:
    folder = copy(demo_model_dir, tmp_path, name)
    files = {p.name: p for p in folder.iterdir() if p.name != "model_card.json"}
    files_sign(files, private_key=key, out=folder / SIGNATURE_FILENAME)
    return folder


def test_prod_takes_only_versions_signed_by_its_trusted_key(
    demo_model_dir: Path, tmp_path: Path, signing: dict[str, Path]
) -> None:
    signed = register(signed_copy(demo_model_dir, tmp_path, "signed", signing["release"]))
    assert (signed.signature_status, signed.signer) == ("verified", "release")
    unsigned = register(demo_model_dir)
    stranger = register(signed_copy(demo_model_dir, tmp_path, "stranger", signing["stranger"]))
    assert stranger.signature_status == "unknown_key" and stranger.signer == ""
    changed = signed_copy(demo_model_dir, tmp_path, "changed", signing["release"])
    scaler = StandardScaler().fit(np.random.default_rng(1).normal(size=(10, 64)))
    (changed / "preprocessing.pickle").write_bytes(pickle.dumps({"scaler": scaler}))
    tampered = register(changed)
    assert tampered.signature_status == "invalid" and "preprocessing.pickle" in tampered.signature_detail

    for version, why in [
        (unsigned, "unsigned"),
        (stranger, "unknown key: not signed by a trusted key"),
        (tampered, "invalid: Signature mismatch"),
    ]:
        with pytest.raises(PromotionRefused, match=f"prod requires a signature .*{why}"):
            model_version_promote(version=version, environment="prod", reason="straight to prod")
    # Where no signature is required, each may go (the gate says so).
    deployment = model_version_promote(version=tampered, environment="dev")
    assert deployment.environment == "dev"
    promoted = model_version_promote(version=signed, environment="prod", reason="straight to prod")
    event = RegistryEvent.objects.filter(action=RegistryEvent.Action.PROMOTE, environment="prod").get()
    assert {"name": "signature", "passed": True, "detail": "signed by release"} in event.details["gates"]
    payload = release_event_payload(event_id=uuid.uuid4(), action="promote", deployment=promoted, actor="x")
    assert payload["signer"] == "release" and payload["signature_status"] == "verified"
    failed = RegistryEvent.objects.filter(action=RegistryEvent.Action.GATE_FAILED, environment="prod")
    assert failed.count() == 3


def test_an_artifact_swapped_in_storage_after_promotion_fails_the_next_gate(
    demo_model_dir: Path, tmp_path: Path, signing: dict[str, Path], settings: Settings
) -> None:
    signed = register(signed_copy(demo_model_dir, tmp_path, "signed", signing["release"]))
    deployment_set(version=signed, environment="staging")
    stored = Path(settings.ARTIFACTS_ROOT) / "digits" / str(signed.number) / "model.keras"
    keras_without_weights(demo_model_dir / "model.keras", stored)  # a valid archive, other bytes
    with pytest.raises(PromotionRefused, match="checksum"):
        model_version_promote(version=signed, environment="prod")


def test_the_admin_trusts_a_version_only_for_a_superuser_with_a_reason(demo_model_dir: Path) -> None:
    from django.test import Client

    version = register(demo_model_dir)
    url = "/admin/models_registry/modelversion/"
    action = {"action": "trust_unsafe", "_selected_action": [version.pk]}
    operator = Client()
    operator.force_login(staff("view_modelversion", "promote_deployment"))
    assert "trust_unsafe" not in operator.get(url).content.decode()  # not offered

    root = Client()
    root.force_login(staff(superuser=True))
    page = root.post(url, action)
    assert page.status_code == 200 and "turns Keras' safe mode off" in page.content.decode()
    root.post(url, {**action, "confirm": "yes", "reason": "  "})
    version.refresh_from_db()
    assert version.unsafe_trusted_reason == ""
    root.post(url, {**action, "confirm": "yes", "reason": "custom layer reviewed in PR 12"})
    version.refresh_from_db()
    assert version.unsafe_trusted_reason == "custom layer reviewed in PR 12"
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.TRUSTED)
    assert (event.actor, event.reason) == ("root", "custom layer reviewed in PR 12")
