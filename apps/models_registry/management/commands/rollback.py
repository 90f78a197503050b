from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.models_registry import selectors
from apps.models_registry.management.arguments import switch_arguments_add
from apps.models_registry.services.deployments import PromotionRefused, deployment_rollback


class Command(BaseCommand):
    help = "Roll a model back to its previous version in an environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("--env", dest="environment", default=settings.INFERENCE_ENVIRONMENT)
        parser.add_argument("--reason", default="")
        switch_arguments_add(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        model = selectors.model_get(name=options["model"])
        if model is None:
            raise CommandError(f"no model {options['model']!r}")
        try:
            deployment = deployment_rollback(
                model=model,
                environment=options["environment"],
                reason=options["reason"],
                actor=options["actor"],
                expect_live=options["expect_live"],
            )
        except PromotionRefused as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"rolled back: {deployment}")
