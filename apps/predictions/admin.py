from django.contrib import admin

from apps.predictions.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = ("name", "prefix", "allowed_models", "may_use_high_priority", "is_active", "created_at")
    readonly_fields = ("prefix", "hashed_key", "created_at")
