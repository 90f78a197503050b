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
    path("api/v1/models/<slug:name>/rollouts", apis.RolloutListCreateApi.as_view()),
    path("api/v1/models/<slug:name>/rollouts/<int:rollout_id>", apis.RolloutDetailApi.as_view()),
    path("api/v1/models/<slug:name>/rollouts/<int:rollout_id>/advance", apis.RolloutAdvanceApi.as_view()),
    path("api/v1/models/<slug:name>/rollouts/<int:rollout_id>/promote", apis.RolloutPromoteApi.as_view()),
    path("api/v1/models/<slug:name>/rollouts/<int:rollout_id>/abort", apis.RolloutAbortApi.as_view()),
]
