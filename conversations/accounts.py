"""Account flows. Placeholder: implemented by the accounts work."""

from typing import Any


def end_sessions(user: Any) -> None:
    pass
