"""Fixtures live in tests/fixtures/, one module per area."""

import pytest

pytest_plugins = [
    "tests.fixtures.users",
    "tests.fixtures.offline",
    "tests.fixtures.live",
    "tests.fixtures.browser",
    "tests.fixtures.chat",
]


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    """Pages render in the test process without collectstatic, whose manifest hashed names need.
    Live servers get collected files (tests/fixtures/live.py)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
