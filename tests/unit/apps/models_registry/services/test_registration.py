"""Registering versions: checksummed artifacts, numbering, refused files and signatures, and
the model card (the one service the REST upload and `register_model` call)."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from pytest_django import Settings

from apps.models_registry.models import Artifact
from apps.models_registry.storage import artifact_fetch_verified, sha256_file
from tests.unit.apps.models_registry.helpers import register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifact_root(settings: Settings, tmp_path: Path) -> Path:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return tmp_path / "artifacts"


def test_register_stores_checksummed_artifacts_and_numbers_versions(demo_model_dir: Path) -> None:
    first = register(demo_model_dir)
    second = register(demo_model_dir)
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


def test_register_rejects_bad_files_and_signatures(demo_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "evil.sh"
    script.write_text("echo hi")
    with pytest.raises(ValidationError, match="extension not allowed"):
        register(demo_model_dir, files=[demo_model_dir / "model.keras", script])
    with pytest.raises(ValidationError, match="exactly one model file"):
        register(demo_model_dir, files=[demo_model_dir / "validation.csv"])
    with pytest.raises(ValidationError, match="shape must be"):
        register(
            demo_model_dir,
            signature={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [64]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
            },
        )
