"""Artifacts that cannot run code and signed versions, on the running platform (a prod one: it
requires a signature from its trusted key "release"; the demo version it serves is signed).

Each hostile artifact would create a marker file if anything loaded it: it goes through the REST
upload (the API process checks it), `register_model --deploy` (the command), the promotion gate
(the platform worker's gate process) and, as a version registered before these checks existed,
straight to the workers (their children load it). The marker never appears, the live version
keeps answering correctly, and the history names every refusal.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inference_common.signing import SIGNATURE_FILENAME, files_sign
from tests.conftest import ROOT, Heldout
from tests.hostile import keras_lambda_write, key_pair, pickle_write, xlsx_formula_write
from tests.integration.conftest import Platform, platform_env, running_platform
from tests.integration.load import wait_ready, worker_children

pytestmark = pytest.mark.integration
HOSTILE = {
    "pickle": "preprocessing.pickle",
    "keras-lambda": "model.keras",
    "h5-lambda": "model.h5",
    "xlsx-formula": "validation.xlsx",
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    release, release_public = key_pair(folder, "release")
    return {"release": release, "release.pub": release_public}


def signed_copy(source: Path, target: Path, key: Path) -> Path:
    shutil.copytree(source, target)
    files = {p.name: p for p in target.iterdir() if p.name != SIGNATURE_FILENAME}
    files_sign(files, private_key=key, out=target / SIGNATURE_FILENAME)
    return target


@pytest.fixture(scope="module")
def prod(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path, keys: dict[str, Path]
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("trust")
    demo = signed_copy(demo_model_dir, root / "demo-signed", keys["release"])
    env = platform_env(
        root,
        demo,
        INFERENCE_ENVIRONMENT="prod",
        INFERENCE_REQUIRE_SIGNED_ENVIRONMENTS="prod",
        INFERENCE_TRUSTED_KEYS_PROD=f"release={keys['release.pub']}",
        INFERENCE_SWAP_GRACE_S="0.5",
        # The gates below run the same gate process on the platform worker; profiling each
        # registration there too would only queue them behind it.
        REGISTRY_PROFILE_ON_REGISTER="false",
    )
    with running_platform(root, env, "trust") as platform:
        wait_ready(platform)
        yield platform


@pytest.fixture(scope="module")
def staff(prod: Platform) -> Iterator[httpx.Client]:
    match = re.search(r"[0-9a-f]{40}", prod.manage("drf_create_token", "admin").stdout)
    assert match
    token = match.group(0)
    with httpx.Client(
        base_url=prod.base_url, headers={"Authorization": f"Token {token}"}, timeout=300
    ) as client:
        yield client


def upload(staff: httpx.Client, folder: Path) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(folder.iterdir())]
    return staff.post("/api/v1/models/digits/versions", files=files)


def unsigned_demo(platform: Platform, target: Path) -> Path:
    """The demo version's files as trained, without the signature the platform's copy carries."""
    shutil.copytree(platform.env["INFERENCE_DEMO_DIR"], target)
    (target / SIGNATURE_FILENAME).unlink()
    return target


def hostile_folder(kind: str, demo: Path, target: Path, marker: Path, key: Path) -> Path:
    """The demo version with one hostile artifact, signed with the trusted key: a signature
    vouches for who made a version, not for what loading it does."""
    shutil.copytree(demo, target)
    if kind == "pickle":
        pickle_write(target / "preprocessing.pickle", marker=marker)
    elif kind in {"keras-lambda", "h5-lambda"}:
        (target / "model.keras").unlink()
        keras_lambda_write(target / HOSTILE[kind], marker=marker)
        marker.unlink(missing_ok=True)  # saving it ran the lambda once, in the process that built it
    else:
        table = np.loadtxt(demo / "validation.csv", delimiter=",", skiprows=1)
        (target / "validation.csv").unlink()
        xlsx_formula_write(target / "validation.xlsx", rows=table[:, :-1], labels=table[:, -1])
    files = {p.name: p for p in target.iterdir()}
    files_sign(files, private_key=key, out=target / SIGNATURE_FILENAME)
    return target


LEGACY = """
from pathlib import Path
from apps.models_registry.services import registration
# A version registered by a release of the platform before these checks existed.
registration.artifacts_refuse = lambda **_: None
version = registration.model_card_register(files=sorted(Path({folder!r}).iterdir()))
print("registered", version.number)
"""


def legacy_register(platform: Platform, folder: Path) -> int:
    out = platform.manage("shell", "-c", textwrap.dedent(LEGACY.format(folder=str(folder)))).stdout
    return int(out.split("registered")[-1].split()[0])


DEPLOY_STRAIGHT = """
from apps.models_registry import selectors
from apps.models_registry.services.deployments import PromotionRefused, deployment_set
try:
    version = selectors.model_version_get(model_name="digits", number={number})
    deployment_set(version=version, environment="prod")
