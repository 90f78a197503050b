"""Settings for `make run` on a developer machine."""

from inference_project.settings.base import *  # noqa: F403
from inference_project.settings.base import env

DEBUG = env.bool("DJANGO_DEBUG", default=False)
