"""The API process must never load TensorFlow: importing every API module leaves it out."""

import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "inference_project.settings.test"
import django
django.setup()
import inference_project.asgi, inference_project.urls, apps.predictions.apis, apps.models_registry.admin
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "tf_keras"})
print(",".join(loaded))
"""


def test_api_modules_do_not_import_tensorflow() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_worker_tasks_module_defers_tensorflow_to_the_child() -> None:
    probe = PROBE.replace("apps.models_registry.admin", "apps.models_registry.admin, workers.tasks")
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
