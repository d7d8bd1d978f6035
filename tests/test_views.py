"""The chat page and the sidebar's JSON API (conversations/views.py)."""

import asyncio
import json
import re
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from conversations import events
from conversations.models import ChatModel, Conversation, Provider

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_model(db) -> ChatModel:
    provider = Provider.objects.create(name="Offline demo", base_url="http://127.0.0.1:9/v1", is_offline=True)
    return ChatModel.objects.create(provider=provider, upstream_id="offline-chat", display_name="chat")


@pytest.fixture
def conversation(bob) -> Conversation:
    return Conversation.objects.create(owner=bob, title="Spring poem")


def detail_url(conversation: Conversation) -> str:
    return reverse("conversation_detail", args=[conversation.public_id])


def patch(client: Client, conversation: Conversation, body: object):
    return client.patch(detail_url(conversation), json.dumps(body), content_type="application/json")


def page_data(response) -> dict:
    match = re.search(
        rb'<script id="chat-data" type="application/json">(.*?)</script>', response.content, re.S
    )
    assert match, "the page carries its data in a json_script block"
    return json.loads(match.group(1))


class UserGroupListener:
    """A channel in the member's group: what every tab of theirs would hear.

    It keeps one event loop of its own, as a server process does: Redis Pub/Sub knows a channel only
    in the loop that subscribed it, and async_to_sync would give each call a new loop."""

    def __init__(self, user_id: int) -> None:
        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add(events.user_group(user_id), self.channel))

    def receive(self) -> dict:
        """The next event, as the browser will get it."""
        message = self.loop.run_until_complete(asyncio.wait_for(self.layer.receive(self.channel), 10))
        return json.loads(message["frame"])


# --- The page -------------------------------------------------------------------------------------


def test_it_shows_the_owner_their_conversation(client_bob, conversation):
    response = client_bob.get(conversation.get_absolute_url())

    assert response.status_code == 200
    data = page_data(response)
    assert data["selected"] == str(conversation.public_id)
    assert [c["id"] for c in data["conversations"]] == [str(conversation.public_id)]
    assert data["strings"]["new_conversation"] == "New conversation"


def test_it_shows_a_new_chat_without_a_selection(client_bob, conversation):
    data = page_data(client_bob.get(reverse("chat")))

    assert data["selected"] is None
    assert data["conversations"][0]["title"] == "Spring poem"


def test_it_hides_someone_elses_conversation(client_charlie, conversation):
    assert client_charlie.get(conversation.get_absolute_url()).status_code == 404
    assert patch(client_charlie, conversation, {"title": "Mine now"}).status_code == 404
    assert client_charlie.delete(detail_url(conversation)).status_code == 404

    conversation.refresh_from_db()
    assert conversation.title == "Spring poem"
    assert conversation.deleted_at is None


def test_it_hides_a_deleted_conversation(client_bob, conversation):
    conversation.deleted_at = timezone.now()
    conversation.save()

    assert client_bob.get(conversation.get_absolute_url()).status_code == 404
    assert patch(client_bob, conversation, {"pinned": True}).status_code == 404


