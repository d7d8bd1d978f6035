"""Fixtures live in tests/fixtures/, one module per area."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import translation

from conversations import budgets, catalog

pytest_plugins = [
    "tests.fixtures.users",
    "tests.fixtures.offline",
    "tests.fixtures.live",
    "tests.fixtures.browser",
    "tests.fixtures.chat",
    "tests.fixtures.chat_page",
]


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    """Pages render in the test process without collectstatic, whose manifest hashed names need.
    Live servers get collected files (tests/fixtures/live.py)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def fresh_model_catalog():
    """The test database is emptied between tests without signals: the catalog must not keep the
    models of an earlier test."""
    catalog.changed()
    budgets.changed()


@pytest.fixture(autouse=True)
def default_language():
    """A view run for a member who reads Chinese activates it for the whole thread (Django's locale
    middleware does not undo it); the next test starts in the default language again."""
    yield
    translation.deactivate()


@pytest.fixture(autouse=True, scope="session")
def close_worker_connections(django_db_setup, django_db_blocker):
    """database_sync_to_async runs on one shared worker thread whose connection outlives the tests;
    PostgreSQL cannot drop the test database while it is open, so it is closed first."""
    yield
    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())
