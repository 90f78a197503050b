"""The Celery application shared by the API (producer) and the workers (consumers)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_project.settings.local")

# Broker connections retry soon after a loss (inference_project/broker_reconnect.py).
app = Celery("inference_project", amqp="inference_project.broker_reconnect:ReconnectingAMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Worker-side modules; the API only sends tasks by name and never imports them.
app.conf.include = ["workers.tasks", "apps.models_registry.tasks"]
