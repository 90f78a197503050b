"""The channel a deployment change is announced on, and its message.

The registry publishes `{"model", "version", "environment", "retire_others"}` on the
environment's channel once a promotion or rollback is committed; every worker child of that
environment subscribed to it and loads the new version beside the one it serves
(workers/runtime.py). With `retire_others` (the default, and what a message without the field
means) the other versions of the model are retired after the grace period; without it the version
is only loaded beside them (a rollout's candidate, served beside the live version).
"""

import json
from dataclasses import dataclass


def deployments_channel(environment: str) -> str:
    return f"inference:deployments:{environment}"


@dataclass(frozen=True)
class DeploymentChange:
    model: str
    version: int
    environment: str
    retire_others: bool = True

    def encode(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "version": self.version,
                "environment": self.environment,
                "retire_others": self.retire_others,
            }
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> "DeploymentChange":
        data = json.loads(raw)
        return cls(
            model=str(data["model"]),
            version=int(data["version"]),
            environment=str(data["environment"]),
            retire_others=bool(data.get("retire_others", True)),
        )
