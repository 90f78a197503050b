"""API keys: clients authenticate with `Authorization: Bearer <key>`."""

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    """A client's key. Only its sha256 is stored; the key itself is shown once, at creation.

    Keys are 32 random bytes, so an unsalted sha256 is enough: there is nothing to brute-force.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, db_index=True, help_text="First characters, to tell keys apart")
    hashed_key = models.CharField(max_length=64, unique=True)
    # Empty: every model. Otherwise the names of the models this key may call.
    allowed_models = models.JSONField(default=list, blank=True)
    # Requests per second this key may send; empty: INFERENCE_THROTTLE_PER_SECOND, 0: no limit.
    rate_per_second = models.PositiveIntegerField(null=True, blank=True)
    # Whether requests with this key may ask for the highest priority level (inference_common/priority.py).
    may_use_high_priority = models.BooleanField(
        default=False, help_text="Requests with this key may ask for priority 'high' (X-Priority)."
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def rate(self) -> int:
        return (
            settings.INFERENCE_THROTTLE_PER_SECOND if self.rate_per_second is None else self.rate_per_second
        )

    def allows(self, model_name: str) -> bool:
        return not self.allowed_models or model_name in self.allowed_models
