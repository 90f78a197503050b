"""The first-run set-up (`manage.py platform_bootstrap`) piece by piece, against the test database,
a real Redis and the trained demo model: what the launcher then reads from its summary."""

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from apps.models_registry import selectors
from inference_project import bootstrap
from inference_project.bootstrap import BootstrapSummary
from tests.conftest import ROOT


def test_the_summary_holds_every_key_the_launcher_reads(tmp_path: Path) -> None:
    launcher = (ROOT / "inference_project" / "local_platform.py").read_text()
    read = set(re.findall(r"summary(?:\.get\(|\[)[\"'](\w+)[\"']", launcher))
    assert read == {"models", "demo_key", "environment", "admin_note"}
    assert read <= {f.name for f in fields(BootstrapSummary)}
    path = tmp_path / "run" / "bootstrap.json"
    bootstrap.summary_write(path=path, summary=BootstrapSummary("dev", ["digits"], "key", None))
    assert json.loads(path.read_text())["models"] == ["digits"]
    assert path.stat().st_mode & 0o077 == 0  # it holds the demo key


def test_prometheus_scrapes_the_api_each_model_worker_and_the_node_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {"API_HOST": "127.0.0.1", "API_PORT": "8001", "WORKER_METRICS_PORT": "9500"}.items():
        monkeypatch.setenv(name, value)
    bootstrap.prometheus_config_write(folder=tmp_path, models=["digits", "accel"], node_exporter=True)
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: json.loads(Path(job["file_sd_configs"][0]["files"][0]).read_text())[0]["targets"]
        for job in config["scrape_configs"]
    }
    assert targets["inference-api"] == ["127.0.0.1:8001"]
    assert targets["inference-worker"] == ["127.0.0.1:9500", "127.0.0.1:9501"]
    assert Path(config["rule_files"][0]).exists()


@pytest.mark.django_db
def test_admin_from_the_environment_or_generated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SUPERUSER_USERNAME", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    note = bootstrap.admin_ensure()
    assert note is not None and note.startswith("admin user created: admin / ")
    assert bootstrap.admin_ensure() is None  # a superuser exists: nothing printed again


@pytest.mark.django_db
def test_the_demo_model_is_registered_and_deployed_once(registry_settings: Any, demo_model_dir: Path) -> None:
    lines: list[str] = []
    bootstrap.demo_model_ensure(environment="dev", demo_dir=demo_model_dir, log=lines.append)
    deployment = selectors.deployment_get_active(model_name="digits", environment="dev")
    assert deployment is not None and deployment.version.number == 1
    assert deployment.version.framework == "keras"
    bootstrap.demo_model_ensure(environment="dev", demo_dir=demo_model_dir, log=lines.append)
    assert len(selectors.model_version_list(model_name="digits")) == 1
    assert lines == ["registered and deployed digits v1 to dev"]
