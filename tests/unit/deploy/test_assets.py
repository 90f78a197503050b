"""Deployment assets, validated without a container engine or a cluster."""

import configparser
import json
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import kubernetes_validate
import pytest
import yaml

from lambda_trigger.handler import ACTIONS, InvalidRecord, ReleaseEvent, event_parse
from tests.conftest import ROOT
from tests.jenkins_server import FakeJenkins
from tests.unit.deploy import compose

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.32.0"
COMPOSE_SCHEMA = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    # compose's loader: plain YAML plus the !reset and !override tags of override files.
    assert [doc for doc in yaml.load_all(path.read_text(), compose.Loader) if doc is not None]


@pytest.mark.parametrize(
    "name",
    ["compose.yaml", "compose.dev.yaml", "compose.staging.yaml", "compose.prod.yaml", "compose.ha.yaml"],
)
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.validate(compose.load(DEPLOY / name), schema)


def test_compose_runs_every_part_with_health_checks() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    expected = {
        "redis",
        "redis-tensors",
        "postgres",
        "api",
        "worker-digits",
        "worker-platform",
        "flower",
        "prometheus",
        "grafana",
        "elasticsearch",
        "logstash",
        "kibana",
    }
    assert expected <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    tensors = services["redis-tensors"]["command"]
    assert tensors[tensors.index("--appendonly") + 1] == "no" and "noeviction" in tensors
    assert "@redis-tensors:6379" in services["api"]["environment"]["INFERENCE_TENSOR_REDIS_URL"]
    for name in expected - {"logstash", "worker-platform"}:
        assert "healthcheck" in services[name], name
    for overlay in ("dev", "staging", "prod"):
        override = yaml.safe_load((DEPLOY / f"compose.{overlay}.yaml").read_text())["services"]
        assert override["api"]["environment"]["INFERENCE_ENVIRONMENT"] == overlay


def rendered(overlay: str) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (kustomize) not installed; base manifests are checked separately")
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


KEDA_SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"]},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {"type": {"enum": ["redis", "redis-sentinel"]}},
                        # The Redis address, or the Sentinels' and the master's name (each given
                        # in the trigger or named as a variable of the scale target).
                        "if": {"properties": {"type": {"const": "redis"}}},
                        "then": {
                            "properties": {
                                "metadata": {
                                    "type": "object",
                                    "required": ["address", "listName", "listLength"],
                                }
                            }
                        },
                        "else": {
                            "properties": {
                                "metadata": {
                                    "type": "object",
                                    "required": ["listName", "listLength"],
                                    "anyOf": [
                                        {"required": ["addresses"]},
                                        {"required": ["addressesFromEnv"]},
                                    ],
                                    "oneOf": [
                                        {"required": ["sentinelMaster"]},
                                        {"required": ["sentinelMasterFromEnv"]},
                                    ],
                                }
                            }
                        },
                    },
                },
            },
        },
    },
}


def validate_manifests(docs: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            if doc["kind"] == "ScaledObject":
                jsonschema.validate(doc, KEDA_SCALED_OBJECT)
                target = deployments[doc["spec"]["scaleTargetRef"]["name"]]
                env = {
                    e["name"]: e.get("value")
                    for e in target["spec"]["template"]["spec"]["containers"][0]["env"]
                }
                assert doc["spec"]["triggers"][0]["metadata"]["listName"] == f"inference.{env['MODEL']}"
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["dev", "staging", "prod"])
def test_kustomize_overlays_render_valid_kubernetes(overlay: str) -> None:
    docs = rendered(overlay)
    validate_manifests(docs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "api"),
        ("HorizontalPodAutoscaler", "api"),
        ("Deployment", "worker-digits"),
        ("ScaledObject", "worker-digits"),
        ("StatefulSet", "redis"),
        ("Deployment", "redis-tensors"),
        ("Deployment", "flower"),
    } <= kinds
    assert all(
        d["metadata"].get("namespace") == f"inference-{overlay}" for d in docs if d["kind"] != "Namespace"
    )
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert config["data"]["INFERENCE_ENVIRONMENT"] == overlay


