"""Django admin: browse the registry; staff with the permissions promote and roll back."""

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from apps.models_registry import selectors
from apps.models_registry.models import (
    Artifact,
    Deployment,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    RegistryEvent,
)
from apps.models_registry.services import (
    PromotionRefused,
    deployment_rollback,
    environment_next,
    model_version_promote,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    fields = readonly_fields = ("kind", "filename", "uri", "size", "sha256", "pruned_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeploymentInline(admin.TabularInline):
    model = Deployment
    fk_name = "model"
    extra = 0
    fields = readonly_fields = ("environment", "version", "previous_version", "deployed_at", "deployed_by")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "gate_metric", "gate_minimum", "live_versions", "created_at")
    search_fields = ("name",)
    inlines = [DeploymentInline]

    @admin.display(description="live")
    def live_versions(self, model: RegisteredModel) -> str:
        return ", ".join(f"{d.environment}: v{d.version.number}" for d in model.deployments.all()) or "-"


def _metric_rows(version: ModelVersion, live: ModelVersion | None) -> list[dict[str, Any]]:
    names = sorted(set(version.metrics) | set(live.metrics if live else {}))
    rows = []
    for name in names:
        new, old = version.metrics.get(name), (live.metrics.get(name) if live else None)
        diff = new - old if isinstance(new, int | float) and isinstance(old, int | float) else None
        rows.append({"name": name, "candidate": new, "live": old, "diff": diff})
    return rows


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "accuracy", "environments", "created_at", "created_by")
    list_filter = ("model",)
    readonly_fields = ("model", "number", "signature", "metrics", "notes", "created_at", "created_by")
    inlines = [ArtifactInline]
    actions = ["promote_next"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_staff

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("models_registry.promote_deployment")

    @admin.display(description="accuracy")
    def accuracy(self, version: ModelVersion) -> str:
        value = version.metrics.get(version.model.gate_metric)
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    @admin.display(description="live in")
    def environments(self, version: ModelVersion) -> str:
        return ", ".join(sorted(version.deployments.values_list("environment", flat=True))) or "-"

    @admin.action(description="Promote to next environment", permissions=["promote"])
    def promote_next(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        versions = list(queryset.select_related("model"))
        if request.POST.get("confirm") == "yes":
            for version in versions:
                self._promote(request, version)
            return None
        plans = []
        for version in versions:
            try:
                target = environment_next(version=version)
            except PromotionRefused as exc:
                plans.append({"version": version, "error": str(exc)})
                continue
            live = selectors.deployment_get_active(model_name=version.model.name, environment=target)
            plans.append(
                {
                    "version": version,
                    "target": target,
                    "live": live.version if live else None,
                    "metrics": _metric_rows(version, live.version if live else None),
                    "gates": [
                        "checksum: every artifact matches its recorded sha256",
                        "smoke: loads in a separate process and answers its validation set",
                        f"metric: {version.model.gate_metric} ≥ {version.model.gate_minimum}",
                    ],
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Promote to the next environment",
            "plans": plans,
            "queryset": queryset,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
            "environments": settings.INFERENCE_ENVIRONMENTS,
        }
        return TemplateResponse(request, "admin/models_registry/promote_confirm.html", context)

    def _promote(self, request: HttpRequest, version: ModelVersion) -> None:
        try:
            deployment = model_version_promote(version=version, user=request.user)
        except PromotionRefused as exc:
            self.message_user(request, f"Gate failed, nothing changed. {exc}", messages.ERROR)
        except (PermissionDenied, ValidationError) as exc:
            self.message_user(request, f"{version}: {exc}", messages.ERROR)
        else:
            self.message_user(
                request, f"{version} is now live in {deployment.environment}.", messages.SUCCESS
            )


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ("model", "environment", "version", "previous_version", "deployed_at", "deployed_by")
    list_filter = ("environment", "model")
    actions = ["roll_back"]

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("models_registry.rollback_deployment")

    @admin.action(description="Roll back to the previous version", permissions=["rollback"])
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        for deployment in queryset.select_related("model"):
            try:
                result = deployment_rollback(
                    model=deployment.model, environment=deployment.environment, user=request.user
                )
            except PromotionRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Rolled back: {result}", messages.SUCCESS)


@admin.register(RegistryEvent)
class RegistryEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "model",
        "action",
        "environment",
        "from_version",
        "to_version",
        "actor",
        "summary",
    )
    list_filter = ("action", "environment", "model")
    readonly_fields = [f.name for f in RegistryEvent._meta.fields]

    @admin.display(description="details")
    def summary(self, event: RegistryEvent) -> str:
        gates = event.details.get("gates") if isinstance(event.details, dict) else None
        if gates:
            return "; ".join(
                f"{g['name']}: {'ok' if g['passed'] else 'FAILED'} ({g['detail']})" for g in gates
            )
        return event.reason or str(event.details.get("error", ""))[:200]


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "topic", "__str__", "published_at", "attempts", "last_error")
    list_filter = ("topic",)
    readonly_fields = [f.name for f in OutboxEvent._meta.fields]
