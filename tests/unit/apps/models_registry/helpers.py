"""What the registry's tests share: a version registered from a model folder, a staff user."""

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from apps.models_registry.models import ModelVersion
from apps.models_registry.services.registration import model_version_register


def register(folder: Path, name: str = "digits", **overrides: Any) -> ModelVersion:
    card = json.loads((folder / "model_card.json").read_text())
    files = [p for p in folder.iterdir() if p.name != "model_card.json"]
    return model_version_register(
        **{
            "name": name,
            "files": files,
            "signature": card["signature"],
            "metrics": card["metrics"],
            **overrides,
        }
    )


def staff(*perms: str, superuser: bool = False) -> Any:
    user_model = get_user_model()
    if superuser:
        return user_model.objects.create_superuser("root", password="x")
    user = user_model.objects.create_user("operator", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    return user_model.objects.get(pk=user.pk)
