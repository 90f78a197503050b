"""Registry REST endpoints: thin DRF views over the registry services (staff only)."""

import tempfile
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.http import Http404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.models_registry import selectors
from apps.models_registry.models import Deployment, ModelVersion, RegisteredModel, RegistryEvent, Rollout
from apps.models_registry.services.actors import User
from apps.models_registry.services.deployments import (
    LiveVersionChanged,
    PromotionRefused,
    deployment_rollback,
    deployment_rollout_record,
    model_version_promote,
)
from apps.models_registry.services.registration import model_card_register
from apps.models_registry.services.rollouts import RolloutRefused, rollout_start, rollout_thresholds
from inference_project.errors import error_body


def _deployment_body(deployment: Deployment) -> dict[str, Any]:
    previous, good = deployment.previous_version, deployment.last_good_version
    return {
        "model": deployment.model.name,
        "environment": deployment.environment,
        "version": deployment.version.number,
        "previous_version": previous.number if previous else None,
        "last_good_version": good.number if good else None,
        "served_at": deployment.served_at,
    }


def _model_or_404(name: str) -> RegisteredModel:
    model = selectors.model_get(name=name)
    if model is None:
        raise Http404(f"no model {name!r}")
    return model


def _version_or_404(model: RegisteredModel, number: int) -> ModelVersion:
    version = selectors.model_version_get(model_name=model.name, number=number)
    if version is None:
        raise Http404(f"{model.name} has no version {number}")
    return version


class VersionOutputSerializer(serializers.ModelSerializer[ModelVersion]):
    artifacts = serializers.SerializerMethodField()
    environments = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "number",
            "signature",
            "metrics",
            "notes",
            "created_at",
            "artifacts",
            "environments",
            "signature_status",
            "signer",
        ]

    def get_artifacts(self, version: ModelVersion) -> list[dict[str, Any]]:
        return [
            {
                "filename": a.filename,
                "kind": a.kind,
                "uri": a.uri,
                "size": a.size,
                "sha256": a.sha256,
                "pruned": bool(a.pruned_at),
            }
            for a in version.artifacts.all()
        ]

    def get_environments(self, version: ModelVersion) -> list[str]:
        return sorted(version.deployments.values_list("environment", flat=True))


class ModelOutputSerializer(serializers.ModelSerializer[RegisteredModel]):
    deployments = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "gate_metric", "gate_minimum", "created_at", "deployments"]

    def get_deployments(self, model: RegisteredModel) -> dict[str, Any]:
        return {
            d.environment: {
                "version": d.version.number,
                "previous_version": d.previous_version.number if d.previous_version else None,
                "last_good_version": d.last_good_version.number if d.last_good_version else None,
                "deployed_at": d.deployed_at,
                "served_at": d.served_at,
            }
            for d in model.deployments.all()
        }


class EventOutputSerializer(serializers.ModelSerializer[RegistryEvent]):
    class Meta:
        model = RegistryEvent
        fields = [
            "action",
            "environment",
            "from_version",
            "to_version",
            "actor",
            "reason",
            "details",
            "created_at",
        ]


class DeploymentOutputSerializer(serializers.Serializer[Any]):
    model = serializers.CharField()
    environment = serializers.CharField()
    version = serializers.IntegerField()
    previous_version = serializers.IntegerField(allow_null=True)
    last_good_version = serializers.IntegerField(
        allow_null=True,
        help_text="the live version once a worker served it, until then the last good version "
        "before it (the last a worker served here since it was last rolled back out): what serves "
        "while the live one cannot",
    )
    served_at = serializers.DateTimeField(
        allow_null=True, help_text="when a worker first served the live version (null: not yet)"
    )


class PromotionOutputSerializer(DeploymentOutputSerializer):
    gates = serializers.JSONField(help_text="the gate report the promotion passed")


class ModelDetailOutputSerializer(ModelOutputSerializer):
    versions = VersionOutputSerializer(many=True)

    class Meta(ModelOutputSerializer.Meta):
        fields = [*ModelOutputSerializer.Meta.fields, "versions"]


