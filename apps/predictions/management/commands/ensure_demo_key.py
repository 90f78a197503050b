import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.predictions.authentication import api_key_create


class Command(BaseCommand):
    help = "Create the demo API key from INFERENCE_DEMO_TOKEN (or a new random one); print it."

    def handle(self, *args: Any, **options: Any) -> None:
        _, raw = api_key_create(
            name="demo",
            raw_key=os.environ.get("INFERENCE_DEMO_TOKEN") or None,
            high_priority=settings.INFERENCE_DEMO_KEY_HIGH_PRIORITY,
        )
        self.stdout.write(raw)
