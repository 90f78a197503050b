"""Peer (a): naive Celery serving, as the seed's tutorials write it: a sync Django view that
sends one task per request and blocks its thread on AsyncResult.get().

Served by gunicorn (threads) with DJANGO_ROOT_URLCONF=bench.peers.naive_urls and Celery's stock
Redis result backend; it uses the platform's workers and their unbatched `inference.predict`.
"""

import json
import os

import numpy as np
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from apps.models_registry.models import queue_name
from inference_common.task_names import PREDICT_TASK
from inference_common.wire import tensor_decode, tensor_encode
from inference_project.celery_app import app

MODEL = os.environ.get("NAIVE_MODEL", "digits")
VERSION = int(os.environ.get("NAIVE_VERSION", "1"))
INPUT, OUTPUT = os.environ.get("NAIVE_INPUT", "pixels"), os.environ.get("NAIVE_OUTPUT", "scores")


@csrf_exempt
def predict(request: HttpRequest) -> JsonResponse:
    rows = np.asarray(json.loads(request.body)["inputs"], dtype=np.float32)
    task = app.send_task(
        PREDICT_TASK,
        args=[{"model": MODEL, "version": VERSION, "inputs": {INPUT: tensor_encode(rows)}}],
        queue=queue_name(MODEL),
    )
    answer = task.get(timeout=60)
    return JsonResponse({"predictions": tensor_decode(answer["outputs"][OUTPUT]).tolist()})


urlpatterns = [path("predict", predict)]