except PromotionRefused as exc:
    print(exc)
"""


def deploy_straight(platform: Platform, number: int) -> None:
    """Live in prod without gates, as `--deploy` or an operator with database access would
    (nothing to do when it is live already: an automatic rollback may have put it back)."""
    platform.manage("shell", "-c", DEPLOY_STRAIGHT.format(number=number))


def events(platform: Platform, action: str) -> list[dict[str, Any]]:
    out = platform.manage(
        "shell",
        "-c",
        "import json; from apps.models_registry.models import RegistryEvent as E; "
        f"found = E.objects.filter(action={action!r}); "
        "print(json.dumps([{'to': e.to_version, 'from': e.from_version, 'actor': e.actor, "
        "'details': e.details} for e in found]))",
    ).stdout
    result: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
    return result


DEPLOYED = (
    "from apps.models_registry import selectors; "
    "d = selectors.deployment_get_active(model_name='digits', environment='prod'); "
    "print(d.version.number, d.previous_version.number)"
)


def accuracy(platform: Platform, heldout: Heldout) -> tuple[float, set[int]]:
    rows, labels = heldout
    with platform.client() as client:
        bodies = [
            client.post("/api/v1/predictions", json={"model": "digits", "inputs": rows[i : i + 60]}).json()
            for i in range(0, len(rows), 60)
        ]
    assert all("labels" in body for body in bodies), bodies[:2]
    predicted = [int(label) for body in bodies for label in body["labels"]]
    return float(np.mean(np.array(predicted) == np.array(labels))), {b["version"] for b in bodies}


def wait_for(predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    return predicate()


class Stream:
    """A client posting one held-out digit in a loop: (status, version) of every answer."""

    def __init__(self, platform: Platform, row: list[float]) -> None:
        self.platform, self.row = platform, row
        self.answers: list[tuple[int, int | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.platform.client() as client:
            while not self.stop.is_set():
                try:
                    response = client.post(
                        "/api/v1/predictions", json={"model": "digits", "inputs": [self.row]}
                    )
                except httpx.HTTPError:
                    self.answers.append((0, None))  # no answer at all counts as a failure
                    continue
                version = response.json().get("version") if response.status_code == 200 else None
                self.answers.append((response.status_code, version))
                time.sleep(0.05)

    def __enter__(self) -> "Stream":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def test_hostile_artifacts_run_nowhere_and_the_live_version_keeps_serving(
    prod: Platform, staff: httpx.Client, tmp_path: Path, keys: dict[str, Path], heldout: Heldout
) -> None:
    """Also the broken deployments of "Progressive delivery": each hostile version deployed
    without gates cannot load anywhere, so it is rolled back to the last good version by
    itself; v1 answers throughout, and after a restart of every worker child."""
    marker = tmp_path / "code-ran"
    demo = unsigned_demo(prod, tmp_path / "demo")
    loaded: dict[str, int] = {}
    with Stream(prod, heldout[0][0]) as stream:
        _deploy_hostile_versions(
            prod=prod, staff=staff, tmp_path=tmp_path, keys=keys, demo=demo, marker=marker, loaded=loaded
        )
    statuses = [status for status, _ in stream.answers]
    assert len(statuses) > 50 and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {version for _, version in stream.answers} == {1}
    assert not marker.exists(), "an artifact ran code"
    score, versions = accuracy(prod, heldout)
    assert versions == {1} and score >= 0.9
    registration = {e["details"]["artifact"] for e in events(prod, "refused")}
    assert registration == set(HOSTILE.values())
    gate_failed = events(prod, "gate_failed")
    assert len(gate_failed) >= len(HOSTILE)


def automatic_rollbacks(platform: Platform) -> list[dict[str, Any]]:
    return [e for e in events(platform, "rollback") if e["actor"] == "auto-rollback"]


def _deploy_hostile_versions(
    *,
    prod: Platform,
    staff: httpx.Client,
    tmp_path: Path,
    keys: dict[str, Path],
    demo: Path,
    marker: Path,
    loaded: dict[str, int],
) -> None:
    """Each hostile artifact through the REST upload, the command, the gate and (deployed
    without gates) the workers, each rolled back by itself; then every worker child killed."""
    for kind, filename in HOSTILE.items():
        folder = hostile_folder(kind, demo, tmp_path / kind, marker, keys["release"])

        refused = upload(staff, folder)  # the API process checks the upload
        assert refused.status_code == 400, refused.text
        assert f"{filename}: refused" in refused.text

        command = subprocess.run(
            [sys.executable, "manage.py", "register_model", str(folder), "--deploy"],
            cwd=ROOT,
            env=prod.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert command.returncode != 0 and f"{filename}: refused" in command.stderr

        number = legacy_register(prod, folder)
        gate = staff.post("/api/v1/models/digits/promote", json={"version": number, "environment": "dev"})
        assert gate.status_code == 422, gate.text
        smoke = {g["name"]: g for g in gate.json()["gates"]["gates"]}["smoke"]
        assert not smoke["passed"] and f"{filename}: refused" in smoke["detail"]
        if kind != "xlsx-formula":  # workers never read validation sets
            deploy_straight(prod, number)
            loaded[filename] = number
            # It loads nowhere: back to v1 by itself before the next one is deployed.
            assert wait_for(lambda n=number: any(e["from"] == n for e in automatic_rollbacks(prod))), number

    def every_load_refused() -> list[dict[str, Any]]:
        found = events(prod, "load_failed")
        return found if {e["to"] for e in found} >= set(loaded.values()) else []

    failures = wait_for(every_load_refused)
    for filename, number in loaded.items():
        details = [e["details"] for e in failures if e["to"] == number]
        assert details and all(d["artifact"] == filename for d in details), (filename, details)

    automatic = automatic_rollbacks(prod)
    assert {e["from"] for e in automatic} == set(loaded.values())
    assert {e["to"] for e in automatic} == {1}
    assert all(e["details"]["failed_version"] == e["from"] for e in automatic)
    live = prod.manage("shell", "-c", DEPLOYED).stdout.split()
    assert live[-2:] == ["1", str(max(loaded.values()))], live  # v1 live, previous the last hostile one

    for child in worker_children(prod):  # every worker restarts: v1 is what they load
        os.kill(child, signal.SIGKILL)
    time.sleep(float(prod.env["INFERENCE_HEARTBEAT_TTL_S"]) + 0.5)
    wait_ready(prod)


def test_prod_serves_signed_versions_and_refuses_a_file_swapped_after_promotion(
    prod: Platform, staff: httpx.Client, tmp_path: Path, keys: dict[str, Path], heldout: Heldout
) -> None:
    demo = unsigned_demo(prod, tmp_path / "demo")
    unsigned = upload(staff, demo)
    assert unsigned.status_code == 201 and unsigned.json()["signature_status"] == "unsigned"
    refused = staff.post(
        "/api/v1/models/digits/promote",
        json={"version": unsigned.json()["number"], "environment": "prod", "reason": "hotfix"},
    )
    assert refused.status_code == 422
    signature_gate = {g["name"]: g for g in refused.json()["gates"]["gates"]}["signature"]
    assert not signature_gate["passed"] and "prod requires a signature" in signature_gate["detail"]

    signed = upload(staff, signed_copy(demo, tmp_path / "signed", keys["release"]))
    body = signed.json()
    assert (body["signature_status"], body["signer"]) == ("verified", "release")
    number = body["number"]
    promoted = staff.post(
        "/api/v1/models/digits/promote", json={"version": number, "environment": "prod", "reason": "hotfix"}
    )
    assert promoted.status_code == 200, promoted.text
    assert wait_for(lambda: accuracy(prod, heldout)[1] == {number}), "the signed version never served"
    staff.post("/api/v1/models/digits/rollback", json={"environment": "prod"}).raise_for_status()
    assert wait_for(lambda: accuracy(prod, heldout)[1] == {1})
    # Fresh worker children hold only what is deployed (v1), so the next load reads storage.
    for child in worker_children(prod):
        os.kill(child, signal.SIGKILL)
    time.sleep(float(prod.env["INFERENCE_HEARTBEAT_TTL_S"]) + 0.5)  # the killed children's marks age out
    wait_ready(prod)
    assert wait_for(lambda: accuracy(prod, heldout)[1] == {1})

    # Someone with write access to storage and the database swaps the preprocessing companion
    # (an allowed pickle, other numbers) and its recorded sha256: only the signature catches it.
    swap = textwrap.dedent(f"""
        import pickle, numpy as np
        from pathlib import Path
        from sklearn.preprocessing import StandardScaler
        from apps.models_registry.models import Artifact
        from apps.models_registry.storage import sha256_file
        artifact = Artifact.objects.get(version__number={number}, filename="preprocessing.pickle")
        path = Path({prod.env["ARTIFACTS_ROOT"]!r}) / "digits" / "{number}" / "preprocessing.pickle"
        path.write_bytes(pickle.dumps({{"scaler": StandardScaler().fit(np.zeros((2, 64)))}}))
        Artifact.objects.filter(pk=artifact.pk).update(sha256=sha256_file(path), size=path.stat().st_size)
    """)
    prod.manage("shell", "-c", swap)
    deploy_straight(prod, number)

    failures = wait_for(lambda: [e for e in events(prod, "load_failed") if e["to"] == number])
    assert failures and all(e["details"]["artifact"] == SIGNATURE_FILENAME for e in failures)
    assert "Signature mismatch" in failures[0]["details"]["reason"]
    score, versions = accuracy(prod, heldout)
    assert versions == {1} and score >= 0.9
    deploy_straight(prod, 1)
