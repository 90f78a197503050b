"""The S3 storage against a real S3-compatible server on loopback (moto in server mode)."""

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from pytest_django import Settings

from apps.models_registry.models import Artifact
from apps.models_registry.services.registration import model_version_register
from apps.models_registry.storage import (
    ChecksumMismatch,
    S3ArtifactStorage,
    artifact_fetch_verified,
    sha256_file,
)

pytestmark = pytest.mark.django_db

BUCKET = "model-artifacts"


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> Any:
    """A boto3 S3 client (boto3 is untyped to us, see pyproject.toml) with the bucket made."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3")
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    settings.ARTIFACT_STORAGE = "s3"
    settings.ARTIFACTS_S3_BUCKET = BUCKET
    settings.ARTIFACTS_S3_PREFIX = f"test-{tmp_path.name}/"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    settings.ARTIFACTS_S3_MULTIPART_MB = 5
    return client


def test_register_uploads_to_s3_and_loads_verified(s3: Any, demo_model_dir: Path, settings: Settings) -> None:
    card = json.loads((demo_model_dir / "model_card.json").read_text())
    files = [p for p in demo_model_dir.iterdir() if p.name != "model_card.json"]
    version = model_version_register(name="digits", files=files, signature=card["signature"])
    model = version.artifacts.get(kind=Artifact.Kind.MODEL)
    assert model.uri == f"s3://{BUCKET}/{settings.ARTIFACTS_S3_PREFIX}digits/1/model.keras"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=settings.ARTIFACTS_S3_PREFIX)
    assert {o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]} == {p.name for p in files}
    local = artifact_fetch_verified(uri=model.uri, sha256=model.sha256)
    assert local.is_relative_to(settings.ARTIFACT_CACHE_DIR)
    assert sha256_file(local) == sha256_file(demo_model_dir / "model.keras")


def test_large_files_go_up_in_parts(s3: Any, tmp_path: Path, settings: Settings) -> None:
    big = tmp_path / "big.keras"
    big.write_bytes(bytes(range(256)) * (12 * 1024 * 4))  # 12 MiB: three 5 MiB parts
    storage = S3ArtifactStorage(bucket=BUCKET, prefix="parts/", cache_dir=tmp_path / "c", multipart_mb=5)
    seen: list[int] = []
    uri = storage.put(key="big.keras", source=big, progress=seen.append)
    head = s3.head_object(Bucket=BUCKET, Key="parts/big.keras")
    assert head["ETag"].strip('"').endswith("-3")
    assert sum(seen) == big.stat().st_size
    fetched = storage.fetch(uri=uri, sha256=sha256_file(big))
    assert sha256_file(fetched) == sha256_file(big)
    storage.delete(uri=uri)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="parts/")


def test_tampered_s3_object_is_refused(s3: Any, tmp_path: Path) -> None:
    source = tmp_path / "model.keras"
    source.write_bytes(b"original bytes")
    storage = S3ArtifactStorage(bucket=BUCKET, prefix="tamper/", cache_dir=tmp_path / "c", multipart_mb=5)
    uri = storage.put(key="model.keras", source=source)
    s3.put_object(Bucket=BUCKET, Key="tamper/model.keras", Body=b"Original bytes")
    with pytest.raises(ChecksumMismatch):
        artifact_fetch_verified(uri=uri, sha256=sha256_file(source))
