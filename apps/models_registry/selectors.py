"""Reads from the registry."""

from apps.models_registry.models import Deployment, ModelVersion


def model_version_get(*, model_name: str, number: int) -> ModelVersion | None:
    return ModelVersion.objects.select_related("model").filter(model__name=model_name, number=number).first()


def deployment_get_active(*, model_name: str, environment: str) -> Deployment | None:
    return (
        Deployment.objects.select_related("model", "version")
        .filter(model__name=model_name, environment=environment)
        .first()
    )


def deployment_list(*, environment: str) -> list[Deployment]:
    return list(Deployment.objects.select_related("model", "version").filter(environment=environment))


def model_version_list(*, model_name: str) -> list[ModelVersion]:
    return list(ModelVersion.objects.select_related("model").filter(model__name=model_name))
