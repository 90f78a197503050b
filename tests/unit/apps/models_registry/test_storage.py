"""The local artifact storage: verified reads, refused tampering and escaping URIs."""

from pathlib import Path

import pytest
from pytest_django import Settings

from apps.models_registry.models import Artifact
from apps.models_registry.storage import ChecksumMismatch, artifact_fetch_verified
from tests.unit.apps.models_registry.helpers import register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifact_root(settings: Settings, tmp_path: Path) -> Path:
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    return tmp_path / "artifacts"


def test_tampered_artifact_is_refused(demo_model_dir: Path) -> None:
    version = register(demo_model_dir)
    model = version.artifacts.get(kind=Artifact.Kind.MODEL)
    path = artifact_fetch_verified(uri=model.uri, sha256=model.sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        artifact_fetch_verified(uri=model.uri, sha256=model.sha256)


def test_local_storage_refuses_uris_outside_its_root(demo_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        artifact_fetch_verified(uri="local://../../etc/passwd", sha256="0" * 64)
