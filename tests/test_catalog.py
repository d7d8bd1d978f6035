"""The in-memory model catalog: the same answers as the SQL rule, no query per message, and every
admin change seen at once."""

from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import catalog
from conversations.models import ChatModel, Provider

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(bob):
    provider = Provider.objects.create(name="P", base_url="http://127.0.0.1:9/v1")
    everyone = ChatModel.objects.create(provider=provider, upstream_id="b", display_name="B")
    research_only = ChatModel.objects.create(provider=provider, upstream_id="a", display_name="A")
    disabled = ChatModel.objects.create(provider=provider, upstream_id="c", display_name="C", enabled=False)
    research = Group.objects.create(name="research")
    research_only.allowed_groups.add(research)
    bob.groups.add(research)
    return SimpleNamespace(
        provider=provider, everyone=everyone, research_only=research_only, disabled=disabled
    )


def test_it_answers_as_the_sql_rule_does(bob, charlie, models):
    for member in (bob, charlie):
        assert catalog.usable_models(member) == list(ChatModel.objects.usable_by(member))
    assert [m.display_name for m in catalog.usable_models(bob)] == ["A", "B"]  # display order
    assert catalog.usable_model(bob, models.research_only.pk) == models.research_only
    assert catalog.usable_model(charlie, models.research_only.pk) is None
    assert catalog.usable_model(bob, models.disabled.pk) is None
    assert catalog.usable_model(bob, "1") is None


def test_it_reads_the_models_once_and_the_groups_only_for_limited_models(bob, models):
    catalog.usable_models(bob)
    with CaptureQueriesContext(connection) as queries:
        assert catalog.usable_model(bob, models.everyone.pk) == models.everyone
    assert len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        assert catalog.usable_model(bob, models.research_only.pk) == models.research_only
    assert len(queries) == 1  # the member's groups: a change to them counts at once


def test_every_admin_change_is_seen_on_the_next_use(bob, charlie, models):
    assert catalog.usable_model(bob, models.everyone.pk) is not None

    models.disabled.enabled = True
    models.disabled.save()
    assert catalog.usable_model(bob, models.disabled.pk) == models.disabled

    models.research_only.allowed_groups.clear()
    assert catalog.usable_model(charlie, models.research_only.pk) == models.research_only

    models.everyone.display_name = "Renamed"
    models.everyone.save()
    assert catalog.usable_model(bob, models.everyone.pk).display_name == "Renamed"

    models.provider.enabled = False
    models.provider.save()
    assert catalog.usable_models(bob) == []

    models.provider.enabled = True
    models.provider.save()
    models.everyone.delete()
    assert catalog.usable_model(bob, models.everyone.pk) is None


def test_another_process_changing_a_model_is_seen_through_the_shared_version(bob, models):
    """Another process bumps the version in the shared cache; this one's copy is then stale."""
    assert catalog.usable_model(bob, models.everyone.pk) is not None
    ChatModel.objects.filter(pk=models.everyone.pk).update(enabled=False)  # no signal here
    assert catalog.usable_model(bob, models.everyone.pk) is not None  # this process has not heard yet
    cache.set(catalog.VERSION_KEY, "written by another process")
    assert catalog.usable_model(bob, models.everyone.pk) is None
