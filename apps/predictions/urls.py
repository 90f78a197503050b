from django.urls import path, register_converter
from django.views.decorators.csrf import csrf_exempt

from apps.predictions import apis


class JobIdConverter:
    regex = r"[0-9a-f]{12}\.[0-9a-f]{32}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(JobIdConverter, "job")


def exempt(view: type) -> object:
    # Bearer-key APIs carry no cookies, so CSRF does not apply.
    return csrf_exempt(view.as_view())


urlpatterns = [
    path("healthz", exempt(apis.LivenessApi)),
    path("readyz", exempt(apis.ReadinessApi)),
    path("api/schema", exempt(apis.SchemaApi)),
    path("metrics", exempt(apis.MetricsApi)),
    # native
    path("api/v1/predictions", exempt(apis.PredictionCreateApi)),
    path("api/v1/predictions/<job:job_id>", exempt(apis.PredictionDetailApi)),
    # TensorFlow Serving REST
    path("v1/models/<slug:name>:predict", exempt(apis.TfServingPredictApi)),
    path("v1/models/<slug:name>/versions/<int:version>:predict", exempt(apis.TfServingPredictApi)),
    path("v1/models/<slug:name>", exempt(apis.TfServingStatusApi)),
    path("v1/models/<slug:name>/versions/<int:version>", exempt(apis.TfServingStatusApi)),
    # Open Inference Protocol (KServe v2)
    path("v2", exempt(apis.V2ServerMetadataApi)),
    path("v2/health/live", exempt(apis.V2LiveApi)),
    path("v2/health/ready", exempt(apis.V2ReadyApi)),
    path("v2/models/<slug:name>", exempt(apis.V2ModelMetadataApi)),
    path("v2/models/<slug:name>/versions/<int:version>", exempt(apis.V2ModelMetadataApi)),
    path("v2/models/<slug:name>/ready", exempt(apis.V2ModelReadyApi)),
    path("v2/models/<slug:name>/versions/<int:version>/ready", exempt(apis.V2ModelReadyApi)),
    path("v2/models/<slug:name>/infer", exempt(apis.V2InferApi)),
    path("v2/models/<slug:name>/versions/<int:version>/infer", exempt(apis.V2InferApi)),
]
