from django.contrib import admin

from apps.models_registry.models import Artifact, Deployment, ModelVersion, RegisteredModel


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    readonly_fields = ("kind", "filename", "uri", "size", "sha256")
    can_delete = False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "gate_metric", "gate_minimum", "created_at")
    search_fields = ("name",)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("__str__", "metrics", "created_at", "created_by")
    list_filter = ("model",)
    readonly_fields = ("model", "number", "signature", "metrics", "created_at", "created_by")
    inlines = [ArtifactInline]


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("model", "environment", "version", "deployed_at", "deployed_by")
    list_filter = ("environment", "model")
