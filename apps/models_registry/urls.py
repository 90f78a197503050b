from django.urls import path

from apps.models_registry import apis
from apps.models_registry.services.rollouts import rollout_abort, rollout_advance, rollout_promote

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
    path(
        "api/v1/models/<slug:name>/rollouts/<int:rollout_id>/advance",
        apis.RolloutActionApi.as_view(
            act=rollout_advance, summary="Move a rollout to its next step now (from the last one: promote)"
        ),
    ),
    path(
        "api/v1/models/<slug:name>/rollouts/<int:rollout_id>/promote",
        apis.RolloutActionApi.as_view(act=rollout_promote, summary="Promote a rollout's candidate now"),
    ),
    path(
        "api/v1/models/<slug:name>/rollouts/<int:rollout_id>/abort",
        apis.RolloutActionApi.as_view(
            act=rollout_abort, summary="Abort a rollout: its candidate takes no more traffic"
        ),
    ),
]
