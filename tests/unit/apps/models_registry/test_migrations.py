"""Migration 0008 reads the history written before workers reported what they served as it was
read then: every earlier stretch live counts as served, except a live version that no worker
loaded (its deployment's last good version was another one), so an existing installation's
rollback and fallback go where they went before the upgrade."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = [("models_registry", "0007_rollouts")], [("models_registry", "0008_served")]


def test_the_history_before_served_reports_counts_every_loaded_stretch_as_served() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    model = old.get_model("models_registry", "RegisteredModel").objects.create(name="digits")
    version_model = old.get_model("models_registry", "ModelVersion")
    v1, v2 = (version_model.objects.create(model=model, number=n, signature={}) for n in (1, 2))
    events = old.get_model("models_registry", "RegistryEvent").objects
    deployments = old.get_model("models_registry", "Deployment").objects
    # staging: v1 then v2, which a worker loaded; dev: v1 then v2, which no worker loaded.
    for environment in ("staging", "dev"):
        for version, previous in ((v1, None), (v2, 1)):
            events.create(
                model=model,
                version=version,
                action="promote",
                environment=environment,
                from_version=previous,
                to_version=version.number,
            )
    deployments.create(
        model=model, environment="staging", version=v2, previous_version=v1, last_good_version=v2
    )
    deployments.create(model=model, environment="dev", version=v2, previous_version=v1, last_good_version=v1)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)

    from apps.models_registry.models import Deployment, RegisteredModel, RegistryEvent
    from apps.models_registry.services.deployments import last_good_version

    digits = RegisteredModel.objects.get(name="digits")
    served = RegistryEvent.objects.filter(action=RegistryEvent.Action.SERVED).order_by("id")
    assert [(e.environment, e.to_version, e.actor) for e in served] == [
        ("staging", 1, "migration"),
        ("staging", 2, "migration"),
        ("dev", 1, "migration"),
    ]
    good = {env: last_good_version(model=digits, environment=env) for env in ("staging", "dev")}
    before = {
        env: last_good_version(model=digits, environment=env, before_live=True) for env in ("staging", "dev")
    }
    assert {env: v.number if v else None for env, v in good.items()} == {"staging": 2, "dev": 1}
    assert {env: v.number if v else None for env, v in before.items()} == {"staging": 1, "dev": 1}
    assert Deployment.objects.get(environment="staging").served_at is not None
    assert Deployment.objects.get(environment="dev").served_at is None
