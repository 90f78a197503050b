from collections.abc import Callable

from django.http import HttpResponseBase
from django.urls import path, register_converter
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from apps.predictions import apis
from apps.predictions.transports import native, tfserving, v2


class JobIdConverter:
    regex = r"[0-9a-f]{12}\.[0-9a-f]{32}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(JobIdConverter, "job")


def exempt(view: type[View]) -> Callable[..., HttpResponseBase]:
    # Bearer-key APIs carry no cookies, so CSRF does not apply.
    return csrf_exempt(view.as_view())


urlpatterns = [
    path("healthz", exempt(apis.LivenessApi)),
    path("readyz", exempt(apis.ReadinessApi)),
    path("metrics", exempt(apis.MetricsApi)),
    # native
    path("api/v1/predictions", exempt(native.PredictionCreateApi)),
    path("api/v1/predictions/<job:job_id>", exempt(native.PredictionDetailApi)),
    # TensorFlow Serving REST
    path("v1/models/<slug:name>:predict", exempt(tfserving.PredictApi)),
    path("v1/models/<slug:name>/versions/<int:version>:predict", exempt(tfserving.PredictApi)),
    path("v1/models/<slug:name>", exempt(tfserving.StatusApi)),
    path("v1/models/<slug:name>/versions/<int:version>", exempt(tfserving.StatusApi)),
    # Open Inference Protocol (KServe v2)
    path("v2", exempt(v2.ServerMetadataApi)),
    path("v2/health/live", exempt(v2.LiveApi)),
    path("v2/health/ready", exempt(v2.ReadyApi)),
    path("v2/models/<slug:name>", exempt(v2.ModelMetadataApi)),
    path("v2/models/<slug:name>/versions/<int:version>", exempt(v2.ModelMetadataApi)),
    path("v2/models/<slug:name>/ready", exempt(v2.ModelReadyApi)),
    path("v2/models/<slug:name>/versions/<int:version>/ready", exempt(v2.ModelReadyApi)),
    path("v2/models/<slug:name>/infer", exempt(v2.InferApi)),
    path("v2/models/<slug:name>/versions/<int:version>/infer", exempt(v2.InferApi)),
]
