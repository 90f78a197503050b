"""The operators' commands call the same services as the admin and the REST API."""

from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from openpyxl import Workbook
from openpyxl.worksheet.worksheet import Worksheet

from apps.models_registry import selectors
from apps.models_registry.models import ModelVersion
from tests.unit.apps.models_registry.helpers import served
from workers.gates import validation_read

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("registry_settings")]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, verbosity=0)
    return out.getvalue()


def test_register_promote_rollback_fetch(demo_model_dir: Path, tmp_path: Path) -> None:
    assert "registered digits v1" in run("register_model", str(demo_model_dir))
    assert "registered digits v2" in run("register_model", str(demo_model_dir))
    model = selectors.model_get(name="digits")
    assert model is not None
    assert (model.gate_metric, model.gate_minimum) == ("accuracy", 0.9)
    assert "promoted: digits v1 @ dev" in run("promote", "digits", "1")
    served(ModelVersion.objects.get(model__name="digits", number=1))
    assert "promoted: digits v2 @ dev" in run("promote", "digits", "2", "--to", "dev")
    assert "rolled back: digits v1 @ dev" in run("rollback", "digits", "--env", "dev")
    with pytest.raises(CommandError, match="written reason"):
        run("promote", "digits", "2", "--to", "prod")
    with pytest.raises(CommandError, match="no version 9"):
        run("promote", "digits", "9")
    out = run("fetch_version", "digits", "2", "--to", str(tmp_path / "copy"))
    assert "4 artifacts of digits v2 verified" in out
    assert (tmp_path / "copy" / "model.keras").read_bytes() == (demo_model_dir / "model.keras").read_bytes()


def test_validation_sets_read_from_csv_and_xlsx(demo_model_dir: Path, tmp_path: Path) -> None:
    features, labels = validation_read(demo_model_dir / "validation.csv")
    assert features.shape == (360, 64)
    assert labels.shape == (360,)
    book = Workbook()
    sheet = book.active
    assert isinstance(sheet, Worksheet)  # a new workbook's one sheet
    sheet.append([f"pixel_{i}" for i in range(64)] + ["label"])
    for row, label in zip(features[:20], labels[:20], strict=True):
        sheet.append([float(v) for v in row] + [int(label)])
    book.save(tmp_path / "validation.xlsx")
    xlsx_features, xlsx_labels = validation_read(tmp_path / "validation.xlsx")
    np.testing.assert_array_equal(xlsx_features, features[:20])
    np.testing.assert_array_equal(xlsx_labels, labels[:20])


def test_commands_record_who_acted(demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--actor, else the OS user: the history and the release event never read "system"."""
    import getpass

    from apps.models_registry.models import OutboxEvent, RegistryEvent

    user = getpass.getuser()
    run("register_model", str(demo_model_dir))
    run("register_model", str(demo_model_dir), "--actor", "ci-bot")
    run("promote", "digits", "1", "--actor", "alice")
    served(ModelVersion.objects.get(model__name="digits", number=1), worker="host-a:7")
    run("promote", "digits", "2")
    run("rollback", "digits", "--env", "dev", "--actor", "bob", "--reason", "errors up")
    actors = [(e.action, e.actor) for e in RegistryEvent.objects.order_by("created_at", "id")]
    assert actors == [
        ("register", user),
        ("register", "ci-bot"),
        ("promote", "alice"),
        ("served", "host-a:7"),
        ("promote", user),
        ("rollback", "bob"),
    ]
    assert [o.payload["actor"] for o in OutboxEvent.objects.order_by("created_at")] == ["alice", user, "bob"]
