from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.predictions.authentication import api_key_create


class Command(BaseCommand):
    help = "Create an API key (or register a given one) and print the key; it is shown only this once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--key", help="register this key instead of generating one")
        parser.add_argument("--model", action="append", dest="models", help="a model it may call (repeat)")
        parser.add_argument("--rate", type=int, help="requests per second (0: no limit)")
        parser.add_argument("--high-priority", action="store_true", help="may send priority 'high' requests")

    def handle(self, *args: Any, **options: Any) -> None:
        _, raw = api_key_create(
            name=options["name"],
            raw_key=options["key"],
            models=options["models"],
            rate_per_second=options["rate"],
            high_priority=options["high_priority"],
        )
        self.stdout.write(raw)
