"""ASGI entry point: the API runs under uvicorn so views can await results without a thread."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_project.settings.local")

django_application = get_asgi_application()

from apps.predictions.fastpath import FastPath  # noqa: E402  (needs the app registry ready)
from apps.predictions.transports.v2_grpc import grpc_lifespan  # noqa: E402

# Prediction and health routes skip Django's middleware stack (see apps/predictions/fastpath.py);
# the lifespan serves the Open Inference Protocol over gRPC beside them, on the same event loop.
application = grpc_lifespan(FastPath(django_application))

from inference_project.heap import heap_freeze  # noqa: E402

# The imports and set-up above live as long as the process: full collections skip them.
heap_freeze()
