"""The registry's REST endpoints: multipart upload, promote, rollback, history, permissions."""

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from apps.models_registry.models import ModelVersion
from inference_project.openapi import openapi_schema
from tests.unit.apps.models_registry.helpers import served

if TYPE_CHECKING:  # a name only django-stubs has: the test client's response
    from django.test.client import _MonkeyPatchedWSGIResponse

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def client_for(*perms: str, staff: bool = True) -> Client:
    user = get_user_model().objects.create_user(f"user{len(perms)}{staff}", password="pw", is_staff=staff)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


def upload(client: Client, folder: Path, name: str = "digits") -> "_MonkeyPatchedWSGIResponse":
    handles = [p.open("rb") for p in sorted(folder.iterdir())]
    try:
        return client.post(f"/api/v1/models/{name}/versions", {"files": handles, "notes": "from CI"})
    finally:
        for handle in handles:
            handle.close()


def test_upload_promote_rollback_history(demo_model_dir: Path) -> None:
    client = client_for("add_modelversion", "promote_deployment", "rollback_deployment")
    first = upload(client, demo_model_dir)
    assert first.status_code == 201, first.content
    body = first.json()
    assert body["number"] == 1
    assert body["notes"] == "from CI"
    assert {a["kind"] for a in body["artifacts"]} == {"model", "preprocessing", "validation", "other"}
    assert body["signature_status"] == "unsigned" and body["signer"] == ""
    assert upload(client, demo_model_dir).json()["number"] == 2

    promoted = client.post("/api/v1/models/digits/promote", {"version": 1}, content_type="application/json")
    assert promoted.status_code == 200, promoted.content
    assert promoted.json()["environment"] == "dev"
    assert promoted.json()["gates"]["passed"] is True
    served(ModelVersion.objects.get(model__name="digits", number=1))  # a worker loaded it
    second = client.post("/api/v1/models/digits/promote", {"version": 2}, content_type="application/json")
    assert second.json()["previous_version"] == 1

    listed = client.get("/api/v1/models").json()
    assert listed[0]["deployments"]["dev"]["version"] == 2
    rolled = client.post(
        "/api/v1/models/digits/rollback", {"environment": "dev"}, content_type="application/json"
    )
    assert rolled.status_code == 200
    assert (rolled.json()["version"], rolled.json()["previous_version"]) == (1, 2)

    history = client.get("/api/v1/models/digits/history").json()
    assert [e["action"] for e in history] == [
        "rollback",
        "promote",
        "served",
        "promote",
        "register",
        "register",
    ]
    detail = client.get("/api/v1/models/digits").json()
    assert [v["number"] for v in detail["versions"]] == [2, 1]


def test_failed_gate_answers_422_with_the_report(demo_model_dir: Path) -> None:
    client = client_for("add_modelversion", "promote_deployment")
    upload(client, demo_model_dir)
    from apps.models_registry.models import RegisteredModel

    RegisteredModel.objects.filter(name="digits").update(gate_minimum=0.9999)
    refused = client.post("/api/v1/models/digits/promote", {"version": 1}, content_type="application/json")
    assert refused.status_code == 422
    body = refused.json()
    assert body["error"]["code"] == "promotion_refused"
    assert [g["passed"] for g in body["gates"]["gates"]] == [True, True, True, False]
    assert client.get("/api/v1/models/digits").json()["deployments"] == {}


def test_bad_requests_name_the_field(demo_model_dir: Path, tmp_path: Path) -> None:
    client = client_for("add_modelversion", "promote_deployment")
    upload(client, demo_model_dir)
    bad_env = client.post(
        "/api/v1/models/digits/promote", {"version": 1, "environment": "qa"}, content_type="application/json"
    )
    assert bad_env.status_code == 400
    assert bad_env.json()["error"]["field"] == "environment"
    missing = client.post("/api/v1/models/digits/promote", {"version": 7}, content_type="application/json")
    assert missing.status_code == 404
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.keras").write_bytes(b"x")
    (evil / "run.sh").write_text("echo")
    (evil / "model_card.json").write_text((demo_model_dir / "model_card.json").read_text())
    refused = upload(client, evil)
    assert refused.status_code == 400
    assert "extension not allowed" in refused.json()["error"]["message"]
    no_card = tmp_path / "nocard"
    no_card.mkdir()
    (no_card / "model.keras").write_bytes(b"x")
    assert upload(client, no_card).json()["error"]["field"] == "signature"


def test_writes_need_staff_and_permissions(demo_model_dir: Path) -> None:
    anonymous = Client()
    assert anonymous.get("/api/v1/models").status_code == 403
    assert client_for(staff=False).get("/api/v1/models").status_code == 403
    reader = client_for()
    assert reader.get("/api/v1/models").status_code == 200
    assert upload(reader, demo_model_dir).status_code == 403
    uploader = client_for("add_modelversion")
    assert upload(uploader, demo_model_dir).status_code == 201
    denied = uploader.post("/api/v1/models/digits/promote", {"version": 1}, content_type="application/json")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"


