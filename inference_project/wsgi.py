"""WSGI entry point, for tools that want one; the platform itself runs under ASGI."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inference_project.settings.local")

application = get_wsgi_application()
