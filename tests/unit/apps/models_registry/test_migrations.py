"""Migration 0008 reads the history written before workers reported what they served as it was
read then: every earlier stretch live counts as served, so an existing installation's rollback
still goes where it went before the upgrade."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = [("models_registry", "0007_rollouts")], [("models_registry", "0008_served")]


def test_the_history_before_served_reports_counts_every_stretch_as_served() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    model = old.get_model("models_registry", "RegisteredModel").objects.create(name="digits")
    version_model = old.get_model("models_registry", "ModelVersion")
    v1, v2 = (version_model.objects.create(model=model, number=n, signature={}) for n in (1, 2))
    events = old.get_model("models_registry", "RegistryEvent").objects
    for version, previous in ((v1, None), (v2, 1)):
        events.create(
            model=model,
            version=version,
            action="promote",
            environment="dev",
            from_version=previous,
            to_version=version.number,
        )
    old.get_model("models_registry", "Deployment").objects.create(
        model=model, environment="dev", version=v2, previous_version=v1, last_good_version=v2
    )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)

    from apps.models_registry.models import Deployment, RegisteredModel, RegistryEvent
    from apps.models_registry.services.deployments import last_good_version

    digits = RegisteredModel.objects.get(name="digits")
    served = RegistryEvent.objects.filter(action=RegistryEvent.Action.SERVED).order_by("created_at", "id")
    assert [(e.to_version, e.actor) for e in served] == [(1, "migration"), (2, "migration")]
    assert last_good_version(model=digits, environment="dev", before_live=True).number == 1  # type: ignore[union-attr]
    assert Deployment.objects.get(environment="dev").served_at is not None
