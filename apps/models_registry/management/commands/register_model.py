import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.models_registry import selectors
from apps.models_registry.models import ModelVersion
from apps.models_registry.services.actors import actor_default
from apps.models_registry.services.registration import MODEL_CARD_FILENAME, model_card_register
from inference_common.signing import SIGNATURE_FILENAME, files_sign


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
        parser.add_argument(
            "--actor", default=actor_default(), help="who registers, for the history (default: the OS user)"
        )
        parser.add_argument(
            "--sign-key",
            type=Path,
            help="sign the folder's files with this private key (OpenSSF model-signing, EC PEM) "
            "and register the signature with them; replaces a model.sig already there",
        )
        parser.add_argument(
            "--trust-unsafe",
            metavar="REASON",
            default="",
            help="let this version need Keras' unsafe deserialization (a Lambda layer); the "
            "reason is kept in the history",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        if not (directory / MODEL_CARD_FILENAME).is_file():
            raise CommandError(f"{directory / MODEL_CARD_FILENAME} not found")
        files = sorted(p for p in directory.iterdir() if p.is_file())
        with tempfile.TemporaryDirectory(prefix="register-") as scratch:
            if options["sign_key"]:
                files = [p for p in files if p.name != SIGNATURE_FILENAME]
                signature = files_sign(
                    {p.name: p for p in files},
                    private_key=options["sign_key"],
                    out=Path(scratch) / SIGNATURE_FILENAME,
                )
                files.append(signature)
            version = self._register(files, options)
        self.stdout.write(f"registered {version} ({version.artifacts.count()} artifacts)")
        if version.signature_status != "unsigned":
            self.stdout.write(
                f"signature: {version.get_signature_status_display()} {version.signer}".rstrip()
            )
        if options["deploy"]:
            deployment = selectors.deployment_get_active(
                model_name=version.model.name, environment=options["deploy"]
            )
            self.stdout.write(f"deployed {deployment}")

    def _register(self, files: list[Path], options: dict[str, Any]) -> ModelVersion:
        total = sum(p.stat().st_size for p in files)
        try:
            with tqdm(
                total=total, unit="B", unit_scale=True, desc="upload", disable=options["verbosity"] == 0
            ) as bar:
                version = model_card_register(
                    files=files,
                    name=options["name"],
                    notes=options["notes"],
                    deploy=options["deploy"],
                    trust_unsafe_reason=options["trust_unsafe"],
                    actor=options["actor"],
                    progress=bar.update,
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        return version