def test_token_authentication_for_scripts(demo_model_dir: Path) -> None:
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_superuser("ops", password="pw")
    token = Token.objects.create(user=user)
    response = Client().get("/api/v1/models", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200
    assert json.loads(response.content) == []


def test_release_pipeline_reports_a_rollout(demo_model_dir: Path) -> None:
    client = client_for("add_modelversion", "promote_deployment")
    upload(client, demo_model_dir)
    upload(client, demo_model_dir)
    client.post("/api/v1/models/digits/promote", {"version": 1}, content_type="application/json")
    report = {
        "environment": "dev",
        "version": 1,
        "event_id": "e-1",
        "build_url": "https://jenkins.example.com/job/x/7/",
    }
    done = client.post("/api/v1/models/digits/releases", report, content_type="application/json")
    assert done.status_code == 201, done.content
    assert done.json()["action"] == "rolled_out"
    # The old path is the rollouts' now (docs/registry.md): a report sent there names what is missing.
    old = client.post("/api/v1/models/digits/rollouts", report, content_type="application/json")
    assert old.status_code == 400 and old.json()["error"]["field"] == "strategy"
    stale = client.post(
        "/api/v1/models/digits/releases", {**report, "version": 2}, content_type="application/json"
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "not_live"
    assert client.get("/api/v1/models/digits/history").json()[0]["details"]["build_url"].endswith("/7/")


def test_upload_without_a_card_sends_the_signature_as_fields(demo_model_dir: Path) -> None:
    client = client_for("add_modelversion")
    card = json.loads((demo_model_dir / "model_card.json").read_text())
    handles = [p.open("rb") for p in sorted(demo_model_dir.iterdir()) if p.name != "model_card.json"]
    try:
        answer = client.post(
            "/api/v1/models/digits/versions",
            {
                "files": handles,
                "signature": json.dumps(card["signature"]),
                "metrics": json.dumps({"accuracy": 0.5}),
            },
        )
    finally:
        for handle in handles:
            handle.close()
    assert answer.status_code == 201, answer.content
    assert answer.json()["metrics"] == {"accuracy": 0.5}
    assert answer.json()["signature"]["inputs"][0]["name"] == "pixels"


def test_rollouts_over_rest(demo_model_dir: Path) -> None:
    client = client_for("add_modelversion", "promote_deployment", "rollback_deployment")
    upload(client, demo_model_dir)
    upload(client, demo_model_dir)
    client.post("/api/v1/models/digits/promote", {"version": 1}, content_type="application/json")
    url = "/api/v1/models/digits/rollouts"
    bad = client.post(
        url, {"version": 2, "strategy": "canary", "steps": [10, 20]}, content_type="application/json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "steps"
    started = client.post(
        url,
        {"version": 2, "environment": "dev", "strategy": "canary", "steps": [50, 100], "dwell_s": 30},
        content_type="application/json",
    )
    assert started.status_code == 201, started.content
    rollout = started.json()
    assert (
        rollout["state"],
        rollout["step"],
        rollout["weight"],
        rollout["candidate"],
        rollout["baseline"],
    ) == (
        "running",
        0,
        50,
        2,
        1,
    )
    assert rollout["thresholds"]["min_samples"] == 100  # the defaults, filled in
    again = client.post(url, {"version": 2, "strategy": "shadow"}, content_type="application/json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "rollout_refused"
    assert [r["id"] for r in client.get(url).json()] == [rollout["id"]]
    one = f"{url}/{rollout['id']}"
    assert client.get(one).json()["dwell_s"] == 30
    assert client.post(f"{one}/advance", {}, content_type="application/json").json()["weight"] == 100
    aborted = client.post(f"{one}/abort", {"reason": "enough"}, content_type="application/json")
    assert (aborted.json()["state"], aborted.json()["reason"]) == ("aborted", "enough")
    ended = client.post(f"{one}/promote", {}, content_type="application/json")
    assert ended.status_code == 409 and "has ended" in ended.json()["error"]["message"]
    assert client.get(f"{url}/999").status_code == 404
    assert client.get("/api/v1/models/digits").json()["deployments"]["dev"]["version"] == 1

    second = client.post(url, {"version": 2, "strategy": "shadow"}, content_type="application/json")
    promoted = client.post(f"{url}/{second.json()['id']}/promote", {}, content_type="application/json")
    assert promoted.status_code == 200 and promoted.json()["state"] == "promoted"
    assert client.get("/api/v1/models/digits").json()["deployments"]["dev"]["version"] == 2
    reader = client_for()
    refused = reader.post(f"{url}/{second.json()['id']}/abort", {}, content_type="application/json")
    assert refused.status_code == 403


def test_each_rollout_action_keeps_its_summary_in_the_schema() -> None:
    paths = openapi_schema()["paths"]
    action = "/api/v1/models/{name}/rollouts/{rollout_id}/"
    assert {name: paths[action + name]["post"]["summary"] for name in ("advance", "promote", "abort")} == {
        "advance": "Move a rollout to its next step now (from the last one: promote)",
        "promote": "Promote a rollout's candidate now",
        "abort": "Abort a rollout: its candidate takes no more traffic",
    }
    assert paths[action + "abort"]["post"]["operationId"] == "models_rollouts_abort_create"
