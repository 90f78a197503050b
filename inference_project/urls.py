from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.static import serve

from inference_project.openapi import schema_view

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    # Every public route's OpenAPI description; with or without the trailing slash.
    path("api/schema", schema_view),
    path("api/schema/", schema_view),
    path("", include("apps.predictions.urls")),
    path("", include("apps.models_registry.urls")),
]

if settings.SERVE_STATIC:
    urlpatterns.append(re_path(r"^static/(?P<path>.*)$", serve, {"document_root": settings.STATIC_ROOT}))

handler400 = "inference_project.views.bad_request"
handler403 = "inference_project.views.permission_denied"
handler404 = "inference_project.views.not_found"
handler500 = "inference_project.views.server_error"
