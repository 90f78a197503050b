import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.models_registry.services.deployments import deployment_set
from apps.models_registry.services.profiling import version_profile_request
from apps.models_registry.services.registration import model_version_register


class Command(BaseCommand):
    help = (
        "Register a trained model folder (model file, companions and a model_card.json with "
        "signature and metrics) as the next version of a model. --deploy puts it live without "
        "gates: meant for bootstrapping an installation; use `promote` otherwise."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--name", help="model name (default: the model card's name)")
        parser.add_argument("--notes", default="")
        parser.add_argument(
            "--deploy",
            nargs="?",
            const=settings.INFERENCE_ENVIRONMENT,
            help="deploy the new version to this environment without gates (default: the running one)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        card_path = directory / "model_card.json"
        if not card_path.is_file():
            raise CommandError(f"{card_path} not found")
        card = json.loads(card_path.read_text())
        files = sorted(p for p in directory.iterdir() if p.is_file() and p != card_path)
        total = sum(p.stat().st_size for p in files)
        try:
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="upload", disable=options["verbosity"] == 0
            ) as bar:
                version = model_version_register(
                    name=options["name"] or card["name"],
                    files=files,
                    signature=card["signature"],
                    metrics=card.get("metrics", {}),
                    description=card.get("description", ""),
                    gate=card.get("gate"),
                    batching=card.get("batching"),
                    notes=options["notes"],
                    progress=bar.update,
                )
            self.stdout.write(f"registered {version} ({len(files)} artifacts)")
            version_profile_request(version=version)
            if options["deploy"]:
                deployment = deployment_set(version=version, environment=options["deploy"])
                self.stdout.write(f"deployed {deployment}")
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
