"""Where artifact bytes live, behind one small interface.

A URI names an artifact independently of the machine: `local://<key>` resolves under
`settings.ARTIFACTS_ROOT`, so the API, workers and tests on one host agree on it.
"""

import hashlib
import shutil
from pathlib import Path
from typing import Protocol

from django.conf import settings

LOCAL_SCHEME = "local://"
CHUNK = 1024 * 1024


class ChecksumMismatch(Exception):
    """An artifact's bytes do not match the sha256 the registry recorded."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStorage(Protocol):
    def put(self, *, key: str, source: Path) -> str:
        """Store `source` under `key` and return its URI."""

    def local_path(self, *, uri: str) -> Path:
        """A readable local path for the artifact at `uri` (downloading it if needed)."""


class LocalArtifactStorage:
    """Artifacts in a local folder (the default, and what a single host needs)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, *, key: str, source: Path) -> str:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return f"{LOCAL_SCHEME}{key}"

    def local_path(self, *, uri: str) -> Path:
        if not uri.startswith(LOCAL_SCHEME):
            raise ValueError(f"not a local artifact URI: {uri}")
        path = (self.root / uri.removeprefix(LOCAL_SCHEME)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact URI escapes the artifact root: {uri}")
        return path


def storage_get() -> ArtifactStorage:
    return LocalArtifactStorage(Path(settings.ARTIFACTS_ROOT))


def artifact_fetch_verified(*, uri: str, sha256: str) -> Path:
    """Return a local path to the artifact after checking its sha256; refuse on mismatch."""
    path = storage_get().local_path(uri=uri)
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumMismatch(f"{uri}: sha256 is {actual}, the registry expects {sha256}")
    return path
