"""Registry REST endpoints: thin DRF views over the registry services (staff only)."""

import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.models_registry import selectors
from apps.models_registry.models import Deployment, ModelVersion, RegisteredModel, RegistryEvent
from apps.models_registry.services.deployments import (
    LiveVersionChanged,
    PromotionRefused,
    deployment_rollback,
    deployment_rollout_record,
    model_version_promote,
)
from apps.models_registry.services.registration import model_card_register
from inference_project.errors import error_body


def _deployment_body(deployment: Deployment) -> dict[str, Any]:
    previous = deployment.previous_version
    return {
        "model": deployment.model.name,
        "environment": deployment.environment,
        "version": deployment.version.number,
        "previous_version": previous.number if previous else None,
    }


def _model_or_404(name: str) -> RegisteredModel:
    model = selectors.model_get(name=name)
    if model is None:
        raise Http404(f"no model {name!r}")
    return model


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
                "deployed_at": d.deployed_at,
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
        version = selectors.model_version_get(model_name=model.name, number=data["version"])
        if version is None:
            raise Http404(f"{name} has no version {data['version']}")
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
        event = selectors.registry_history(model=model, limit=1)[0]
        return Response({**_deployment_body(deployment), "gates": event.details})


class RollbackApi(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Roll back to the last version live before the current one and never rolled back out",
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


class LegacyReleaseReportApi(ReleaseReportApi):
    """`POST .../rollouts` was the release report's path; canary and shadow rollouts will take
    the name. It answers as `.../releases` does until no Jenkinsfile in use calls it."""

    @extend_schema(
        deprecated=True,
        summary="Old path of the release report: use .../releases",
        request=ReleaseReportInputSerializer,
        responses={201: EventOutputSerializer, 409: ERROR, **ERRORS},
    )
    def post(self, request: Request, name: str) -> Response:
        return super().post(request, name)