def test_it_requires_login(client, conversation):
    response = client.get(reverse("chat"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    assert client.get(conversation.get_absolute_url()).status_code == 302

    listing = client.get(reverse("conversation_list"))
    assert listing.status_code == 401
    assert listing.json()["error"]["code"] == "login_required"
    assert patch(client, conversation, {"title": "x"}).status_code == 401


def test_the_page_passes_a_strict_content_security_policy(client_bob):
    response = client_bob.get(reverse("chat"))
    html = response.content.decode()

    nonce = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"]).group(1)
    assert f'<script type="importmap" nonce="{nonce}">' in html
    # Every other script is a static module or data, which 'self' allows without a nonce.
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "importmap" in tag or 'type="module" src="/static/' in tag or 'type="application/json"' in tag
    assert not re.search(r"\son[a-z]+\s*=", html), "no inline event handlers"
    assert not re.search(r"\sstyle\s*=", html), "no inline style attributes"


def test_the_import_map_names_the_vendored_packages(client_bob):
    html = client_bob.get(reverse("chat")).content.decode()
    import_map = json.loads(re.search(r'<script type="importmap"[^>]*>(.*?)</script>', html, re.S).group(1))

    assert import_map["imports"]["marked"] == "/static/vendor/marked/marked.esm.js"
    assert import_map["imports"]["dompurify"] == "/static/vendor/dompurify/purify.es.mjs"


def test_it_labels_demo_models(client_bob, demo_model):
    response = client_bob.get(reverse("chat"))
    data = page_data(response)

    assert [(m["id"], m["label"], m["offline"]) for m in data["models"]] == [
        (demo_model.pk, "Offline demo (chat)", True)
    ]
    assert data["default_model"] == demo_model.pk
    assert re.search(
        rf'<option value="{demo_model.pk}" data-offline="1">Offline demo \(chat\)</option>',
        response.content.decode(),
    )


def test_it_offers_only_usable_models(client_bob, bob, demo_model):
    staff_only = ChatModel.objects.create(
        provider=demo_model.provider, upstream_id="secret", display_name="Secret"
    )
    staff_only.allowed_groups.add(Group.objects.create(name="staff"))
    ChatModel.objects.create(
        provider=demo_model.provider, upstream_id="off", display_name="Off", enabled=False
    )
    bob.profile.default_model = staff_only
    bob.profile.save()

    data = page_data(client_bob.get(reverse("chat")))

    assert [model["id"] for model in data["models"]] == [demo_model.pk]
    assert data["default_model"] == demo_model.pk


# --- The list -------------------------------------------------------------------------------------


def test_it_pages_the_list_newest_first(client_bob, bob, charlie):
    start = timezone.now() - timedelta(days=1)
    for number in range(60):
        Conversation.objects.create(
            owner=bob, title=f"c{number}", updated_at=start + timedelta(minutes=number)
        )
    Conversation.objects.create(owner=charlie, title="charlie's")
    Conversation.objects.create(owner=bob, title="gone", deleted_at=timezone.now())

    first = client_bob.get(reverse("conversation_list")).json()
    second = client_bob.get(reverse("conversation_list"), {"before": first["next"]}).json()

    assert len(first["conversations"]) == 50
    assert second["next"] is None
    titles = [c["title"] for c in first["conversations"] + second["conversations"]]
    assert titles == [f"c{number}" for number in reversed(range(60))]


def test_it_pages_conversations_with_the_same_time_without_losing_any(client_bob, bob):
    moment = timezone.now()
    for number in range(55):
        Conversation.objects.create(owner=bob, title=f"c{number}", updated_at=moment)

    first = client_bob.get(reverse("conversation_list")).json()
    second = client_bob.get(reverse("conversation_list"), {"before": first["next"]}).json()

    ids = [c["id"] for c in first["conversations"] + second["conversations"]]
    assert len(ids) == len(set(ids)) == 55


def test_it_lists_pinned_conversations_first(client_bob, bob):
    old_pinned = Conversation.objects.create(
        owner=bob, title="pinned", pinned=True, updated_at=timezone.now() - timedelta(days=30)
    )
    Conversation.objects.create(owner=bob, title="recent")

    listing = client_bob.get(reverse("conversation_list")).json()

    assert [c["title"] for c in listing["conversations"]] == ["pinned", "recent"]
    assert listing["conversations"][0] == events.conversation_summary(old_pinned)


def test_it_refuses_a_bad_cursor(client_bob):
    response = client_bob.get(reverse("conversation_list"), {"before": "yesterday|x"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_cursor"


# --- Changes --------------------------------------------------------------------------------------


def test_it_renames_and_tells_every_tab(client_bob, bob, conversation, django_capture_on_commit_callbacks):
    listener = UserGroupListener(bob.pk)
    before = conversation.updated_at

    with django_capture_on_commit_callbacks(execute=True):
        response = patch(client_bob, conversation, {"title": "  Autumn   poem "})

    assert response.status_code == 200
    assert response.json()["conversation"]["title"] == "Autumn poem"
    conversation.refresh_from_db()
    assert conversation.title == "Autumn poem"
    assert conversation.updated_at > before
    event = listener.receive()
    assert event["type"] == "conversation.updated"
    assert event["conversation"] == str(conversation.public_id)
    assert event["data"]["title"] == "Autumn poem"


def test_it_pins_without_moving_the_conversation_in_time(client_bob, conversation):
    before = conversation.updated_at

    response = patch(client_bob, conversation, {"pinned": True})

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.pinned is True
    assert conversation.updated_at == before


def test_it_deletes_softly_and_tells_every_tab(
    client_bob, bob, conversation, django_capture_on_commit_callbacks
):
    listener = UserGroupListener(bob.pk)

    with django_capture_on_commit_callbacks(execute=True):
        response = client_bob.delete(detail_url(conversation))

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.deleted_at is not None
    assert listener.receive()["type"] == "conversation.deleted"
    assert client_bob.get(reverse("conversation_list")).json()["conversations"] == []


def test_it_sets_a_usable_model(client_bob, conversation, demo_model):
    response = patch(client_bob, conversation, {"model": demo_model.pk, "system_prompt": "Be brief."})

    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.model == demo_model
    assert conversation.system_prompt == "Be brief."


def test_it_refuses_a_model_the_member_may_not_use(client_bob, conversation, demo_model):
    demo_model.allowed_groups.add(Group.objects.create(name="staff"))

    response = patch(client_bob, conversation, {"model": demo_model.pk})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_model"
    conversation.refresh_from_db()
    assert conversation.model is None


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"title": "x" * 201}, "too_large"),
        ({"title": 5}, "bad_request"),
        ({"pinned": "yes"}, "bad_request"),
        ({"model": True}, "bad_request"),
        ({"system_prompt": None}, "bad_request"),
        ({"colour": "red"}, "bad_request"),
        (["title"], "bad_json"),
    ],
)
def test_it_refuses_malformed_changes(client_bob, conversation, body, code):
    response = patch(client_bob, conversation, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    conversation.refresh_from_db()
    assert conversation.title == "Spring poem"


def test_it_refuses_changes_without_the_csrf_token(bob, conversation):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)

    assert patch(client, conversation, {"title": "Forged"}).status_code == 403
    assert client.delete(detail_url(conversation)).status_code == 403


def test_every_response_says_where_its_server_time_went(client_bob, conversation):
    response = client_bob.get(reverse("conversation_list"))
    timing = dict(
        re.match(r"(\w+);dur=([\d.]+)", metric.strip()).groups()
        for metric in response["Server-Timing"].split(",")
    )
    queries = int(re.search(r'desc="(\d+) queries"', response["Server-Timing"]).group(1))
    assert queries >= 2  # the session and the member, then the list
    assert 0 < float(timing["db"]) <= float(timing["total"])
