"""AWS Lambda handler: a promotion's SNS message starts the Jenkins release job of its environment.

Event contract (the SNS message body, JSON, published by apps/models_registry/release.py):

    {
      "event_id": "<uuid>",                 unique per promotion/rollback; idempotency key
      "action": "promote" | "rollback" | "rollout_start" | "rollout_step"
                | "rollout_promote" | "rollout_rollback" | "rollout_abort",
      "model": "<slug>", "version": <int >= 1>, "previous_version": <int or null>,
      "environment": "<name>",              picks the Jenkins job (JENKINS_JOB_PATTERN)
      "artifacts": [{"filename", "kind", "uri", "sha256": <64 hex>, "size": <int>}, ...],
      "actor": "<who>", "occurred_at": "<ISO 8601>",
      "signer": "<trusted key's name>" | null   who signed the version (optional)
      "rollout": {"rollout": <id>, "strategy", "step", "weight", "mirror_percent", "state",
                  "figures"?: {...}}         rollout_* events only; version is the candidate
    }

Configuration (environment variables): JENKINS_URL, JENKINS_USER, JENKINS_API_TOKEN,
JENKINS_JOB_PATTERN (default "model-release-{environment}"), JENKINS_TIMEOUT_S (default 10),
IDEMPOTENCY_TABLE (DynamoDB table with partition key "event_id"; without it, duplicates are
only recognised within one warm Lambda container).

Behaviour: each record is validated on its own; a bad one is logged and reported under
"rejected" and never stops the others. An event id seen before is reported under "duplicates"
and starts nothing. If Jenkins cannot be reached the claim on the event id is released and the
handler raises, so Lambda's retry of the asynchronous invocation delivers it again.
Needs no Django: it is packaged alone (`make lambda-package`).
"""

import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jenkins

logger = logging.getLogger()
logger.setLevel(logging.INFO)

SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
ACTIONS = {
    "promote",
    "rollback",
    "rollout_start",
    "rollout_step",
    "rollout_promote",
    "rollout_rollback",
    "rollout_abort",
}
IDEMPOTENCY_TTL_S = 7 * 24 * 3600


class InvalidRecord(ValueError):
    """A record that does not follow the event contract."""


@dataclass(frozen=True)
class ReleaseEvent:
    event_id: str
    action: str
    model: str
    version: int
    previous_version: int | None
    environment: str
    artifacts: list[dict[str, Any]]
    actor: str
    signer: str = ""
    rollout: dict[str, Any] | None = None

    def jenkins_parameters(self) -> dict[str, str]:
        """The build parameters; deploy/Jenkinsfile declares exactly these."""
        return {
            "EVENT_ID": self.event_id,
            "ACTION": self.action,
            "MODEL": self.model,
            "VERSION": str(self.version),
            "PREVIOUS_VERSION": "" if self.previous_version is None else str(self.previous_version),
            "ENVIRONMENT": self.environment,
            "ARTIFACTS": json.dumps(
                [{"uri": a["uri"], "sha256": a["sha256"], "kind": a["kind"]} for a in self.artifacts],
                sort_keys=True,
            ),
            "ACTOR": self.actor,
            "SIGNER": self.signer,
            "ROLLOUT": "" if self.rollout is None else json.dumps(self.rollout, sort_keys=True),
        }


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidRecord(message)


