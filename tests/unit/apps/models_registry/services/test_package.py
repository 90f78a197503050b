"""The services package: one module per concern, importable on its own, with no import cycle and
no import of the Celery tasks (tasks call services, never the other way round)."""

import ast
import subprocess
import sys
from graphlib import TopologicalSorter
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = "apps.models_registry.services"
FOLDER = ROOT / "apps" / "models_registry" / "services"
MODULES = sorted(p.stem for p in FOLDER.glob("*.py") if p.stem != "__init__")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_the_concern_modules_import_each_other_without_a_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        names = imported(FOLDER / f"{module}.py")
        assert "apps.models_registry.tasks" not in names, module
        graph[module] = {m for m in MODULES if f"{PACKAGE}.{m}" in names}
    TopologicalSorter(graph).prepare()  # raises CycleError on a cycle


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    probe = (
        "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'inference_project.settings.test'; "
        f"import django; django.setup(); import {PACKAGE}.{module}; "
        "print('apps.models_registry.tasks' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
