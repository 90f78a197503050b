from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from inference_project.bootstrap import platform_bootstrap, summary_write, var_dir


class Command(BaseCommand):
    help = (
        "First-run set-up of `make run` (deploy/bin/bootstrap), each step skipped when done: wait "
        "for Redis, migrate, collect static files, create the admin (DJANGO_SUPERUSER_USERNAME/"
        "PASSWORD, else generated), train, register and deploy the demo model, create the demo API "
        "key (INFERENCE_DEMO_TOKEN, else generated) and, when the launcher starts Prometheus "
        "(PLATFORM_PROCESSES), write its configuration. Writes a JSON summary for the launcher."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--summary",
            type=Path,
            help="where to write the summary (default: <INFERENCE_VAR_DIR>/run/bootstrap.json)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        summary = platform_bootstrap(log=self.stdout.write)
        path = options["summary"] or var_dir() / "run" / "bootstrap.json"
        summary_write(path=path, summary=summary)
        self.stdout.write(f"serving {', '.join(summary.models) or 'no model'} in {summary.environment}")