# The platform's error body (inference_project/drf.py), as the schema describes it.
ERROR = OpenApiResponse(
    inline_serializer(
        "Error",
        {
            "error": inline_serializer(
                "ErrorDetail",
                {
                    "code": serializers.CharField(),
                    "message": serializers.CharField(),
                    "field": serializers.CharField(required=False),
                },
            )
        },
    ),
    description="error",
)
ERRORS = {code: ERROR for code in (400, 401, 403, 404)}


class EnvironmentField(serializers.ChoiceField):
    """One of INFERENCE_ENVIRONMENTS, read when a serializer is built (DRF copies declared
    fields per serializer by calling __init__ again), so settings changed later apply."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=settings.INFERENCE_ENVIRONMENTS, **kwargs)


class VersionCreateInputSerializer(serializers.Serializer[Any]):
    files = serializers.ListField(child=serializers.FileField(), allow_empty=False)
    signature = serializers.JSONField(required=False)
    metrics = serializers.JSONField(required=False)
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    # A superuser's reason to let this version need Keras' unsafe deserialization.
    trust_unsafe_reason = serializers.CharField(required=False, allow_blank=True, default="")


class _ExpectLiveMixin(serializers.Serializer[Any]):
    # The version the caller saw live (the admin's confirmation page, a script's earlier read);
    # null: nothing live. Sent, and something else is live by then: refused, nothing changes.
    expect_live = serializers.IntegerField(min_value=1, allow_null=True, required=False)


class PromoteInputSerializer(_ExpectLiveMixin):
    version = serializers.IntegerField(min_value=1)
    environment = EnvironmentField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RollbackInputSerializer(_ExpectLiveMixin):
    environment = EnvironmentField(required=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class ReleaseReportInputSerializer(serializers.Serializer[Any]):
    environment = EnvironmentField()
    version = serializers.IntegerField(min_value=1)
    event_id = serializers.CharField(required=False, default="")
    build_url = serializers.URLField(required=False, default="")


def _expect_live(data: dict[str, Any]) -> dict[str, Any]:
    return {"expect_live": data["expect_live"]} if "expect_live" in data else {}


class ModelListApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(summary="Registered models", responses={200: ModelOutputSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        return Response(ModelOutputSerializer(selectors.model_list(), many=True).data)


class ModelDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="A model, its deployments and versions",
        responses={200: ModelDetailOutputSerializer, **ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        data = ModelOutputSerializer(model).data
        data["versions"] = VersionOutputSerializer(model.versions.all(), many=True).data
        return Response(data)


class ModelVersionListCreateApi(APIView):
    """GET the versions; POST a new one as multipart: `files` (repeated, `model_card.json` and
    an optional `model.sig` among them) and optionally `signature` / `metrics` fields (JSON)
    that win over the card's."""

    permission_classes = [IsAdminUser]
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="A model's versions", responses={200: VersionOutputSerializer(many=True), **ERRORS}
    )
    def get(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        return Response(VersionOutputSerializer(model.versions.all(), many=True).data)

    @extend_schema(
        summary="Register a version (multipart upload of its files)",
        request={"multipart/form-data": VersionCreateInputSerializer},
        responses={201: VersionOutputSerializer, **ERRORS},
    )
    def post(self, request: Request, name: str) -> Response:
        # Checked before the body is read (the service checks again): no upload is stored for
        # a user who may not register.
        if not request.user.has_perm("models_registry.add_modelversion"):
            return Response(
                error_body("permission_denied", "requires models_registry.add_modelversion"),
                status=status.HTTP_403_FORBIDDEN,
            )
        serializer = VersionCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        with tempfile.TemporaryDirectory() as folder:
            paths = []
            for upload in data["files"]:
                if upload.size > settings.ARTIFACT_MAX_UPLOAD_BYTES:
                    raise serializers.ValidationError(
                        {"files": [f"{upload.name} exceeds {settings.ARTIFACT_MAX_UPLOAD_BYTES} bytes"]}
                    )
                target = Path(folder) / Path(upload.name).name
                with target.open("wb") as handle:
                    for chunk in upload.chunks():
                        handle.write(chunk)
                paths.append(target)
            try:
                version = model_card_register(
                    files=paths,
                    name=name,
                    signature=data.get("signature"),
                    metrics=data.get("metrics"),
                    notes=data["notes"],
                    trust_unsafe_reason=data["trust_unsafe_reason"],
                    user=request.user,
                )
            except ValidationError as exc:
                # Keep the field a card error names ({"signature": [...]}) in the answer.
                detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
                raise serializers.ValidationError(detail) from exc
        return Response(VersionOutputSerializer(version).data, status=status.HTTP_201_CREATED)


class PromoteApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Promote a version (gates first) to the next or a chosen environment",
        request=PromoteInputSerializer,
        responses={200: PromotionOutputSerializer, 409: ERROR, 422: ERROR, **ERRORS},
    )
    def post(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        serializer = PromoteInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = _version_or_404(model, data["version"])
        try:
            deployment = model_version_promote(
                version=version,
                environment=data.get("environment"),
                user=request.user,
                reason=data["reason"],
                **_expect_live(data),
            )
        except LiveVersionChanged as exc:
            return Response(error_body("live_version_changed", str(exc)), status=status.HTTP_409_CONFLICT)
        except PromotionRefused as exc:
            body = error_body("promotion_refused", str(exc))
            if exc.report:
                body["gates"] = exc.report.as_dict()
            return Response(body, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        event = selectors.switch_event_latest(model=model, environment=deployment.environment)
        return Response({**_deployment_body(deployment), "gates": event.details if event else {}})


class RollbackApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Roll back to the last good version before the live one (the last a worker served "
        "there since it was last rolled back out)",
        request=RollbackInputSerializer,
        responses={200: DeploymentOutputSerializer, 409: ERROR, **ERRORS},
    )
    def post(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        serializer = RollbackInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            deployment = deployment_rollback(
                model=model,
                environment=data.get("environment", settings.INFERENCE_ENVIRONMENT),
                user=request.user,
                reason=data["reason"],
                **_expect_live(data),
            )
        except LiveVersionChanged as exc:
            return Response(error_body("live_version_changed", str(exc)), status=status.HTTP_409_CONFLICT)
        except PromotionRefused as exc:
            return Response(error_body("rollback_refused", str(exc)), status=status.HTTP_409_CONFLICT)
        return Response(_deployment_body(deployment))


class ReleaseReportApi(APIView):
    """The release pipeline's report: the version is deployed and answered its smoke test."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="The release pipeline reports a version deployed (the Jenkinsfile's last stage)",
        request=ReleaseReportInputSerializer,
        responses={201: EventOutputSerializer, 409: ERROR, **ERRORS},
    )
    def post(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        serializer = ReleaseReportInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            event = deployment_rollout_record(
                model=model,
                environment=data["environment"],
                version_number=data["version"],
                user=request.user,
                details={"event_id": data["event_id"], "build_url": data["build_url"]},
            )
        except PromotionRefused as exc:
            return Response(error_body("not_live", str(exc)), status=status.HTTP_409_CONFLICT)
        return Response(EventOutputSerializer(event).data, status=status.HTTP_201_CREATED)


class HistoryApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="A model's history, newest first", responses={200: EventOutputSerializer(many=True), **ERRORS}
    )
    def get(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        return Response(EventOutputSerializer(selectors.registry_history(model=model), many=True).data)


class RolloutOutputSerializer(serializers.ModelSerializer[Rollout]):
    candidate = serializers.IntegerField(source="candidate.number")
    baseline = serializers.IntegerField(source="baseline.number", help_text="what was live at its start")
    weight = serializers.IntegerField(help_text="the candidate's share (percent) of unpinned traffic now")
    thresholds = serializers.SerializerMethodField(help_text="what the analysis allows (defaults filled in)")

    class Meta:
        model = Rollout
        fields = [
            "id",
            "environment",
            "candidate",
            "baseline",
            "strategy",
            "state",
            "steps",
            "step",
            "weight",
            "mirror_percent",
            "dwell_s",
            "thresholds",
            "step_started_at",
            "analysis",
            "started_by",
            "created_at",
            "ended_at",
            "reason",
        ]

    def get_thresholds(self, rollout: Rollout) -> dict[str, float]:
        return rollout_thresholds(rollout=rollout)


class RolloutCreateInputSerializer(serializers.Serializer[Any]):
    version = serializers.IntegerField(min_value=1)
    environment = EnvironmentField(required=False)
    strategy = serializers.ChoiceField(choices=Rollout.Strategy.values)
    steps = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=100), required=False)
    mirror_percent = serializers.IntegerField(min_value=1, max_value=100, required=False)
    dwell_s = serializers.FloatField(min_value=0, required=False)
    thresholds = serializers.DictField(child=serializers.FloatField(min_value=0), required=False)
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RolloutActionInputSerializer(serializers.Serializer[Any]):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class RolloutListCreateApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="A model's rollouts, newest first",
        responses={200: RolloutOutputSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        return Response(RolloutOutputSerializer(selectors.rollout_list(model=model), many=True).data)

    @extend_schema(
        summary="Start a canary or shadow rollout of a version (gates first)",
        request=RolloutCreateInputSerializer,
        responses={201: RolloutOutputSerializer, 409: ERROR, 422: ERROR, **ERRORS},
    )
    def post(self, request: Request, name: str) -> Response:
        model = _model_or_404(name)
        serializer = RolloutCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = _version_or_404(model, data["version"])
        try:
            rollout = rollout_start(
                version=version,
                strategy=data["strategy"],
                environment=data.get("environment"),
                steps=data.get("steps"),
                mirror_percent=data.get("mirror_percent"),
                dwell_s=data.get("dwell_s"),
                thresholds=data.get("thresholds"),
                user=request.user,
                reason=data["reason"],
            )
        except ValidationError as exc:
            detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
            raise serializers.ValidationError(detail) from exc
        except RolloutRefused as exc:
            return Response(error_body("rollout_refused", str(exc)), status=status.HTTP_409_CONFLICT)
        except PromotionRefused as exc:
            body = error_body("promotion_refused", str(exc))
            if exc.report:
                body["gates"] = exc.report.as_dict()
            return Response(body, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
        return Response(RolloutOutputSerializer(rollout).data, status=status.HTTP_201_CREATED)


def _rollout_or_404(name: str, rollout_id: int) -> Rollout:
    rollout = selectors.rollout_get(model=_model_or_404(name), rollout_id=rollout_id)
    if rollout is None:
        raise Http404(f"{name} has no rollout {rollout_id}")
    return rollout


class RolloutDetailApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="One rollout, with its latest analysis", responses={200: RolloutOutputSerializer, **ERRORS}
    )
    def get(self, request: Request, name: str, rollout_id: int) -> Response:
        return Response(RolloutOutputSerializer(_rollout_or_404(name, rollout_id)).data)


class _RolloutAct(Protocol):
    """A rollout service an action view calls: rollout_advance, rollout_promote, rollout_abort."""

    def __call__(self, *, rollout: Rollout, user: User, reason: str) -> Rollout: ...


class _RolloutActionSchema(AutoSchema):
    """The schema's summary of a `RolloutActionApi` route is the one its as_view was given."""

    def get_summary(self) -> str | None:
        return getattr(self.view, "summary", None) or super().get_summary()


# POST …/rollouts/{id}/<action>: one view for advance, promote and abort; urls.py gives each route
# its service (`act`) and the schema's summary through as_view. (A docstring would become the
# schema's description of all three.)
class RolloutActionApi(APIView):
    permission_classes = [IsAdminUser]
    schema = _RolloutActionSchema()
    act: _RolloutAct | None = None
    summary = ""

    @extend_schema(
        request=RolloutActionInputSerializer,
        responses={200: RolloutOutputSerializer, 409: ERROR, **ERRORS},
    )
    def post(self, request: Request, name: str, rollout_id: int) -> Response:
        if self.act is None:
            raise ImproperlyConfigured("RolloutActionApi.as_view(act=...) names the rollout service")
        rollout = _rollout_or_404(name, rollout_id)
        serializer = RolloutActionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            acted = self.act(rollout=rollout, user=request.user, reason=serializer.validated_data["reason"])
        except PromotionRefused as exc:
            return Response(error_body("rollout_refused", str(exc)), status=status.HTTP_409_CONFLICT)
        acted.refresh_from_db()
        return Response(RolloutOutputSerializer(acted).data)
