"""Django admin: browse the registry; staff with the permissions promote and roll back."""

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, IntegerField, Model, OuterRef, QuerySet, Subquery, Value, When
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from apps.models_registry import drift, selectors
from apps.models_registry.charts import bars_svg
from apps.models_registry.forms import RolloutStartForm
from apps.models_registry.models import (
    Artifact,
    Deployment,
    ModelVersion,
    OutboxEvent,
    RegisteredModel,
    RegistryEvent,
    Rollout,
    SignatureStatus,
)
from apps.models_registry.rollout_page import rollout_page_get, rollout_start_plan
from apps.models_registry.services.deployments import (
    ANY_LIVE,
    LiveVersionChanged,
    PromotionRefused,
    deployment_rollback,
    environment_next,
    environments_skipped,
    last_good_version,
    model_version_promote,
)
from apps.models_registry.services.rollouts import (
    rollout_abort,
    rollout_advance,
    rollout_promote,
    rollout_start,
)
from apps.models_registry.services.trust import version_trust_unsafe
from inference_project.redis_clients import redis_sync

_M = TypeVar("_M", bound=Model)

# The API serves no page at "/": no "View site" link, and the header names the platform.
admin.site.site_url = None
admin.site.site_header = "Keras inference platform"
admin.site.site_title = "Keras inference platform admin"
admin.site.index_title = "Registry and API keys"

# Registry times to the second, in the active time zone: a promotion and its rollback a few
# seconds apart must not read the same.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def _at_seconds(value: datetime | None) -> str:
    return timezone.localtime(value).strftime(TIME_FORMAT) if value else "-"


def _seconds_column(field: str, description: str) -> Callable[[Any, Any], str]:
    """A list/readonly column showing the datetime `field` with seconds, sortable by it."""

    @admin.display(description=description, ordering=field)
    def column(admin_: Any, obj: Any) -> str:
        return _at_seconds(getattr(obj, field))

    return column


def metric_value(value: Any) -> str:
    """A metric as the admin shows it: integers as integers, other numbers to 4 places."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _rows_table(rows: list[tuple[str, str]]) -> SafeString:
    if not rows:
        return format_html("{}", "-")
    body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', rows)
    return format_html('<table class="registry-values">{}</table>', body)


def _signature_rows(signature: dict[str, Any]) -> list[tuple[str, str]]:
    """A version's tensor signature as (what, description) rows: one per tensor, then the rest."""
    rows = []
    for role in ("inputs", "outputs"):
        for tensor in signature.get(role) or []:
            shape = ", ".join("any" if d in (-1, None) else str(d) for d in tensor.get("shape") or [])
            what = f"{role[:-1]} {tensor.get('name', '?')}"
            rows.append((what, f"{tensor.get('datatype', '?')} [{shape}]"))
    for key, value in signature.items():
        if key in ("inputs", "outputs"):
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
        rows.append((key.replace("_", " "), shown))
    return rows


def _pipeline_rank() -> Case:
    """A deployment's environment as its place in INFERENCE_ENVIRONMENTS (dev, staging, prod)."""
    environments = settings.INFERENCE_ENVIRONMENTS
    return Case(
        *[When(environment=name, then=Value(i)) for i, name in enumerate(environments)],
        default=Value(len(environments)),
        output_field=IntegerField(),
    )


def _pipeline_order(environments: list[str]) -> list[str]:
    known = settings.INFERENCE_ENVIRONMENTS
    return sorted(environments, key=lambda e: (known.index(e) if e in known else len(known), e))


PIPELINE_ORDERING = ("model__name", "environment_rank")


def _deployments_in_pipeline_order() -> QuerySet[Deployment]:
    """Deployments by model, then environment in pipeline order (dev, staging, prod), not
    alphabetical. Annotated before ordering: the admin's own get_queryset orders first."""
    return Deployment.objects.annotate(environment_rank=_pipeline_rank()).order_by(*PIPELINE_ORDERING)


