"""Django project of the model-serving platform; importing it also loads the Celery app."""

from inference_project.celery_app import app as celery_app

__all__ = ["celery_app"]
