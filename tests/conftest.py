"""Fixtures live in tests/fixtures/, one module per area."""

pytest_plugins = [
    "tests.fixtures.users",
    "tests.fixtures.offline",
    "tests.fixtures.live",
    "tests.fixtures.browser",
    "tests.fixtures.chat",
]
