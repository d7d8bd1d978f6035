"""Providers and models: registration at start, discovery, connection tests, access, and the admin."""

import socket
import threading
from decimal import Decimal

import httpx
import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.db import connection

from conversations import registry
from conversations.models import ChatModel, Conversation, Provider, UsageRecord
from conversations.offline_upstream import MODELS as OFFLINE_MODELS

SECRET_KEY = "sk-test-SECRET1234"


@pytest.fixture
def offline_settings(settings, offline_upstream):
    settings.OPENAI_BASE_URL = ""
    settings.OFFLINE_UPSTREAM_URL = offline_upstream.base_url
    return settings


@pytest.fixture
def provider(db, offline_upstream) -> Provider:
    provider = Provider(name="Team provider", base_url=offline_upstream.base_url)
    provider.set_api_key(SECRET_KEY)
    provider.save()
    return provider


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def served_models(offline_upstream) -> list[dict]:
    """What the offline upstream lists, read without the code under test."""
    return httpx.get(f"{offline_upstream.base_url}/models").raise_for_status().json()["data"]


# --- Registration at start --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_registers_the_offline_provider_and_its_models(offline_settings, offline_upstream):
    registry.register_environment_providers()
    registry.register_environment_providers()  # every start does it again

    provider = Provider.objects.get()
    assert provider.is_offline and provider.enabled
    assert provider.name == registry.OFFLINE_PROVIDER
    assert provider.base_url == offline_upstream.base_url
    served = {item["id"]: item for item in served_models(offline_upstream)}
    models = {model.upstream_id: model for model in provider.models.all()}
    assert models.keys() == served.keys()
    for upstream_id, model in models.items():
        extension = served[upstream_id]["chatsite"]
        assert "offline demo" in model.display_name.lower()
        assert model.supports_vision == extension["vision"]
        assert model.supports_tools == extension["tools"]
        assert model.supports_json == extension["json"]
        assert model.supports_reasoning == extension["reasoning"]
        assert model.context_window == extension["context_window"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_register_one_provider(offline_settings):
    errors = []

    def start() -> None:
        try:
            registry.register_environment_providers()
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Provider.objects.count() == 1
    assert ChatModel.objects.count() == len(OFFLINE_MODELS)


@pytest.mark.django_db
def test_it_registers_the_known_offline_models_while_the_offline_upstream_is_down(settings):
    settings.OPENAI_BASE_URL = ""
    settings.OFFLINE_UPSTREAM_URL = closed_port_url()

    registry.register_environment_providers()

    provider = Provider.objects.get(is_offline=True)
    assert sorted(provider.models.values_list("upstream_id", flat=True)) == sorted(OFFLINE_MODELS)
    assert all(
        "offline demo" in name.lower() for name in provider.models.values_list("display_name", flat=True)
    )


@pytest.mark.django_db
def test_it_registers_the_environment_provider_with_its_key_encrypted(settings, offline_upstream):
    Provider.objects.create(name=registry.OFFLINE_PROVIDER, base_url=closed_port_url(), is_offline=True)
    settings.OPENAI_BASE_URL = offline_upstream.base_url
    settings.OPENAI_API_KEY = "sk-env-SECRET9876"

    registry.register_environment_providers()
    registry.register_environment_providers()

    provider = Provider.objects.get(is_environment=True)
    assert provider.name == registry.ENVIRONMENT_PROVIDER
    assert provider.api_key == "sk-env-SECRET9876"
    assert "SECRET9876" not in provider.api_key_encrypted
    assert provider.models.count() == len(served_models(offline_upstream))
    # The offline upstream is not served while OPENAI_BASE_URL is set.
    assert not Provider.objects.get(is_offline=True).enabled


@pytest.mark.django_db
def test_it_starts_when_the_environment_provider_is_unreachable(settings):
    settings.OPENAI_BASE_URL = closed_port_url()
    settings.OPENAI_API_KEY = "sk-env-SECRET9876"

    registry.register_environment_providers()

    provider = Provider.objects.get(is_environment=True)
    assert provider.models.count() == 0


# --- Discovery ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_discovery_keeps_what_an_admin_edited(provider):
    registry.discover_models(provider)
    model = provider.models.first()
    model.display_name = "Our favourite"
    model.enabled = False
    model.input_price = Decimal("1.25")
    model.supports_vision = not model.supports_vision
    model.save()
    count = provider.models.count()

    registry.discover_models(provider)

    assert provider.models.count() == count
    edited = ChatModel.objects.get(pk=model.pk)
    assert edited.display_name == "Our favourite"
    assert not edited.enabled
    assert edited.input_price == Decimal("1.25")
    assert edited.supports_vision == model.supports_vision


@pytest.mark.parametrize(
    ("upstream_id", "vision", "reasoning", "chat"),
    [
        ("gpt-4o-mini", True, False, True),
        ("gpt-4.1-nano", True, False, True),
        ("claude-3-5-sonnet-latest", True, False, True),
        ("gemini-2.0-flash", True, False, True),
        ("qwen-vl-vision-max", True, False, True),
        ("o3-mini", False, True, True),
        ("o1", False, True, True),
        ("deepseek-reasoner", False, True, True),
        ("deepseek-r1-distill-llama-70b", False, True, True),
        ("llama-3.3-70b-instruct", False, False, True),
        ("text-embedding-3-small", False, False, False),
        ("whisper-1", False, False, False),
    ],
)
def test_it_guesses_capabilities_from_the_model_id(upstream_id, vision, reasoning, chat):
    guessed = registry.guess_capabilities(upstream_id)

    assert guessed["display_name"] == upstream_id
    assert guessed["supports_vision"] is vision
    assert guessed["supports_reasoning"] is reasoning
    assert guessed["supports_tools"] is chat
    assert guessed["supports_json"] is chat
    assert guessed["enabled"] is chat


# --- Connection test ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_connection_test_counts_the_models(provider, offline_upstream):
    ok, message = registry.test_connection(provider)

    assert ok
    assert str(len(served_models(offline_upstream))) in message


@pytest.mark.django_db
def test_connection_test_explains_a_closed_port():
    provider = Provider.objects.create(name="Nowhere", base_url=closed_port_url())
    provider.set_api_key(SECRET_KEY)

    ok, message = registry.test_connection(provider)

    assert not ok
    assert message
    assert "SECRET" not in message


# --- Who may use which model -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_usable_by_respects_allowed_groups(bob, charlie):
    provider = Provider.objects.create(name="P", base_url="http://127.0.0.1:9/v1")
    everyone = ChatModel.objects.create(provider=provider, upstream_id="a", display_name="A")
    research_only = ChatModel.objects.create(provider=provider, upstream_id="b", display_name="B")
    ChatModel.objects.create(provider=provider, upstream_id="c", display_name="C", enabled=False)
    research = Group.objects.create(name="research")
    research_only.allowed_groups.add(research)
    bob.groups.add(research)

    assert list(ChatModel.objects.usable_by(bob)) == [everyone, research_only]
    assert list(ChatModel.objects.usable_by(charlie)) == [everyone]

    provider.enabled = False
    provider.save()
    assert list(ChatModel.objects.usable_by(bob)) == []


# --- The admin ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_never_shows_the_api_key(client_alice, offline_upstream):
    added = client_alice.post(
        "/admin/conversations/provider/add/",
        {
            "name": "Team provider",
            "base_url": offline_upstream.base_url,
            "api_key": SECRET_KEY,
            "enabled": "on",
        },
    )
    assert added.status_code == 302
    # Error reports (DEBUG pages, mails to admins) mask the posted key.
    assert list(added.wsgi_request.sensitive_post_parameters) == ["api_key"]
    provider = Provider.objects.get(name="Team provider")
    assert provider.api_key == SECRET_KEY
    change_url = f"/admin/conversations/provider/{provider.pk}/change/"
    # A blank key field keeps the stored key; the change is still recorded.
    changed = client_alice.post(
        change_url, {"name": "Team provider", "base_url": offline_upstream.base_url, "api_key": ""}
    )
    assert changed.status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == SECRET_KEY
    assert not provider.enabled
    # An invalid form is shown again without the key that was typed.
    invalid = client_alice.post(change_url, {"name": "", "base_url": "not a url", "api_key": SECRET_KEY})
    assert invalid.status_code == 200

    pages = [
        invalid,
        client_alice.get("/admin/conversations/provider/"),
        client_alice.get(change_url),
        client_alice.get(f"/admin/conversations/provider/{provider.pk}/history/"),
        client_alice.get("/admin/"),
    ]

    for page in pages:
        assert page.status_code == 200
        assert "sk-test-SECRET" not in page.content.decode()
    assert "…1234" in pages[1].content.decode()
    assert LogEntry.objects.filter(object_id=str(provider.pk)).count() == 2
    assert not any("SECRET" in entry.change_message for entry in LogEntry.objects.all())


@pytest.mark.django_db
def test_the_admin_can_remove_a_stored_key(client_alice, provider):
    client_alice.post(
        f"/admin/conversations/provider/{provider.pk}/change/",
        {"name": provider.name, "base_url": provider.base_url, "remove_api_key": "on", "enabled": "on"},
    )

    provider.refresh_from_db()
    assert provider.api_key == ""


@pytest.mark.django_db
def test_a_stored_key_does_not_follow_a_changed_address(client_alice, provider):
    change_url = f"/admin/conversations/provider/{provider.pk}/change/"
    moved = {"name": provider.name, "base_url": "https://elsewhere.example.com/v1", "enabled": "on"}

    refused = client_alice.post(change_url, moved)

    assert refused.status_code == 200  # the form again, with the error
    assert "enter the API key again" in refused.content.decode()
    provider.refresh_from_db()
    assert provider.base_url != moved["base_url"] and provider.api_key
    client_alice.post(change_url, {**moved, "api_key": "sk-new-key-5678"})
    provider.refresh_from_db()
    assert (provider.base_url, provider.api_key) == (moved["base_url"], "sk-new-key-5678")


@pytest.mark.django_db
def test_the_admin_tests_a_connection_and_discovers_models(client_alice, provider, offline_upstream):
    count = len(served_models(offline_upstream))
    changelist = "/admin/conversations/provider/"

    tested = client_alice.post(
        changelist, {"action": "test_connection", "_selected_action": [provider.pk]}, follow=True
    )
    discovered = client_alice.post(
        changelist, {"action": "discover_models", "_selected_action": [provider.pk]}, follow=True
    )

    assert f"Connected: {count} model" in tested.content.decode()
    assert f"{count} models listed, {count} new" in discovered.content.decode()
    assert provider.models.count() == count


@pytest.mark.django_db
def test_the_admin_lists_models_and_their_groups(client_alice, provider):
    registry.discover_models(provider)
    model = provider.models.first()

    listed = client_alice.get("/admin/conversations/chatmodel/?enabled__exact=1")
    change = client_alice.get(f"/admin/conversations/chatmodel/{model.pk}/change/")

    assert listed.status_code == 200
    assert model.display_name in listed.content.decode()
    assert change.status_code == 200
    assert 'name="allowed_groups"' in change.content.decode()


@pytest.mark.django_db
def test_the_admin_shows_usage_read_only(client_alice, alice):
    record = UsageRecord.objects.create(user=alice, model_name="offline-chat", prompt_tokens=12)

    listed = client_alice.get("/admin/conversations/usagerecord/")
    viewed = client_alice.get(f"/admin/conversations/usagerecord/{record.pk}/change/")

    assert listed.status_code == 200
    assert "offline-chat" in listed.content.decode()
    assert viewed.status_code == 200
    assert 'name="_save"' not in viewed.content.decode()
    assert client_alice.get("/admin/conversations/usagerecord/add/").status_code == 403
    assert client_alice.get(f"/admin/conversations/usagerecord/{record.pk}/delete/").status_code == 403


@pytest.mark.django_db
def test_the_admin_lists_conversations_without_what_was_written(client_alice, bob):
    conversation = Conversation.objects.create(owner=bob, title="Trip plans", system_prompt="PRIVATE-PROMPT")
    conversation.messages.create(
        role="user", parts=[{"type": "text", "text": "PRIVATE-TEXT"}], text="PRIVATE-TEXT"
    )

    listed = client_alice.get("/admin/conversations/conversation/")
    viewed = client_alice.get(f"/admin/conversations/conversation/{conversation.pk}/change/")
    messages = client_alice.get("/admin/conversations/message/")

    assert "Trip plans" in listed.content.decode()
    for page in (listed, viewed, messages):
        assert page.status_code == 200
        assert "PRIVATE-" not in page.content.decode()
    assert client_alice.get("/admin/conversations/conversation/add/").status_code == 403


@pytest.mark.django_db
def test_members_cannot_reach_the_registry_admin(client_bob):
    response = client_bob.get("/admin/conversations/provider/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