def test_base_manifests_are_valid_kubernetes() -> None:
    docs = [
        doc
        for path in sorted((DEPLOY / "k8s" / "base").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    validate_manifests(docs)


def test_jenkinsfile_parameters_match_what_the_lambda_sends() -> None:
    jenkinsfile = (DEPLOY / "Jenkinsfile").read_text()
    declared = set(re.findall(r"(?:string|text)\(name: '([A-Z_]+)'", jenkinsfile))
    sample = ReleaseEvent(
        str(uuid.uuid4()),
        "promote",
        "digits",
        2,
        1,
        "dev",
        [{"uri": "s3://b/k", "sha256": "0" * 64, "kind": "model"}],
        "ops",
    )
    assert declared == set(sample.jenkins_parameters())
    for stage in (
        "Unit tests",
        "Integration tests (Redis)",
        "Build and push images",
        "Deploy",
        "Smoke test",
        "Report back",
    ):
        assert f"stage('{stage}')" in jenkinsfile
    assert "/api/v1/models/${MODEL}/releases" in jenkinsfile
    assert "/rollouts" not in jenkinsfile  # the old path of the report, now the rollouts'
    for action in sorted(ACTIONS):
        assert f"'{action}'" in jenkinsfile or (action.startswith("rollout_") and "rollout_" in jenkinsfile)


def _sns(body: dict[str, object]) -> dict[str, object]:
    return {"EventSource": "aws:sns", "Sns": {"Message": json.dumps(body)}}


def test_the_lambda_accepts_rollout_events_and_passes_the_rollout_to_jenkins() -> None:
    body = {
        "event_id": str(uuid.uuid4()),
        "action": "rollout_step",
        "model": "digits",
        "version": 2,
        "previous_version": 1,
        "environment": "prod",
        "artifacts": [{"uri": "s3://b/k", "sha256": "0" * 64, "kind": "model"}],
        "actor": "rollout-analysis",
        "rollout": {"rollout": 3, "strategy": "canary", "step": 1, "weight": 25, "state": "running"},
    }
    event = event_parse(_sns(body))
    assert event.rollout == body["rollout"]
    assert json.loads(event.jenkins_parameters()["ROLLOUT"])["weight"] == 25
    with pytest.raises(InvalidRecord, match="rollout object"):
        event_parse(_sns({**body, "rollout": None}))
    assert (
        event_parse(_sns({**body, "action": "promote", "rollout": None})).jenkins_parameters()["ROLLOUT"]
        == ""
    )


@pytest.mark.parametrize("path", sorted((DEPLOY / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_are_multi_stage_non_root_and_install_like_the_makefile(path: Path) -> None:
    text = path.read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    assert re.search(r"^USER app$", text, re.MULTILINE)
    assert re.search(r"python -m pip install --quiet -r requirements[-a-z]*\.txt", text)
    makefile = (ROOT / "Makefile").read_text()
    assert "python -m pip install --quiet -r requirements-dev.txt" in makefile


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_api_image_has_no_tensorflow_and_the_same_pins() -> None:
    api, full = pins(ROOT / "requirements-api.txt"), pins(ROOT / "requirements.txt")
    assert not {name for name in api if name.lower().startswith(("tensorflow", "keras"))}
    assert all(full[name] == version for name, version in api.items())
    assert "requirements-api.txt" in (DEPLOY / "docker" / "api.Dockerfile").read_text()


def test_lambda_package_runs_without_django(tmp_path: Path) -> None:
    subprocess.run(["make", "lambda-package"], cwd=ROOT, check=True, capture_output=True)
    with zipfile.ZipFile(ROOT / "dist" / "lambda_trigger.zip") as package:
        names = package.namelist()
        assert "lambda_trigger/handler.py" in names
        assert not any(n.startswith("django/") for n in names)
        package.extractall(tmp_path / "task")  # as Lambda unpacks it into /var/task
    jenkins = FakeJenkins()
    url = jenkins.start()
    try:
        record = {
            "EventSource": "aws:sns",
            "Sns": {
                "Message": json.dumps(
                    {
                        "event_id": str(uuid.uuid4()),
                        "action": "promote",
                        "model": "digits",
                        "version": 3,
                        "previous_version": 2,
                        "environment": "prod",
                        "actor": "ops",
                        "occurred_at": "2026-11-25T00:00:00Z",
                        "artifacts": [
                            {
                                "filename": "model.keras",
                                "kind": "model",
                                "uri": "s3://b/digits/3/model.keras",
                                "sha256": "a" * 64,
                                "size": 1,
                            }
                        ],
                    }
                )
            },
        }
        probe = (
            "import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from lambda_trigger.handler import handler; "
            "print(json.dumps(handler(json.loads(sys.argv[2]), None)))"
        )
        env = {
            "JENKINS_URL": url,
            "JENKINS_USER": jenkins.user,
            "JENKINS_API_TOKEN": jenkins.token,
            "PATH": "/usr/bin:/bin",
        }
        # -S: no site-packages, so only the standard library and the package itself are importable.
        done = subprocess.run(
            [
                sys.executable,
                "-S",
                "-c",
                probe,
                str(tmp_path / "task"),
                json.dumps({"Records": [record, {"bad": 1}]}),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert [s["job"] for s in summary["started"]] == ["model-release-prod"]
        assert len(summary["rejected"]) == 1
        assert jenkins.builds[0].parameters["VERSION"] == "3"
    finally:
        jenkins.stop()


START_SCRIPTS = DEPLOY / "bin"
OUR_IMAGES = ("inference-api", "inference-worker", "inference-flower")


def _start_script(command: list[str] | str) -> str:
    """The deploy/bin script a container command runs (/app is the images' WORKDIR)."""
    first = command[0] if isinstance(command, list) else command
    assert first.startswith("/app/deploy/bin/"), command
    script = START_SCRIPTS / first.removeprefix("/app/deploy/bin/")
    assert script.is_file(), command
    return script.name


def test_process_file_lists_each_process_type_once_with_its_start_script() -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(DEPLOY / "circus.ini")
    commands = {
        s.removeprefix("watcher:"): parser[s]["cmd"] for s in parser.sections() if s.startswith("watcher:")
    }
    assert set(commands) >= {
        "redis",
        "redis-tensors",
        "bootstrap",
        "worker",
        "worker-platform",
        "api",
        "flower",
        "prometheus",
    }
    assert {cmd.split()[0] for cmd in commands.values()} == {f"deploy/bin/{name}" for name in commands}


def test_images_compose_and_kubernetes_run_the_start_scripts() -> None:
    for path in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        text = path.read_text()
        if "COPY --chown=app:app apps ./apps" not in text:
            continue  # the learning container runs workers.training.release only
        for package in ("inference_project", "inference_common", "apps", "deploy/bin"):
            assert f"COPY --chown=app:app {package} ./{package}" in text, (path.name, package)
        cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
        assert cmd, path.name
        _start_script(json.loads(cmd.group(1)))
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    ours = {name: s for name, s in services.items() if any(i in s.get("image", "") for i in OUR_IMAGES)}
    scripts = {name: _start_script(s["command"]) for name, s in ours.items()}
    assert scripts == {
        "migrate": "migrate",
        "api": "api",
        "worker-digits": "worker",
        "worker-platform": "worker-platform",
        "flower": "flower",
    }
    containers = [
        container
        for path in sorted((DEPLOY / "k8s" / "base").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["kind"] in {"Deployment", "Job"}
        for container in doc["spec"]["template"]["spec"]["containers"]
        if container["image"] in OUR_IMAGES
    ]
    assert {_start_script(c["command"]) for c in containers} == {
        "migrate",
        "api",
        "worker",
        "worker-platform",
        "flower",
    }
