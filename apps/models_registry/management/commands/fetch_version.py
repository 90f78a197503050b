import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.models_registry import selectors
from apps.models_registry.storage import ChecksumMismatch, artifact_fetch_verified


class Command(BaseCommand):
    help = "Download a version's artifacts into a folder, each verified against its sha256."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("version", type=int)
        parser.add_argument("--to", dest="target", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        version = selectors.model_version_get(model_name=options["model"], number=options["version"])
        if version is None:
            raise CommandError(f"{options['model']} has no version {options['version']}")
        artifacts = list(version.artifacts.filter(pruned_at__isnull=True))
        target: Path = options["target"]
        target.mkdir(parents=True, exist_ok=True)
        total = sum(a.size for a in artifacts)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc="download", disable=options["verbosity"] == 0
        ) as bar:
            for artifact in artifacts:
                try:
                    path = artifact_fetch_verified(
                        uri=artifact.uri, sha256=artifact.sha256, progress=bar.update
                    )
                except ChecksumMismatch as exc:
                    raise CommandError(str(exc)) from exc
                shutil.copyfile(path, target / artifact.filename)
        self.stdout.write(f"{len(artifacts)} artifacts of {version} verified into {target}")
