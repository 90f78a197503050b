"""Arguments the registry's switching commands (promote, rollback) share."""

from django.core.management.base import CommandParser

from apps.models_registry.services.actors import actor_default
from apps.models_registry.services.deployments import ANY_LIVE


def _expected_live(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


def switch_arguments_add(parser: CommandParser) -> None:
    """--actor (who acts, for the history) and --expect-live (act only on what was seen)."""
    parser.add_argument(
        "--actor", default=actor_default(), help="who acts, for the history (default: the OS user)"
    )
    parser.add_argument(
        "--expect-live",
        type=_expected_live,
        default=ANY_LIVE,
        metavar="N|none",
        help="act only if version N (none: nothing) is what is live there now",
    )