def event_parse(record: object) -> ReleaseEvent:
    """Validate one SNS record of a Lambda event against the contract above."""
    if not isinstance(record, dict) or record.get("EventSource") != "aws:sns":
        raise InvalidRecord("not an SNS record")
    sns = record.get("Sns")
    if not isinstance(sns, dict) or not isinstance(sns.get("Message"), str):
        raise InvalidRecord("record has no Sns.Message")
    try:
        body = json.loads(sns["Message"])
    except json.JSONDecodeError as exc:
        raise InvalidRecord(f"message is not JSON: {exc}") from None
    _require(isinstance(body, dict), "message is not a JSON object")
    try:
        event_id = str(uuid.UUID(str(body.get("event_id"))))
    except ValueError:
        raise InvalidRecord("event_id must be a UUID") from None
    _require(body.get("action") in ACTIONS, f"action must be one of {sorted(ACTIONS)}")
    _require(isinstance(body.get("model"), str) and bool(SLUG.match(body["model"])), "model must be a slug")
    version = body.get("version")
    _require(
        isinstance(version, int) and not isinstance(version, bool) and version >= 1,
        "version must be an integer >= 1",
    )
    previous = body.get("previous_version")
    _require(
        previous is None or (isinstance(previous, int) and previous >= 1),
        "previous_version must be null or >= 1",
    )
    _require(
        isinstance(body.get("environment"), str) and bool(SLUG.match(body["environment"])),
        "environment must be a slug",
    )
    artifacts = body.get("artifacts")
    _require(isinstance(artifacts, list) and bool(artifacts), "artifacts must be a non-empty list")
    for artifact in artifacts:
        _require(isinstance(artifact, dict), "each artifact must be an object")
        _require(isinstance(artifact.get("uri"), str) and bool(artifact["uri"]), "artifact.uri is required")
        _require(
            isinstance(artifact.get("sha256"), str) and bool(SHA256.match(artifact["sha256"])),
            "artifact.sha256 must be 64 hex digits",
        )
        _require(isinstance(artifact.get("kind"), str), "artifact.kind is required")
    rollout = body.get("rollout")
    if body["action"].startswith("rollout_"):
        _require(
            isinstance(rollout, dict) and isinstance(rollout.get("rollout"), int),
            "rollout events need a rollout object with its id",
        )
    return ReleaseEvent(
        event_id=event_id,
        action=body["action"],
        model=body["model"],
        version=version,
        previous_version=previous,
        environment=body["environment"],
        artifacts=artifacts,
        actor=str(body.get("actor", "")),
        signer=str(body.get("signer") or ""),
        rollout=rollout if isinstance(rollout, dict) else None,
    )


class MemoryClaims:
    """Event ids seen by this container (used when no IDEMPOTENCY_TABLE is configured)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def claim(self, event_id: str) -> bool:
        if event_id in self.seen:
            return False
        self.seen.add(event_id)
        return True

    def release(self, event_id: str) -> None:
        self.seen.discard(event_id)


class DynamoClaims:
    """Event ids claimed with a conditional put: exactly one invocation wins an id."""

    def __init__(self, table: str) -> None:
        import boto3  # present in the Lambda runtime; only needed with a table

        self.table = table
        self.client = boto3.client("dynamodb")

    def claim(self, event_id: str) -> bool:
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "event_id": {"S": event_id},
                    "expires_at": {"N": str(int(time.time()) + IDEMPOTENCY_TTL_S)},
                },
                ConditionExpression="attribute_not_exists(event_id)",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release(self, event_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"event_id": {"S": event_id}})


_memory_claims = MemoryClaims()


def claims_get() -> MemoryClaims | DynamoClaims:
    table = os.environ.get("IDEMPOTENCY_TABLE")
    return DynamoClaims(table) if table else _memory_claims


def jenkins_get() -> jenkins.Jenkins:
    return jenkins.Jenkins(
        os.environ["JENKINS_URL"],
        username=os.environ.get("JENKINS_USER"),
        password=os.environ.get("JENKINS_API_TOKEN"),
        timeout=float(os.environ.get("JENKINS_TIMEOUT_S", "10")),
    )


def job_name(environment: str) -> str:
    return os.environ.get("JENKINS_JOB_PATTERN", "model-release-{environment}").format(
        environment=environment
    )


def handler(event: object, context: Any) -> dict[str, list[dict[str, Any]]]:
    """Start one Jenkins build per new, valid release event; see the module docstring."""
    summary: dict[str, list[dict[str, Any]]] = {"started": [], "duplicates": [], "rejected": []}
    records = event.get("Records", []) if isinstance(event, dict) else []
    claims = claims_get()
    server = None
    for index, record in enumerate(records):
        try:
            release = event_parse(record)
        except InvalidRecord as exc:
            logger.error("rejected record %d: %s", index, exc)
            summary["rejected"].append({"record": index, "error": str(exc)})
            continue
        if not claims.claim(release.event_id):
            logger.info("event %s already started a build; skipping", release.event_id)
            summary["duplicates"].append({"event_id": release.event_id})
            continue
        job = job_name(release.environment)
        try:
            server = server or jenkins_get()
            queue_item = server.build_job(job, parameters=release.jenkins_parameters())
        except Exception:
            claims.release(release.event_id)  # let Lambda's retry start it
            logger.exception("could not start %s for event %s", job, release.event_id)
            raise
        logger.info(
            "started %s for %s v%s (event %s, queue item %s)",
            job,
            release.model,
            release.version,
            release.event_id,
            queue_item,
        )
        summary["started"].append(
            {
                "event_id": release.event_id,
                "job": job,
                "queue_item": queue_item,
                "model": release.model,
                "version": release.version,
            }
        )
    return summary
