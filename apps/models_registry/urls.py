from django.urls import path

from apps.models_registry import apis

urlpatterns = [
    path("api/v1/models", apis.ModelListApi.as_view()),
    path("api/v1/models/<slug:name>", apis.ModelDetailApi.as_view()),
    path("api/v1/models/<slug:name>/versions", apis.ModelVersionListCreateApi.as_view()),
    path("api/v1/models/<slug:name>/promote", apis.PromoteApi.as_view()),
    path("api/v1/models/<slug:name>/rollback", apis.RollbackApi.as_view()),
    path("api/v1/models/<slug:name>/history", apis.HistoryApi.as_view()),
    path("api/v1/models/<slug:name>/releases", apis.ReleaseReportApi.as_view()),
    # The release report's old path (docs/registry.md), until rollouts take it.
    path("api/v1/models/<slug:name>/rollouts", apis.LegacyReleaseReportApi.as_view()),
]
