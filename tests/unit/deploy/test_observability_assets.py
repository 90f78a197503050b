"""deploy/prometheus, deploy/grafana and deploy/elk: checked with promtool and against each other."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "inference.json"
ELK = DEPLOY / "elk"


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool (Debian's prometheus package) is required: make test installs it")
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_prometheus_configs_are_valid(config: str) -> None:
    done = promtool("check", "config", "--syntax-only", str(PROMETHEUS / config))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(PROMETHEUS / "rules" / "inference.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "inference.test.yml", cwd=PROMETHEUS / "rules")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "rules" / "inference.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    # What the issues ask to alert on: errors, p99 latency, queue growth, no worker, drift, and a
    # rollout rolled back.
    assert {
        "InferenceHighErrorRate",
        "InferenceLatencyP99High",
        "InferenceQueueGrowing",
        "InferenceNoWorkerServing",
        "InferenceInputDrift",
        "InferencePredictionShift",
        "InferenceConfidenceDrop",
        "InferenceRolloutRolledBack",
    } <= alerts


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_parse_as_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, checked by promtool as a rule."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    filled = [e.replace("$__rate_interval", "1m").replace("$model", ".+") for e in exprs]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"panel:q{i}", "expr": e} for i, e in enumerate(filled)],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(tmp_path / "dashboard.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_has_the_panels_operators_need() -> None:
    text = " ".join(dashboard_exprs())
    for metric in (
        "inference_requests_total",  # requests/s, per-version traffic
        "inference_request_duration_seconds_bucket",  # p50/p95/p99
        "inference_queue_depth",
        "inference_batch_size_bucket",
        "inference_errors_total",
        "inference_worker_resident_memory_bytes",
        "node_cpu_seconds_total",  # host CPU via node exporter
        "inference_drift_input_psi_max",
        # Rollouts: weight per candidate, candidate vs live error rate and p99, agreement.
        "inference_rollout_weight_percent",
        "inference_rollout_error_ratio",
        "inference_rollout_p99_seconds",
        "inference_rollout_agreement_ratio",
    ):
        assert metric in text, metric
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml").read_text()
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert (
        f"./grafana/dashboards:{provisioning['providers'][0]['options']['path']}:ro"
        in compose["services"]["grafana"]["volumes"]
    )


def test_kibana_export_references_resolve_to_mapped_fields() -> None:
    objects = [json.loads(line) for line in (ELK / "kibana-dashboard.ndjson").read_text().splitlines()]
    ids = {(o["type"], o["id"]) for o in objects}
    template = json.loads((ELK / "index-template.json").read_text())
    mapped = set(template["template"]["mappings"]["properties"])
    (pattern,) = [o for o in objects if o["type"] == "index-pattern"]
    assert re.fullmatch(pattern["attributes"]["title"].replace("*", ".*"), "inference-logs-2026.11.25")
    assert template["index_patterns"] == [pattern["attributes"]["title"]]
    (dashboard,) = [o for o in objects if o["type"] == "dashboard"]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    assert {p["panelRefName"] for p in panels} == {r["name"] for r in dashboard["references"]}
    for obj in objects:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, ref
    for vis in (o for o in objects if o["type"] == "visualization"):
        state = json.loads(vis["attributes"]["visState"])
        fields = {a["params"]["field"] for a in state["aggs"] if "field" in a["params"]}
        query = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])["query"]["query"]
        fields |= set(re.findall(r"(\w+):", query))
        assert fields <= mapped, (vis["id"], fields - mapped)


def test_log_pipeline_parses_json_lines_into_the_templated_indices() -> None:
    filebeat = yaml.safe_load((ELK / "filebeat.yml").read_text())
    parsers = filebeat["filebeat.inputs"][0]["parsers"]
    assert {"ndjson"} <= {key for parser in parsers for key in parser}
    logstash = (ELK / "logstash.conf").read_text()
    index = re.search(r'index => "([^"%]+)', logstash)
    assert index and json.loads((ELK / "index-template.json").read_text())["index_patterns"] == [
        index.group(1) + "*"
    ]
    assert 'match => ["timestamp", "ISO8601"]' in logstash
