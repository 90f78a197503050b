"""Registering versions: checksummed artifacts, numbering, refused files and signatures, and
the model card (the one service the REST upload and `register_model` call)."""

import json
import shutil
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from apps.models_registry import selectors
from apps.models_registry.models import Artifact, ModelVersion
from apps.models_registry.services.registration import (
    MODEL_CARD_FILENAME,
    model_card_parse,
    model_card_register,
)
from apps.models_registry.storage import artifact_fetch_verified, sha256_file
from inference_common.task_names import PROFILE_VERSION_TASK
from inference_project.celery_app import app as celery_app
from tests.unit.apps.models_registry.helpers import register, staff

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


# --- the model card ------------------------------------------------------------------------------


def card_folder(demo_model_dir: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the demo model folder whose model card has `changes` (None removes a key)."""
    folder = tmp_path / "model"
    shutil.copytree(demo_model_dir, folder)
    card = json.loads((folder / MODEL_CARD_FILENAME).read_text())
    card.update(changes)
    card = {k: v for k, v in card.items() if v is not None}
    (folder / MODEL_CARD_FILENAME).write_text(json.dumps(card))
    return folder


def test_model_card_parse_reads_the_demo_card(demo_model_dir: Path) -> None:
    card = model_card_parse(text=(demo_model_dir / MODEL_CARD_FILENAME).read_text())
    assert card.name == "digits"
    assert card.signature is not None
    assert [t["name"] for t in card.signature["inputs"]] == ["pixels"]
    assert card.metrics["accuracy"] >= 0.9
    assert card.gate == {"metric": "accuracy", "minimum": 0.9}
    assert card.batching is None
    assert card.description.startswith("Keras CNN")


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("{not json", "model_card", "not valid JSON"),
        ("[1, 2]", "model_card", "must be a JSON object"),
        ('{"name": 7}', "name", "name must be a string"),
        ('{"signature": "pixels"}', "signature", "signature must be an object"),
        ('{"metrics": [0.9]}', "metrics", "metrics must be an object"),
        ('{"gate": {"metric": "accuracy"}}', "gate", "gate.minimum must be a number"),
        ('{"gate": {"minimum": "high"}}', "gate", "gate.minimum must be a number"),
        ('{"batching": {"max_batch_size": 0}}', "batching", "max_batch_size must be >= 1"),
        ('{"batching": {"max_delay_ms": -1}}', "batching", "max_delay_ms must be >= 0"),
    ],
)
def test_model_card_parse_names_the_wrong_field(text: str, field: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        model_card_parse(text=text)
    assert list(refused.value.message_dict) == [field]
    assert message in refused.value.message_dict[field][0]


def test_model_card_register_takes_everything_from_the_card(demo_model_dir: Path) -> None:
    files = sorted(demo_model_dir.iterdir())
    assert MODEL_CARD_FILENAME in {p.name for p in files}
    version = model_card_register(files=files, notes="first")
    model = version.model
    assert (model.name, version.number, version.notes) == ("digits", 1, "first")
    assert (model.gate_metric, model.gate_minimum) == ("accuracy", 0.9)
    assert model.description.startswith("Keras CNN")
    assert version.metrics["accuracy"] >= 0.9
    assert version.signature["outputs"][0]["name"] == "scores"
    # The card is kept with the version's artifacts: a signature covers it like the others.
    assert sorted(version.artifacts.values_list("filename", flat=True)) == [
        "model.keras",
        "model_card.json",
        "preprocessing.pickle",
        "validation.csv",
    ]


def test_what_the_caller_gives_wins_over_the_card(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = card_folder(demo_model_dir, tmp_path, batching={"max_batch_size": 8, "max_delay_ms": 1})
    card = json.loads((folder / MODEL_CARD_FILENAME).read_text())
    signature = {**card["signature"], "class_names": list("abcdefghij")}
    version = model_card_register(
        files=folder.iterdir(), name="renamed", signature=signature, metrics={"accuracy": 0.5}
    )
    assert version.model.name == "renamed"
    assert version.signature["class_names"][0] == "a"
    assert version.metrics == {"accuracy": 0.5}
    assert (version.model.max_batch_size, version.model.max_delay_ms) == (8, 1.0)


def test_model_card_register_without_a_card_needs_a_name_and_a_signature(demo_model_dir: Path) -> None:
    files = [p for p in demo_model_dir.iterdir() if p.name != MODEL_CARD_FILENAME]
    with pytest.raises(ValidationError) as no_name:
        model_card_register(files=files)
    assert list(no_name.value.message_dict) == ["name"]
    with pytest.raises(ValidationError) as no_signature:
        model_card_register(files=files, name="digits")
    assert list(no_signature.value.message_dict) == ["signature"]
    card = json.loads((demo_model_dir / MODEL_CARD_FILENAME).read_text())
    version = model_card_register(files=files, name="digits", signature=card["signature"])
    assert (version.number, version.metrics) == (1, {})


def test_model_card_register_refuses_bad_names_and_two_cards(demo_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as bad_name:
        model_card_register(files=demo_model_dir.iterdir(), name="no spaces/slashes")
    assert list(bad_name.value.message_dict) == ["name"]
    other = tmp_path / "other" / MODEL_CARD_FILENAME
    other.parent.mkdir()
    other.write_text((demo_model_dir / MODEL_CARD_FILENAME).read_text())
    with pytest.raises(ValidationError, match=r"send one model_card\.json"):
        model_card_register(files=[*demo_model_dir.iterdir(), other])


def test_model_card_register_deploys_without_gates_only_for_a_superuser(demo_model_dir: Path) -> None:
    version = model_card_register(files=demo_model_dir.iterdir(), deploy="dev")
    live = selectors.deployment_get_active(model_name="digits", environment="dev")
    assert live is not None
    assert live.version == version
    uploader = staff("add_modelversion")
    with pytest.raises(PermissionDenied, match="deploying without gates requires a superuser"):
        model_card_register(files=demo_model_dir.iterdir(), deploy="dev", user=uploader)
    with pytest.raises(PermissionDenied, match="add_modelversion"):
        model_card_register(files=demo_model_dir.iterdir(), user=staff_without_permissions())
    assert model_card_register(files=demo_model_dir.iterdir(), user=uploader).created_by == uploader


def staff_without_permissions() -> Any:
    return get_user_model().objects.create_user("reader", password="x", is_staff=True)


def test_model_card_register_requests_the_reference_statistics(
    demo_model_dir: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    settings.REGISTRY_PROFILE_ON_REGISTER = True
    settings.PROMOTION_GATE_RUNNER = "worker"
    sent: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args, queue: sent.append((name, args)))
    with django_capture_on_commit_callbacks(execute=True):
        version = model_card_register(files=demo_model_dir.iterdir())
    assert sent == [(PROFILE_VERSION_TASK, [version.pk])]


def test_the_upload_and_the_command_refuse_a_bad_card_alike(demo_model_dir: Path, tmp_path: Path) -> None:
    folder = card_folder(demo_model_dir, tmp_path, gate={"metric": "accuracy"})
    client = Client()
    client.force_login(staff("add_modelversion"))
    handles = [p.open("rb") for p in sorted(folder.iterdir())]
    try:
        answer = client.post("/api/v1/models/digits/versions", {"files": handles})
    finally:
        for handle in handles:
            handle.close()
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["field"] == "gate"
    with pytest.raises(CommandError) as refused:
        call_command("register_model", str(folder), stdout=StringIO(), verbosity=0)
    assert str(refused.value) == error["message"]
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize(
    ("framework", "runtime"),
    [(None, "keras"), ("simulated", "simulated"), ({"keras": "3.15.1"}, "keras")],
    ids=["absent", "a name", "name: version"],
)
def test_the_cards_framework_names_the_runtime(framework: Any, runtime: str) -> None:
    card: dict[str, Any] = {"name": "m"} if framework is None else {"name": "m", "framework": framework}
    assert model_card_parse(text=json.dumps(card)).framework == runtime


@pytest.mark.parametrize("framework", [3, {"keras": "3", "tf": "2"}, "onnx", "keras; rm -rf /"])
def test_a_framework_that_names_no_runtime_is_refused_naming_the_field(framework: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        model_card_parse(text=json.dumps({"name": "m", "framework": framework}))
    assert "framework" in refused.value.message_dict
