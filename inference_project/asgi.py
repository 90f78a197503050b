"""ASGI entry point: the API runs under uvicorn so views can await results without a thread."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_project.settings.local")

application = get_asgi_application()
