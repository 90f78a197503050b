"""The registry's event log."""

from pathlib import Path

import pytest

from apps.models_registry.models import RegistryEvent
from tests.unit.apps.models_registry.helpers import register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def test_registry_events_are_append_only(demo_model_dir: Path) -> None:
    event = RegistryEvent.objects.get(action=RegistryEvent.Action.REGISTER, version=register(demo_model_dir))
    event.reason = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
