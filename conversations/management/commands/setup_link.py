"""Print the one-time link that creates the first admin, while there is none."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from conversations.accounts import SETUP_LINK_HOURS, ensure_setup_link


class Command(BaseCommand):
    help = "Print a one-time link that creates the first admin (only while no active admin exists)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="Where the site is reached from the browser (default: %(default)s).",
        )

    def handle(self, *args: Any, base_url: str, **options: Any) -> None:
        url = ensure_setup_link(base_url)
        if url is None:
            self.stdout.write("An active admin exists: no setup link is needed.")
            return
        self.stdout.write(
            "No admin yet. Open this link to create the first admin account "
            f"(it works once, for {SETUP_LINK_HOURS} hours):"
        )
        self.stdout.write(url)