class ReadOnlyAdmin(admin.ModelAdmin[_M]):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ArtifactInline(admin.TabularInline[Artifact, ModelVersion]):
    model = Artifact
    extra = 0
    fields = readonly_fields = ("kind", "filename", "uri_wrapped", "size", "sha256_wrapped", "pruned")
    can_delete = False
    pruned = _seconds_column("pruned_at", "pruned at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # Long URIs and checksums break anywhere rather than push the table past the page.
    @admin.display(description="URI")
    def uri_wrapped(self, artifact: Artifact) -> str:
        return format_html('<span style="word-break: break-all">{}</span>', artifact.uri)

    @admin.display(description="sha256")
    def sha256_wrapped(self, artifact: Artifact) -> str:
        return format_html('<code style="word-break: break-all">{}</code>', artifact.sha256)


# What a deployment shows, after its model and environment (the inline and the list).
DEPLOYMENT_COLUMNS = ("version", "previous_version", "last_good_version", "deployed", "served", "deployed_by")


class DeploymentInline(admin.TabularInline[Deployment, RegisteredModel]):
    model = Deployment
    fk_name = "model"
    extra = 0
    fields = readonly_fields = ("environment", *DEPLOYMENT_COLUMNS)
    can_delete = False
    deployed = _seconds_column("deployed_at", "deployed at")
    served = _seconds_column("served_at", "first served at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Deployment]:
        return _deployments_in_pipeline_order()


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin[RegisteredModel]):
    list_display = ("name", "gate_metric", "gate_minimum", "live_versions", "created")
    search_fields = ("name",)
    inlines = [DeploymentInline]
    created = _seconds_column("created_at", "created at")

    @admin.display(description="live")
    def live_versions(self, model: RegisteredModel) -> str:
        live = {d.environment: d.version.number for d in model.deployments.select_related("version")}
        return ", ".join(f"{env}: v{live[env]}" for env in _pipeline_order(list(live))) or "-"


def _metric_rows(version: ModelVersion, live: ModelVersion | None) -> list[dict[str, Any]]:
    names = sorted(set(version.metrics) | set(live.metrics if live else {}))
    rows = []
    for name in names:
        new, old = version.metrics.get(name), (live.metrics.get(name) if live else None)
        diff = new - old if isinstance(new, int | float) and isinstance(old, int | float) else None
        rows.append(
            {
                "name": name,
                "candidate": metric_value(new),
                "live": metric_value(old),
                "diff": "-" if diff is None else ("+" if diff > 0 else "") + metric_value(diff),
            }
        )
    return rows


def _share(counts: list[float] | None) -> list[float]:
    total = sum(counts or []) or 1
    return [c / total for c in counts or []]


def _drift_charts(version: ModelVersion, report: selectors.DriftReport) -> list[str]:
    reference, measures, summary = report.reference, report.measures, report.summary
    if reference is None:
        return []
    charts = []
    if measures is not None and summary is not None:
        psi = measures["feature_psi"]
        charts.append(
            bars_svg(
                [("PSI", psi)],
                [str(i) for i in range(len(psi))],
                title="PSI per input feature (live window vs validation set)",
                threshold=drift.ALERT_PSI,
            )
        )
        worst = int(max(range(len(psi)), key=psi.__getitem__))
        stats = cast("dict[str, Any]", version.reference_stats)  # set: `reference` was built from it
        edges = stats["inputs"]["edges"][worst]
        labels = [f"<{edges[0]:.3g}"] + [f"≥{e:.3g}" for e in edges]
        n = len(labels)
        charts.append(
            bars_svg(
                [
                    ("validation", list(reference.proportions[worst][:n])),
                    ("live", _share(summary["bins"][worst][:n])),
                ],
                labels,
                title=f"Feature {worst} (largest PSI): share of rows per bin",
            )
        )
    if reference.classes is not None:
        names = version.signature.get("class_names") or [str(i) for i in range(len(reference.classes))]
        live_classes = _share(summary["classes"]) if summary and summary.get("classes") else None
        series = [("validation", list(reference.classes))] + (
            [("live", live_classes)] if live_classes else []
        )
        charts.append(bars_svg(series, names, title="Predicted classes: share of rows"))
    if reference.confidence is not None:
        live_confidence = _share(summary["confidence"]) if summary and summary.get("confidence") else None
        series = [("validation", list(reference.confidence))]
        series += [("live", live_confidence)] if live_confidence else []
        bins = [f"{i / 10:.1f}" for i in range(10)]
        charts.append(bars_svg(series, bins, title="Confidence (top score): share of rows per 0.1 bin"))
    return charts


def _drift_features(report: selectors.DriftReport, top: int = 8) -> list[dict[str, Any]]:
    """The features with the largest PSI, reference vs live."""
    if report.measures is None or report.reference is None:
        return []
    measures, reference = report.measures, report.reference
    order = sorted(range(len(measures["feature_psi"])), key=lambda f: -measures["feature_psi"][f])
    return [
        {
            "index": f,
            "psi": measures["feature_psi"][f],
            "ref_mean": reference.mean[f],
            "ref_std": reference.std[f],
            "live_mean": measures["live_mean"][f],
            "live_std": measures["live_std"][f],
        }
        for f in order[:top]
    ]


def _signature_gate_line(*, version: ModelVersion, environment: str) -> str:
    """The signature gate as the promote page states it for `environment`."""
    status = version.get_signature_status_display() + (f" by {version.signer}" if version.signer else "")
    if environment not in settings.INFERENCE_REQUIRE_SIGNED_ENVIRONMENTS:
        return f"signature: not required in {environment} (this version: {status})"
    keys = ", ".join(settings.INFERENCE_TRUSTED_KEYS.get(environment, {})) or "none configured"
    return (
        f"signature: required in {environment}, by one of its trusted keys ({keys}); this version: {status}"
    )


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin[ModelVersion]):
    list_display = (
        "__str__",
        "accuracy",
        "environments",
        "signed",
        "drift_link",
        "created",
        "creator",
    )
    list_filter = ("model", "signature_status")
    # Named, so the raw JSON fields and the created_by account are not shown beside these.
    fields = readonly_fields = (
        "model",
        "number",
        "framework",
        "signature_table",
        "metrics_table",
        "signed",
        "signature_detail",
        "unsafe_trusted_reason",
        "drift_link",
        "notes",
        "created",
        "creator",
    )
    inlines = [ArtifactInline]
    actions = ["promote_next", "start_rollout", "trust_unsafe"]
    created = _seconds_column("created_at", "created at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        """Who registered each version, as its history names them (an account, or the --actor
        / OS user of register_model)."""
        registered = RegistryEvent.objects.filter(
            version=OuterRef("pk"), action=RegistryEvent.Action.REGISTER
        ).order_by("id")
        return super().get_queryset(request).annotate(registered_by=Subquery(registered.values("actor")[:1]))

    @admin.display(description="created by", ordering="registered_by")
    def creator(self, version: ModelVersion) -> str:
        name = getattr(version, "registered_by", None)
        if name:
            return str(name)
        return version.created_by.get_username() if version.created_by else "-"

    @admin.display(description="signature")
    def signature_table(self, version: ModelVersion) -> SafeString:
        return _rows_table(_signature_rows(version.signature or {}))

    @admin.display(description="metrics")
    def metrics_table(self, version: ModelVersion) -> SafeString:
        return _rows_table([(name, metric_value(value)) for name, value in sorted(version.metrics.items())])

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_trust_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_staff

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("models_registry.promote_deployment")

    @admin.display(description="accuracy")
    def accuracy(self, version: ModelVersion) -> str:
        return metric_value(version.metrics.get(version.model.gate_metric))

    @admin.display(description="live in")
    def environments(self, version: ModelVersion) -> str:
        return (
            ", ".join(_pipeline_order(list(version.deployments.values_list("environment", flat=True)))) or "-"
        )

    @admin.display(description="signed by")
    def signed(self, version: ModelVersion) -> str:
        """Who signed it and whether that verified, as checked at upload against every trusted key."""
        if version.signature_status == SignatureStatus.VERIFIED:
            return f"✔ {version.signer}"
        if version.signature_status == SignatureStatus.UNSIGNED:
            return "unsigned"
        return f"✘ {version.get_signature_status_display()}"

    @admin.display(description="drift")
    def drift_link(self, version: ModelVersion) -> str:
        url = reverse("admin:models_registry_modelversion_drift", args=[version.pk])
        return format_html('<a href="{}">live vs reference</a>', url)

    def get_urls(self) -> list[URLPattern]:
        drift_url = path(
            "<int:object_id>/drift/",
            self.admin_site.admin_view(self.drift_view),
            name="models_registry_modelversion_drift",
        )
        return [drift_url, *super().get_urls()]

    def drift_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Live traffic of this version against its validation set: the workers' windows."""
        version = get_object_or_404(ModelVersion.objects.select_related("model"), pk=object_id)
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        environment = request.GET.get("environment", settings.INFERENCE_ENVIRONMENT)
        report = selectors.drift_report_get(version=version, environment=environment, client=redis_sync())
        context = {
            **self.admin_site.each_context(request),
            "title": f"Drift: {version}",
            "opts": self.model._meta,
            "version": version,
            "environment": environment,
            "environments": settings.INFERENCE_ENVIRONMENTS,
            "report": report,
            "charts": [mark_safe(svg) for svg in _drift_charts(version, report)],  # noqa: S308 (built by bars_svg, escaped)
            "features": _drift_features(report),
            "thresholds": {"psi": drift.ALERT_PSI, "out_of_range": drift.ALERT_OUT_OF_RANGE_SHARE},
        }
        return TemplateResponse(request, "admin/models_registry/drift.html", context)

    @admin.action(description="Promote to next environment", permissions=["promote"])
    def promote_next(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        versions = list(queryset.select_related("model"))
        doubles = _versions_of_one_model(versions)
        if doubles:
            self.message_user(
                request,
                f"One version per model in one promotion: {doubles}. Nothing was promoted; select one.",
                messages.ERROR,
            )
            return None
        chosen = request.POST.get("environment") or ""
        reason = request.POST.get("reason", "")
        if request.POST.get("confirm") == "yes":
            for version in versions:
                self._promote(
                    request,
                    version,
                    environment=chosen or None,
                    reason=reason,
                    expect_live=_expected_live(request, version.pk),
                )
            return None
        plans = [_promotion_plan(version, environment=chosen or None) for version in versions]
        context = {
            **self.admin_site.each_context(request),
            "title": "Promote",
            "plans": plans,
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
            "environments": settings.INFERENCE_ENVIRONMENTS,
            "chosen": chosen,
            "reason": reason,
            "can_skip": request.user.is_superuser,
        }
        return TemplateResponse(request, "admin/models_registry/promote_confirm.html", context)

    @admin.action(description="Start a rollout…", permissions=["promote"])
    def start_rollout(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        """The form of a canary or shadow rollout of one version; confirmed, rollout_start runs
        (the gates first) and the rollout's page opens. A refusal is said, nothing starts."""
        versions = list(queryset.select_related("model"))
        if len(versions) != 1:
            self.message_user(request, "A rollout is of one version: select one.", messages.ERROR)
            return None
        version = versions[0]
        plan = rollout_start_plan(version=version, environments=settings.INFERENCE_ENVIRONMENTS)
        confirmed = request.POST.get("confirm") == "yes"
        form = RolloutStartForm(request.POST if confirmed else None, next_environment=plan.next_environment)
        if confirmed and form.is_valid():
            try:
                rollout = rollout_start(version=version, user=request.user, **form.rollout_arguments())
            except PromotionRefused as exc:
                failed = "Gate failed, nothing started." if exc.report else "Nothing started:"
                self.message_user(request, f"{failed} {exc}", messages.ERROR)
            except (PermissionDenied, ValidationError) as exc:
                self.message_user(
                    request, f"Nothing started. {version}: {_field_messages(exc)}", messages.ERROR
                )
            else:
                self.message_user(
                    request,
                    f"Started a {rollout.strategy} rollout of {version} in {rollout.environment}.",
                    messages.SUCCESS,
                )
                page = reverse("admin:models_registry_rollout_change", args=[rollout.pk])
                return HttpResponseRedirect(page)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Start a rollout of {version}",
            "version": version,
            "plan": plan,
            "form": form,
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/models_registry/rollout_start.html", context)

    @admin.action(
        description="Trust unsafe deserialization (superuser, with a reason)", permissions=["trust"]
    )
    def trust_unsafe(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        versions = list(queryset.select_related("model"))
        if request.POST.get("confirm") == "yes":
            reason = request.POST.get("reason", "")
            for version in versions:
                try:
                    version_trust_unsafe(version=version, user=request.user, reason=reason)
                except (PermissionDenied, ValidationError) as exc:
                    self.message_user(request, f"{version}: {'; '.join(_messages(exc))}", messages.ERROR)
                else:
                    self.message_user(
                        request, f"{version} may load with Keras' safe mode off.", messages.WARNING
                    )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Trust unsafe deserialization",
            "versions": versions,
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/models_registry/trust_confirm.html", context)

    def _promote(
        self,
        request: HttpRequest,
        version: ModelVersion,
        *,
        environment: str | None,
        reason: str,
        expect_live: int | None,
    ) -> None:
        try:
            deployment = model_version_promote(
                version=version,
                environment=environment,
                user=request.user,
                reason=reason,
                expect_live=expect_live,
            )
        except LiveVersionChanged as exc:
            self.message_user(request, f"{version}: {exc}", messages.ERROR)
        except PromotionRefused as exc:
            self.message_user(request, f"Gate failed, nothing changed. {exc}", messages.ERROR)
        except (PermissionDenied, ValidationError) as exc:
            self.message_user(request, f"{version}: {'; '.join(_messages(exc))}", messages.ERROR)
        else:
            self.message_user(
                request, f"{version} is now live in {deployment.environment}.", messages.SUCCESS
            )


def _expected_live(request: HttpRequest, pk: int) -> int | None:
    """The live version number the confirmation page showed for object `pk` (None: nothing)."""
    value = request.POST.get(f"expect_live_{pk}", "")
    if value == "none":
        return None
    return int(value) if value.isdigit() else ANY_LIVE


def _messages(exc: Exception) -> list[str]:
    return list(getattr(exc, "messages", None) or [str(exc)])


def _field_messages(exc: Exception) -> str:
    """A service's refusal in one line, each message after the field it is about."""
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{name}: {' '.join(said)}" for name, said in exc.message_dict.items())
    return "; ".join(_messages(exc))


def _versions_of_one_model(versions: list[ModelVersion]) -> str:
    """ "digits v1, v2" for every model with more than one of `versions`; "" when none has."""
    by_model: dict[str, list[int]] = {}
    for version in versions:
        by_model.setdefault(version.model.name, []).append(version.number)
    return "; ".join(
        f"{name} " + ", ".join(f"v{n}" for n in sorted(numbers))
        for name, numbers in sorted(by_model.items())
        if len(numbers) > 1
    )


def _promotion_plan(version: ModelVersion, *, environment: str | None) -> dict[str, Any]:
    """What the promote page shows for one version: target, skips, live version, gates, metrics."""
    try:
        target = environment or environment_next(version=version)
    except PromotionRefused as exc:
        return {"version": version, "error": str(exc)}
    if target not in settings.INFERENCE_ENVIRONMENTS:
        return {"version": version, "error": f"unknown environment {target!r}"}
    live = selectors.deployment_get_active(model_name=version.model.name, environment=target)
    if live is not None and live.version == version:
        return {"version": version, "error": f"{version} is already live in {target}"}
    return {
        "version": version,
        "target": target,
        "skipped": environments_skipped(version=version, environment=target),
        "live": live.version if live else None,
        "metrics": _metric_rows(version, live.version if live else None),
        "gates": [
            "checksum: every artifact matches its recorded sha256",
            _signature_gate_line(version=version, environment=target),
            "smoke: loads in a separate process and answers its validation set",
            f"metric: {version.model.gate_metric} ≥ {version.model.gate_minimum}",
        ],
    }


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin[Deployment]):
    list_display = ("model", "environment_column", *DEPLOYMENT_COLUMNS)
    list_filter = ("environment", "model")
    actions = ["roll_back"]
    deployed = _seconds_column("deployed_at", "deployed at")
    served = _seconds_column("served_at", "first served at")

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        return PIPELINE_ORDERING

    def get_queryset(self, request: HttpRequest) -> QuerySet[Deployment]:
        return _deployments_in_pipeline_order()

    @admin.display(description="environment", ordering="environment_rank")
    def environment_column(self, deployment: Deployment) -> str:
        return deployment.environment

    def has_rollback_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("models_registry.rollback_deployment")

    @admin.action(description="Roll back to the last good version", permissions=["rollback"])
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> HttpResponse | None:
        deployments = list(queryset.select_related("model", "version", "last_good_version"))
        if request.POST.get("confirm") == "yes":
            reason = request.POST.get("reason", "")
            for deployment in deployments:
                try:
                    result = deployment_rollback(
                        model=deployment.model,
                        environment=deployment.environment,
                        user=request.user,
                        reason=reason,
                        expect_live=_expected_live(request, deployment.pk),
                    )
                except (PromotionRefused, PermissionDenied) as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                else:
                    self.message_user(
                        request,
                        f"Rolled back in {result.environment}: {deployment.version} → {result.version}",
                        messages.SUCCESS,
                    )
            return None
        plans = [
            {
                "deployment": deployment,
                "target": last_good_version(
                    model=deployment.model, environment=deployment.environment, before_live=True
                ),
            }
            for deployment in deployments
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Roll back",
            "plans": plans,
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/models_registry/rollback_confirm.html", context)


@admin.register(RegistryEvent)
class RegistryEventAdmin(ReadOnlyAdmin[RegistryEvent]):
    list_display = (
        "created",
        "model",
        "action",
        "environment",
        "from_version",
        "to_version",
        "actor",
        "summary",
    )
    list_filter = ("action", "environment", "model")
    fields = readonly_fields = tuple(
        f.name if f.name != "created_at" else "created" for f in RegistryEvent._meta.fields if f.name != "id"
    )
    created = _seconds_column("created_at", "created at")

    @admin.display(description="details")
    def summary(self, event: RegistryEvent) -> str:
        gates = event.details.get("gates") if isinstance(event.details, dict) else None
        if gates:
            return "; ".join(
                f"{g['name']}: {'ok' if g['passed'] else 'FAILED'} ({g['detail']})" for g in gates
            )
        return event.reason or str(event.details.get("error", ""))[:200]


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin[OutboxEvent]):
    list_display = ("created", "topic", "__str__", "published", "attempts", "last_error")
    list_filter = ("topic",)
    fields = readonly_fields = tuple(
        {"created_at": "created", "published_at": "published"}.get(f.name, f.name)
        for f in OutboxEvent._meta.fields
        if f.name != "id"
    )
    created = _seconds_column("created_at", "created at")

    @admin.display(description="published at", ordering="published_at")
    def published(self, event: OutboxEvent) -> str:
        if event.published_at:
            return _at_seconds(event.published_at)
        if event.topic not in settings.RELEASE_SNS_TOPIC_ARNS:
            return f"not published: no SNS topic configured for {event.topic} (RELEASE_SNS_TOPIC_ARNS)"
        return "pending"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        missing = [e for e in settings.INFERENCE_ENVIRONMENTS if e not in settings.RELEASE_SNS_TOPIC_ARNS]
        if missing and request.method == "GET":  # an action's POST redirects here: said once
            self.message_user(
                request,
                f"No SNS topic configured for {', '.join(missing)} (RELEASE_SNS_TOPIC_ARNS): release "
                "events of these environments stay here, not published, and no Jenkins job runs.",
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)


# The rollout page's buttons: the service each calls and the permission it needs (the services'
# own: promotion's for advance and promote, rollback's for abort).
_ROLLOUT_ACTS: dict[str, tuple[Callable[..., Rollout], str]] = {
    "advance": (rollout_advance, "models_registry.promote_deployment"),
    "promote": (rollout_promote, "models_registry.promote_deployment"),
    "abort": (rollout_abort, "models_registry.rollback_deployment"),
}
# How often the page of a running rollout reloads itself (the analysis runs every 5 s).
ROLLOUT_PAGE_REFRESH_S = 5


def _rollout_acted(rollout: Rollout) -> str:
    """The success message of a rollout button."""
    candidate, environment = rollout.candidate, rollout.environment
    if rollout.state == Rollout.State.PROMOTED:
        return f"Promoted: {candidate} is now live in {environment}."
    if rollout.state == Rollout.State.ABORTED:
        return f"Aborted: {candidate} takes no more traffic; {rollout.baseline} stays live in {environment}."
    return (
        f"Advanced to step {rollout.step + 1} of {len(rollout.steps)}: {candidate} takes {rollout.weight} %."
    )


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin[Rollout]):
    """Rollouts as recorded; a rollout's page (its change view) is live: step, weights, the
    analysis' figures and charts, the decision log, and advance / promote now / abort."""

    list_display = (
        "created",
        "model",
        "environment",
        "candidate",
        "strategy",
        "state",
        "weight_shown",
        "waiting",
    )
    list_filter = ("state", "strategy", "environment", "model")
    fields = readonly_fields = tuple(f.name for f in Rollout._meta.fields if f.name != "id")
    created = _seconds_column("created_at", "created at")

    @admin.display(description="weight")
    def weight_shown(self, rollout: Rollout) -> str:
        return (
            f"{rollout.weight} %"
            if rollout.strategy == Rollout.Strategy.CANARY
            else f"mirror {rollout.mirror_percent} %"
        )

    @admin.display(description="next decision")
    def waiting(self, rollout: Rollout) -> str:
        analysis = rollout.analysis or {}
        if rollout.state != Rollout.State.RUNNING:
            return rollout.reason
        if analysis.get("waiting_for"):
            return f"waits for {analysis['waiting_for']} more samples"
        return str(analysis.get("decision", "not analysed yet"))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Rollout]:
        return super().get_queryset(request).select_related("model", "candidate__model", "baseline__model")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_staff

    def get_urls(self) -> list[URLPattern]:
        acts = [
            path(
                f"<int:object_id>/{act}/",
                self.admin_site.admin_view(self.act_view),
                {"act": act},
                name=f"models_registry_rollout_{act}",
            )
            for act in _ROLLOUT_ACTS
        ]
        return [*acts, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The rollout's live page instead of the read-only form."""
        rollout = self.get_object(request, object_id)
        if rollout is None:
            raise Http404(f"no rollout {object_id}")
        if not self.has_view_permission(request, rollout):
            raise PermissionDenied
        user = request.user
        page = rollout_page_get(rollout=rollout, client=redis_sync())
        context = {
            **self.admin_site.each_context(request),
            "title": f"Rollout {rollout.pk}: {rollout}",
            "opts": self.model._meta,
            "original": rollout,
            "page": page,
            "charts": [mark_safe(svg) for svg in page.charts],  # noqa: S308 (built by sparkline_svg, escaped)
            "can_promote": user.has_perm(_ROLLOUT_ACTS["promote"][1]),
            "can_abort": user.has_perm(_ROLLOUT_ACTS["abort"][1]),
            "refresh_s": ROLLOUT_PAGE_REFRESH_S,
        }
        return TemplateResponse(request, "admin/models_registry/rollout.html", context)

    def act_view(self, request: HttpRequest, object_id: int, act: str) -> HttpResponse:
        """A button of the rollout page: POST only, with the service's permission (else 403)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        service, perm = _ROLLOUT_ACTS[act]
        if not request.user.has_perm(perm):
            raise PermissionDenied
        rollout = get_object_or_404(
            Rollout.objects.select_related("model", "candidate__model", "baseline__model"), pk=object_id
        )
        try:
            acted = service(rollout=rollout, user=request.user, reason=request.POST.get("reason", ""))
        except PromotionRefused as exc:
            self.message_user(request, f"Nothing changed: {exc}", messages.ERROR)
        else:
            self.message_user(request, _rollout_acted(acted), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:models_registry_rollout_change", args=[rollout.pk]))
