import json
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from apps.models_registry import selectors
from apps.models_registry.models import Artifact
from apps.models_registry.services import deployment_set, model_version_register
from apps.models_registry.storage import ChecksumMismatch, artifact_fetch_verified, sha256_file

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifact_root(settings, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return settings.ARTIFACTS_ROOT


def _register(demo_model_dir: Path, **overrides: object):  # type: ignore[no-untyped-def]
    card = json.loads((demo_model_dir / "model_card.json").read_text())
    files = [p for p in demo_model_dir.iterdir() if p.name != "model_card.json"]
    return model_version_register(
        **{
            "name": "digits",
            "files": files,
            "signature": card["signature"],
            "metrics": card["metrics"],
            **overrides,
        }
    )


def test_register_stores_checksummed_artifacts_and_numbers_versions(demo_model_dir: Path) -> None:
    first = _register(demo_model_dir)
    second = _register(demo_model_dir)
    assert (first.number, second.number) == (1, 2)
    artifacts = {a.kind: a for a in first.artifacts.all()}
    assert set(artifacts) == {Artifact.Kind.MODEL, Artifact.Kind.PREPROCESSING, Artifact.Kind.VALIDATION}
    model = artifacts[Artifact.Kind.MODEL]
    assert model.sha256 == sha256_file(demo_model_dir / "model.keras")
    assert model.size == (demo_model_dir / "model.keras").stat().st_size
    assert (
        artifact_fetch_verified(uri=model.uri, sha256=model.sha256).read_bytes()
        == (demo_model_dir / "model.keras").read_bytes()
    )


def test_tampered_artifact_is_refused(demo_model_dir: Path) -> None:
    version = _register(demo_model_dir)
    model = version.artifacts.get(kind=Artifact.Kind.MODEL)
    path = artifact_fetch_verified(uri=model.uri, sha256=model.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        artifact_fetch_verified(uri=model.uri, sha256=model.sha256)


def test_register_rejects_bad_files_and_signatures(demo_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "evil.sh"
    script.write_text("echo hi")
    with pytest.raises(ValidationError, match="extension not allowed"):
        _register(demo_model_dir, files=[demo_model_dir / "model.keras", script])
    with pytest.raises(ValidationError, match="exactly one model file"):
        _register(demo_model_dir, files=[demo_model_dir / "validation.csv"])
    with pytest.raises(ValidationError, match="shape must be"):
        _register(
            demo_model_dir,
            signature={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [64]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
            },
        )


def test_local_storage_refuses_uris_outside_its_root(demo_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        artifact_fetch_verified(uri="local://../../etc/passwd", sha256="0" * 64)


def test_deployment_set_replaces_the_live_version(demo_model_dir: Path) -> None:
    first = _register(demo_model_dir)
    second = _register(demo_model_dir)
    deployment_set(version=first, environment="dev")
    deployment_set(version=second, environment="dev")
    live = selectors.deployment_get_active(model_name="digits", environment="dev")
    assert live is not None
    assert live.version == second
    assert selectors.deployment_get_active(model_name="digits", environment="prod") is None
    with pytest.raises(ValidationError, match="unknown environment"):
        deployment_set(version=first, environment="qa")
