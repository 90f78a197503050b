"""Where artifact bytes live, behind one small interface with two implementations.

- `LocalArtifactStorage`: `local://<key>` under `ARTIFACTS_ROOT` (the default, one host).
- `S3ArtifactStorage`: `s3://<bucket>/<prefix><key>` through boto3 (multipart above
  `ARTIFACTS_S3_MULTIPART_MB`); downloads land in `ARTIFACT_CACHE_DIR/<sha256>/`, so a version
  is fetched once per host.

Small companion artifacts (preprocessing pickles, validation sets) are also cached in Redis,
keyed by checksum, so workers on many hosts read them without touching S3.
Every read for loading goes through `artifact_fetch_verified`, which checks the sha256 first.
"""

import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

import redis
from django.conf import settings

from inference_project.redis_clients import redis_sync

LOCAL_SCHEME = "local://"
S3_SCHEME = "s3://"
CHUNK = 1024 * 1024
REDIS_PREFIX = "inference:artifact:"

Progress = Callable[[int], None]


class ChecksumMismatch(Exception):
    """An artifact's bytes do not match the sha256 the registry recorded."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStorage(Protocol):
    def put(self, *, key: str, source: Path, progress: Progress | None = None) -> str:
        """Store `source` under `key` and return its URI."""

    def fetch(self, *, uri: str, sha256: str, progress: Progress | None = None) -> Path:
        """A readable local path holding the artifact's bytes (downloaded if needed, unverified)."""

    def delete(self, *, uri: str) -> None:
        """Remove the stored bytes (missing is fine)."""


class LocalArtifactStorage:
    """Artifacts in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, uri: str) -> Path:
        if not uri.startswith(LOCAL_SCHEME):
            raise ValueError(f"not a local artifact URI: {uri}")
        path = (self.root / uri.removeprefix(LOCAL_SCHEME)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact URI escapes the artifact root: {uri}")
        return path

    def put(self, *, key: str, source: Path, progress: Progress | None = None) -> str:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        if progress:
            progress(source.stat().st_size)
        return f"{LOCAL_SCHEME}{key}"

    def fetch(self, *, uri: str, sha256: str, progress: Progress | None = None) -> Path:
        return self._path(uri)

    def delete(self, *, uri: str) -> None:
        self._path(uri).unlink(missing_ok=True)


class S3ArtifactStorage:
    """Artifacts in an S3 bucket (or any S3-compatible server, via `AWS_ENDPOINT_URL`)."""

    def __init__(self, *, bucket: str, prefix: str, cache_dir: Path, multipart_mb: int) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig

        self.bucket = bucket
        self.prefix = prefix
        self.cache_dir = Path(cache_dir)
        self.client = boto3.client("s3")
        self.transfer = TransferConfig(
            multipart_threshold=multipart_mb * CHUNK, multipart_chunksize=multipart_mb * CHUNK
        )

    def _key(self, uri: str) -> str:
        head = f"{S3_SCHEME}{self.bucket}/"
        if not uri.startswith(head):
            raise ValueError(f"not an artifact URI of bucket {self.bucket}: {uri}")
        return uri.removeprefix(head)

    def put(self, *, key: str, source: Path, progress: Progress | None = None) -> str:
        object_key = f"{self.prefix}{key}"
        self.client.upload_file(str(source), self.bucket, object_key, Config=self.transfer, Callback=progress)
        return f"{S3_SCHEME}{self.bucket}/{object_key}"

    def fetch(self, *, uri: str, sha256: str, progress: Progress | None = None) -> Path:
        key = self._key(uri)
        target = self.cache_dir / sha256 / Path(key).name
        if target.exists() and sha256_file(target) == sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        # Download beside the target and rename, so readers never see a partial file.
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            partial = Path(tmp.name)
        try:
            self.client.download_file(self.bucket, key, str(partial), Config=self.transfer, Callback=progress)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def delete(self, *, uri: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(uri))


def storage_get() -> ArtifactStorage:
    if settings.ARTIFACT_STORAGE == "s3":
        return S3ArtifactStorage(
            bucket=settings.ARTIFACTS_S3_BUCKET,
            prefix=settings.ARTIFACTS_S3_PREFIX,
            cache_dir=Path(settings.ARTIFACT_CACHE_DIR),
            multipart_mb=settings.ARTIFACTS_S3_MULTIPART_MB,
        )
    return LocalArtifactStorage(Path(settings.ARTIFACTS_ROOT))


# --- Redis cache of small companions ----------------------------------------------------------


def _redis() -> redis.Redis:
    return redis_sync()


def redis_cache_key(sha256: str) -> str:
    return f"{REDIS_PREFIX}{sha256}"


def redis_cache_put(*, sha256: str, path: Path) -> bool:
    """Cache a small artifact's bytes in Redis; False when it is too large to cache."""
    if path.stat().st_size > settings.ARTIFACT_REDIS_MAX_BYTES:
        return False
    _redis().set(redis_cache_key(sha256), path.read_bytes())
    return True


def redis_cache_delete(*, sha256s: list[str]) -> int:
    if not sha256s:
        return 0
    return int(_redis().delete(*(redis_cache_key(s) for s in sha256s)))


def _from_redis(sha256: str, filename: str) -> Path | None:
    try:
        data = _redis().get(redis_cache_key(sha256))
    except redis.RedisError:
        return None
    if data is None:
        return None
    target = Path(settings.ARTIFACT_CACHE_DIR) / sha256 / filename
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + ".partial")
        partial.write_bytes(cast("bytes", data))  # no decode_responses: redis-py's bytes | str is bytes
        partial.replace(target)
    return target


def artifact_fetch_verified(
    *, uri: str, sha256: str, filename: str | None = None, progress: Progress | None = None
) -> Path:
    """A local path to the artifact after checking its sha256; raises ChecksumMismatch.

    Small companions come from the Redis cache when present, the rest from storage.
    """
    path = _from_redis(sha256, filename) if filename else None
    if path is None:
        path = storage_get().fetch(uri=uri, sha256=sha256, progress=progress)
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumMismatch(f"{uri}: sha256 is {actual}, the registry expects {sha256}")
    return path
