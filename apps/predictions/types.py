"""What a transport adapter hands the data plane, and what it gets back.

Protocol-neutral: the native, TensorFlow Serving and Open Inference Protocol adapters all parse
into an `InferenceRequest` and render an `InferenceResponse` (or the data plane's `ApiError`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from apps.predictions.models import ApiKey
from apps.predictions.selectors import ServedModel
from inference_common.priority import DEFAULT as DEFAULT_PRIORITY

# The request's tensors, checked against the signature of the version that will serve it. The
# adapter knows its protocol's tensor format; only the data plane knows which version serves
# (and so which signature applies), so it calls this once it has resolved the route.
InputDecoder = Callable[[ServedModel], dict[str, np.ndarray]]


@dataclass(frozen=True)
class RequestContext:
    """What the transport carried beside the request itself: the `Authorization` value
    (`Bearer <key>`), the client's own deadline in seconds (None: the server's) and its
    idempotency key. Checked by the data plane, not by the adapter."""

    authorization: str = ""
    timeout_s: float | None = None
    idempotency_key: str | None = None
    # Sticky routing during a canary (X-Routing-Key): one key, one version. None: the API key.
    routing_key: str | None = None
    # X-Priority as sent (inference_common/priority.py reads it); None: the default level.
    priority: str | None = None


@dataclass(frozen=True)
class Caller:
    """Who asks (the authenticated API key; None when authentication is off) and on what terms:
    the data plane's reading of a `RequestContext`."""

    key: ApiKey | None
    deadline_s: float
    idempotency_key: str | None = None
    routing_key: str | None = None
    priority: str = DEFAULT_PRIORITY

    @property
    def owner(self) -> str:
        return str(self.key.pk) if self.key else "anonymous"

    @property
    def sticky_key(self) -> str:
        """What picks a canary's side: the client's routing key, else its API key."""
        return self.routing_key if self.routing_key is not None else f"key:{self.owner}"

    @property
    def rate(self) -> int:
        return self.key.rate if self.key else settings.INFERENCE_THROTTLE_PER_SECOND

    def allows(self, model: str) -> bool:
        return self.key is None or self.key.allows(model)

    @property
    def may_use_high_priority(self) -> bool:
        return self.key is None or self.key.may_use_high_priority


@dataclass(frozen=True)
class InferenceRequest:
    """One prediction: a model, perhaps a pinned version, and its inputs in protocol form."""

    model: str
    version: int | None
    inputs: InputDecoder


@dataclass(frozen=True)
class InferenceResponse:
    """The answer to one request: its id, the version that served it and the outputs by name."""

    id: str
    served: ServedModel
    outputs: dict[str, np.ndarray]

    @property
    def model(self) -> str:
        return self.served.name

    @property
    def version(self) -> int:
        return self.served.version
