from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.models_registry import selectors
from apps.models_registry.management.arguments import switch_arguments_add
from apps.models_registry.services.deployments import PromotionRefused, model_version_promote


class Command(BaseCommand):
    help = "Promote a model version to the next environment (or --to ENV), after its gates pass."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("version", type=int)
        parser.add_argument("--to", dest="environment", help="target environment (default: the next one)")
        parser.add_argument("--reason", default="", help="required when skipping an environment")
        switch_arguments_add(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        version = selectors.model_version_get(model_name=options["model"], number=options["version"])
        if version is None:
            raise CommandError(f"{options['model']} has no version {options['version']}")
        self.stdout.write(f"running the gates of {version} …")
        try:
            deployment = model_version_promote(
                version=version,
                environment=options["environment"],
                reason=options["reason"],
                actor=options["actor"],
                expect_live=options["expect_live"],
            )
        except PromotionRefused as exc:
            if exc.report:
                for gate in exc.report.results:
                    self.stdout.write(f"  {'ok  ' if gate.passed else 'FAIL'} {gate.name}: {gate.detail}")
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        previous = deployment.previous_version
        self.stdout.write(f"promoted: {deployment} (previously {previous or 'nothing'})")
