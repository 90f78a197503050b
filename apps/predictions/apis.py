"""The platform's own HTTP routes: liveness, readiness and Prometheus metrics (the OpenAPI
description is inference_project/openapi.py's). The prediction protocols' views are in transports/."""

from django.http import HttpRequest, HttpResponse
from django.views import View

from apps.predictions import dataplane
from apps.predictions.health import platform_gauges
from apps.predictions.transports.http import json_response
from inference_project.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inference_project.metrics import OneShot, metrics_text


class LivenessApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        return json_response({"status": "ok"})


class ReadinessApi(View):
    async def get(self, request: HttpRequest) -> HttpResponse:
        ready, details = await dataplane.server_ready()
        return json_response({"ready": ready, **details}, status=200 if ready else 503)


class MetricsApi(View):
    """Prometheus exposition: this API's (or, in multiprocess mode, all its processes')
    request metrics, plus queue depths and serving workers read from Redis now."""

    async def get(self, request: HttpRequest) -> HttpResponse:
        text = metrics_text(OneShot(await platform_gauges()))
        return HttpResponse(text, content_type=METRICS_CONTENT_TYPE)
