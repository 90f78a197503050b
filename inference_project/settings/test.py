"""Settings for the unit tests: in-memory database, fast hashing, Celery never contacted."""

from inference_project.settings.base import *  # noqa: F403
from inference_project.settings.base import env

# In-memory SQLite unless DATABASE_URL names another database (pytest-django creates
# test_<name> on it); `pytest --postgres` starts a PostgreSQL of its own (tests/conftest.py).
DATABASES = {"default": env.db("DATABASE_URL", default="sqlite://:memory:")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
INFERENCE_REGISTRY_CACHE_S = 0.0
# Registration does not start a TensorFlow process per version; tests that need the reference
# statistics turn it on.
REGISTRY_PROFILE_ON_REGISTER = False
