from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.models_registry import selectors
from apps.models_registry.services.registration import MODEL_CARD_FILENAME, model_card_register


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
        if not (directory / MODEL_CARD_FILENAME).is_file():
            raise CommandError(f"{directory / MODEL_CARD_FILENAME} not found")
        files = sorted(p for p in directory.iterdir() if p.is_file())
        total = sum(p.stat().st_size for p in files if p.name != MODEL_CARD_FILENAME)
        try:
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="upload", disable=options["verbosity"] == 0
            ) as bar:
                version = model_card_register(
                    files=files,
                    name=options["name"],
                    notes=options["notes"],
                    deploy=options["deploy"],
                    progress=bar.update,
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"registered {version} ({version.artifacts.count()} artifacts)")
        if options["deploy"]:
            deployment = selectors.deployment_get_active(
                model_name=version.model.name, environment=options["deploy"]
            )
            self.stdout.write(f"deployed {deployment}")
