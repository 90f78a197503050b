"""The release pipeline end to end on loopback with real protocols: a promotion in the registry →
the outbox task publishes to SNS (moto server, over HTTP) → the message as SNS delivers it to
Lambda → lambda_trigger.handler → python-jenkins starts exactly one build on a local server
that speaks Jenkins' REST API."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from pytest_django import Settings

from apps.models_registry.models import ModelVersion, OutboxEvent
from apps.models_registry.release import PublishFailed, outbox_publish_pending
from apps.models_registry.services.deployments import deployment_rollback, deployment_set
from apps.models_registry.services.registration import model_version_register
from lambda_trigger import handler as lambda_handler
from tests.jenkins_server import FakeJenkins
from tests.unit.apps.models_registry.helpers import served

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def aws(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


@pytest.fixture
def topic(aws: str, settings: Settings, tmp_path: Path, redis_server: str) -> dict[str, str]:
    """A FIFO topic for `dev` with an SQS queue subscribed, to read what SNS delivers."""
    name = f"release-dev-{uuid.uuid4().hex[:8]}"
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    arn = sns.create_topic(Name=f"{name}.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    subscription = sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
    settings.RELEASE_SNS_TOPIC_ARNS = {"dev": arn}
    settings.ARTIFACTS_ROOT = tmp_path / "artifacts"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    settings.REDIS_URL = redis_server
    redis.Redis.from_url(redis_server).flushdb()
    return {"arn": arn, "queue_url": queue_url, "subscription": subscription}


@pytest.fixture
def jenkins_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJenkins]:
    server = FakeJenkins()
    url = server.start()
    monkeypatch.setenv("JENKINS_URL", url)
    monkeypatch.setenv("JENKINS_USER", server.user)
    monkeypatch.setenv("JENKINS_API_TOKEN", server.token)
    monkeypatch.delenv("IDEMPOTENCY_TABLE", raising=False)
    lambda_handler._memory_claims.seen.clear()
    yield server
    server.stop()


def register(folder: Path) -> ModelVersion:
    card = json.loads((folder / "model_card.json").read_text())
    files = [p for p in folder.iterdir() if p.name != "model_card.json"]
    return model_version_register(
        name="digits", files=files, signature=card["signature"], metrics=card["metrics"]
    )


def lambda_events_from_sqs(topic: dict[str, str]) -> list[dict[str, Any]]:
    """What SNS delivered, wrapped the way SNS invokes a Lambda function."""
    sqs = boto3.client("sqs")
    records = []
    while messages := sqs.receive_message(QueueUrl=topic["queue_url"], MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            envelope = json.loads(message["Body"])  # the SNS notification as SNS sends it
            records.append(
                {
                    "EventSource": "aws:sns",
                    "EventVersion": "1.0",
                    "EventSubscriptionArn": topic["subscription"],
                    "Sns": envelope,
                }
            )
            sqs.delete_message(QueueUrl=topic["queue_url"], ReceiptHandle=message["ReceiptHandle"])
    return records


def test_promotion_reaches_jenkins_once(
    topic: dict[str, str], jenkins_server: FakeJenkins, demo_model_dir: Path
) -> None:
    version = register(demo_model_dir)
    deployment_set(version=version, environment="dev")
    event = OutboxEvent.objects.get()
    assert event.published_at is None

    assert outbox_publish_pending() == 1
    event.refresh_from_db()
    assert event.published_at is not None
    assert outbox_publish_pending() == 0  # nothing published twice

    records = lambda_events_from_sqs(topic)
    assert len(records) == 1
    assert records[0]["Sns"]["TopicArn"] == topic["arn"]
    summary = lambda_handler.handler({"Records": records}, None)
    assert [s["event_id"] for s in summary["started"]] == [str(event.event_id)]
    assert summary["started"][0]["job"] == "model-release-dev"

    (build,) = jenkins_server.builds
    assert jenkins_server.crumb_requests == 1
    assert build.job == "model-release-dev"
    params = build.parameters
    assert (params["MODEL"], params["VERSION"], params["ENVIRONMENT"], params["ACTION"]) == (
        "digits",
        "1",
        "dev",
        "promote",
    )
    assert params["EVENT_ID"] == str(event.event_id)
    artifacts = json.loads(params["ARTIFACTS"])
    assert {a["sha256"] for a in artifacts} == {a.sha256 for a in version.artifacts.all()}
    assert all(a["uri"].startswith("local://digits/1/") for a in artifacts)

    # SNS may deliver the same message again: one build only.
    again = lambda_handler.handler({"Records": records}, None)
    assert again["duplicates"] == [{"event_id": str(event.event_id)}]
    assert len(jenkins_server.builds) == 1


def test_rollback_and_malformed_records(
    topic: dict[str, str], jenkins_server: FakeJenkins, demo_model_dir: Path
) -> None:
    first, second = register(demo_model_dir), register(demo_model_dir)
    deployment_set(version=first, environment="dev")
    served(first)  # what a worker reports once it loaded it: a rollback goes back only to that
    deployment_set(version=second, environment="dev")
    deployment_rollback(model=first.model, environment="dev")
    assert outbox_publish_pending() == 3
    records = lambda_events_from_sqs(topic)
    assert len(records) == 3
    good = json.loads(records[0]["Sns"]["Message"])
    bad_records = [
        {"EventSource": "aws:sqs", "body": "{}"},
        {"EventSource": "aws:sns", "Sns": {"Message": "not json"}},
        {"EventSource": "aws:sns", "Sns": {"Message": json.dumps({**good, "event_id": "x"})}},
        {"EventSource": "aws:sns", "Sns": {"Message": json.dumps({**good, "version": 0})}},
        {
            "EventSource": "aws:sns",
            "Sns": {
                "Message": json.dumps(
                    {**good, "artifacts": [{"uri": "s3://b/k", "sha256": "z", "kind": "model"}]}
                )
            },
        },
    ]
    summary = lambda_handler.handler(
        {"Records": [bad_records[0], records[0], *bad_records[1:], *records[1:]]}, None
    )
    assert len(summary["started"]) == 3
    assert [r["record"] for r in summary["rejected"]] == [0, 2, 3, 4, 5]
    assert "sha256" in summary["rejected"][-1]["error"]
    actions = [
        (b.parameters["ACTION"], b.parameters["VERSION"], b.parameters["PREVIOUS_VERSION"])
        for b in jenkins_server.builds
    ]
    assert actions == [("promote", "1", ""), ("promote", "2", "1"), ("rollback", "1", "2")]


def test_jenkins_down_raises_for_lambda_to_retry(
    topic: dict[str, str], jenkins_server: FakeJenkins, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment_set(version=register(demo_model_dir), environment="dev")
    outbox_publish_pending()
    records = lambda_events_from_sqs(topic)
    monkeypatch.setenv("JENKINS_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(Exception, match=r"(?i)connect|refused|error"):
        lambda_handler.handler({"Records": records}, None)
    # Lambda retries the invocation; with Jenkins back, the build starts, once.
    monkeypatch.setenv("JENKINS_URL", f"http://127.0.0.1:{jenkins_server.server.server_address[1]}")
    assert len(lambda_handler.handler({"Records": records}, None)["started"]) == 1
    assert len(lambda_handler.handler({"Records": records}, None)["duplicates"]) == 1
    assert len(jenkins_server.builds) == 1


def test_dynamodb_claims_survive_across_containers(
    topic: dict[str, str], jenkins_server: FakeJenkins, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = f"release-claims-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "event_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "event_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv("IDEMPOTENCY_TABLE", table)
    deployment_set(version=register(demo_model_dir), environment="dev")
    outbox_publish_pending()
    records = lambda_events_from_sqs(topic)
    assert len(lambda_handler.handler({"Records": records}, None)["started"]) == 1
    lambda_handler._memory_claims.seen.clear()  # a different (cold) container
    assert len(lambda_handler.handler({"Records": records}, None)["duplicates"]) == 1
    assert len(jenkins_server.builds) == 1


def test_sns_refusal_keeps_the_event_pending(
    topic: dict[str, str], settings: Settings, demo_model_dir: Path
) -> None:
    settings.RELEASE_SNS_TOPIC_ARNS = {"dev": topic["arn"].replace("release-dev", "missing")}
    deployment_set(version=register(demo_model_dir), environment="dev")
    with pytest.raises(PublishFailed):
        outbox_publish_pending()
    event = OutboxEvent.objects.get()
    assert (event.published_at, event.attempts) == (None, 1)
    assert event.last_error


def test_without_a_topic_events_stay_local(
    topic: dict[str, str], settings: Settings, demo_model_dir: Path
) -> None:
    settings.RELEASE_SNS_TOPIC_ARNS = {}
    deployment_set(version=register(demo_model_dir), environment="dev")
    assert outbox_publish_pending() == 0
    assert OutboxEvent.objects.get().published_at is None
