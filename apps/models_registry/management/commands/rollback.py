from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.models_registry import selectors
from apps.models_registry.services.actors import actor_default
from apps.models_registry.services.deployments import ANY_LIVE, PromotionRefused, deployment_rollback


def expected_live(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


class Command(BaseCommand):
    help = "Roll a model back to its previous version in an environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model")
        parser.add_argument("--env", dest="environment", default=settings.INFERENCE_ENVIRONMENT)
        parser.add_argument(
            "--actor", default=actor_default(), help="who acts, for the history (default: the OS user)"
        )
        parser.add_argument("--reason", default="")
        parser.add_argument(
            "--expect-live",
            type=expected_live,
            default=ANY_LIVE,
            metavar="N|none",
            help="act only if version N (none: nothing) is what is live there now",
        )

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
