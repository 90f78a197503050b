"""The channel a deployment change is announced on, and its message.

The registry publishes `{"model", "version", "environment"}` on the environment's channel once a
promotion or rollback is committed; every worker child of that environment subscribed to it and
loads the new version beside the one it serves (workers/runtime.py).
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

    def encode(self) -> str:
        return json.dumps({"model": self.model, "version": self.version, "environment": self.environment})

    @classmethod
    def decode(cls, raw: bytes | str) -> "DeploymentChange":
        data = json.loads(raw)
        return cls(
            model=str(data["model"]), version=int(data["version"]), environment=str(data["environment"])
        )
