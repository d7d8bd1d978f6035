"""Share links (conversations/sharing.py, share_views.py): who may make, list and revoke them, what a
link shows and serves, and how it stops working."""

import io
import json
import re
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from cryptography.fernet import Fernet
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from PIL import Image

from conversations import images, sharing
from conversations.models import Attachment, Conversation, Message, ShareLink, hash_token
from tests.fixtures.chat import session_cookie
from tests.fixtures.users import logged_in_client
from tests.websocket_client import Socket


@pytest.fixture(autouse=True)
def fresh_cache():
    # The miss counters live in the cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


def add(conversation: Conversation, role: str, text: str, parent: Message | None = None, **fields) -> Message:
    message = Message(conversation=conversation, role=role, parent=parent, **fields)
    message.set_parts([{"type": "text", "text": text}])
    message.save()
    conversation.current_leaf = message
    conversation.save(update_fields=["current_leaf"])
    return message


@pytest.fixture
def talk(bob_conversation) -> list[Message]:
    """A question and its answer."""
    question = add(bob_conversation, "user", "What is a share link?")
    answer = add(bob_conversation, "assistant", "A **snapshot** of this path.", question)
    return [question, answer]


def create(client: Client, conversation: Conversation, **body) -> dict:
    response = client.post(
        f"/api/conversations/{conversation.public_id}/shares/",
        json.dumps({"audience": "anyone", **body}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def token_of(payload: dict) -> str:
    return re.search(r"/s/([^/]+)/$", payload["url"])[1]


def page_data(response) -> dict:
    match = re.search(
        rb'<script id="shared-data" type="application/json">(.*?)</script>', response.content, re.S
    )
    return json.loads(match[1])


# --- Making, listing and revoking: the owner only -------------------------------------------------


def test_a_member_shares_a_conversation_and_the_token_is_kept_encrypted(client_bob, bob_conversation, talk):
    payload = create(client_bob, bob_conversation, audience="team", expires_in_days=7)
    token = token_of(payload)
    # token_urlsafe(32): 256 random bits.
    assert len(token) >= 43
    link = ShareLink.objects.get()
    assert link.token_hash == hash_token(token) and token not in link.token_hash
    assert token not in link.token_encrypted and link.token == token
    assert payload["share"]["path"] == f"/s/{token}/"
    assert link.message_ids == [m.pk for m in talk]
    assert link.audience == "team"
    assert timedelta(days=6, hours=23) < link.expires_at - timezone.now() <= timedelta(days=7)
    assert payload["share"]["messages"] == 2 and payload["share"]["state"] == "active"


def test_another_member_cannot_share_list_update_or_revoke(
    client_bob, client_charlie, bob_conversation, talk
):
    share = create(client_bob, bob_conversation)["share"]
    shares = f"/api/conversations/{bob_conversation.public_id}/shares/"
    assert client_charlie.get(shares).status_code == 404
    refused = client_charlie.post(shares, "{}", content_type="application/json")
    assert refused.status_code == 404
    assert client_charlie.get("/api/shares/").json() == {"shares": []}
    assert client_charlie.delete(f"/api/shares/{share['id']}/").status_code == 404
    assert client_charlie.post(f"/api/shares/{share['id']}/snapshot/").status_code == 404
    assert client_charlie.post(f"/account/shares/{share['id']}/revoke/").status_code == 404
    assert ShareLink.objects.get().revoked_at is None
    assert ShareLink.objects.count() == 1
    # The owner sees it, in the conversation's list and in all of theirs.
    assert [s["id"] for s in client_bob.get(shares).json()["shares"]] == [share["id"]]
    assert [s["id"] for s in client_bob.get("/api/shares/").json()["shares"]] == [share["id"]]


def test_anonymous_cannot_use_the_api(bob_conversation, talk):
    anonymous = Client()
    response = anonymous.post(
        f"/api/conversations/{bob_conversation.public_id}/shares/", "{}", content_type="application/json"
    )
    assert response.status_code == 401
    assert not ShareLink.objects.exists()


def test_bad_options_are_refused(client_bob, bob_conversation, talk):
    url = f"/api/conversations/{bob_conversation.public_id}/shares/"
    for body in ({"audience": "world"}, {"expires_in_days": 3}, {"expires_in_days": "7"}, {"token": "x"}):
        response = client_bob.post(url, json.dumps(body), content_type="application/json")
        assert response.status_code == 400, body
    assert not ShareLink.objects.exists()


def test_an_empty_conversation_cannot_be_shared(client_bob, bob_conversation):
    response = client_bob.post(
        f"/api/conversations/{bob_conversation.public_id}/shares/", "{}", content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "empty"


# --- The snapshot ---------------------------------------------------------------------------------


def test_the_page_shows_the_snapshot_and_not_what_came_later(client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    later = add(bob_conversation, "user", "A later secret question", talk[-1])
    add(bob_conversation, "assistant", "A later secret answer", later)

    response = Client().get(f"/s/{token}/")
    assert response.status_code == 200
    shown = page_data(response)["messages"]
    assert [m["parts"][0]["text"] for m in shown] == ["What is a share link?", "A **snapshot** of this path."]
    assert b"later secret" not in response.content

    # The owner chooses to update the snapshot: the same address shows the rest.
    link = ShareLink.objects.get()
    assert client_bob.post(f"/api/shares/{link.pk}/snapshot/").status_code == 200
    shown = page_data(Client().get(f"/s/{token}/"))["messages"]
    assert len(shown) == 4 and shown[-1]["parts"][0]["text"] == "A later secret answer"


def test_a_reply_still_being_written_is_left_out(client_bob, bob_conversation, talk):
    question = add(bob_conversation, "user", "Next?", talk[-1])
    add(bob_conversation, "assistant", "half a rep", question, status=Message.Status.STREAMING)
    token = token_of(create(client_bob, bob_conversation))
    shown = page_data(Client().get(f"/s/{token}/"))["messages"]
    assert [m["role"] for m in shown] == ["user", "assistant", "user"]


def test_another_branch_is_not_shown(client_bob, bob_conversation, talk):
    # An edit made a sibling of the first question; the selected path is the sibling's.
    add(bob_conversation, "user", "The other branch's question")
    token = token_of(create(client_bob, bob_conversation))
    shown = page_data(Client().get(f"/s/{token}/"))["messages"]
    assert [m["parts"][0]["text"] for m in shown] == ["The other branch's question"]


def test_the_page_holds_nothing_else_of_the_owner(client_bob, bob, bob_conversation, talk):
    bob.email = "bob@example.org"
    bob.first_name, bob.last_name = "Bob", "Builder"
    bob.save()
    token = token_of(create(client_bob, bob_conversation))
    response = Client().get(f"/s/{token}/")
    body = response.content.decode()
    assert "Shared by Bob Builder on" in body
    assert "bob@example.org" not in body
    assert str(bob_conversation.public_id) not in body
    # The page numbers its messages 1, 2, … instead of carrying the owner's ids.
    assert [m["id"] for m in page_data(response)["messages"]] == [1, 2]
    assert response["X-Robots-Tag"].startswith("noindex")
    assert response["Referrer-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]
    # Read-only: no socket, no composer, no form but the login link's.
    assert "/ws/" not in body and "composer" not in body and "<form" not in body


# --- Team-only links ------------------------------------------------------------------------------


def test_a_team_link_sends_anonymous_readers_to_log_in(client_bob, client_charlie, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation, audience="team"))
    response = Client().get(f"/s/{token}/")
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next=/s/{token}/"
    assert client_charlie.get(f"/s/{token}/").status_code == 200


# --- Revoked, expired, deleted: one and the same 404 ----------------------------------------------


def test_revoked_expired_deleted_and_unknown_links_answer_the_same_bytes(
    client_bob, bob, bob_conversation, talk
):
    reader = Client()
    revoked = token_of(create(client_bob, bob_conversation))
    expired = token_of(create(client_bob, bob_conversation, expires_in_days=1))
    links = ShareLink.objects.order_by("pk")
    assert client_bob.delete(f"/api/shares/{links[0].pk}/").status_code == 200
    ShareLink.objects.filter(pk=links[1].pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    other = Conversation.objects.create(owner=bob, title="to delete")
    add(other, "user", "soon gone")
    deleted = token_of(create(client_bob, other))
    assert client_bob.delete(f"/api/conversations/{other.public_id}/").status_code == 200
    assert ShareLink.objects.get(conversation=other).revoked_at is not None
    # Undo brings the conversation back, not its link.
    assert client_bob.post(f"/api/conversations/{other.public_id}/restore/").status_code == 200

    answers = [reader.get(f"/s/{token}/") for token in (revoked, expired, deleted, "x" * 43, "nothing")]
    assert {a.status_code for a in answers} == {404}
    assert b"Link not found" in answers[0].content
    assert len({a.content for a in answers}) == 1
    assert all(a["X-Robots-Tag"].startswith("noindex") for a in answers)
    # Signed in or not, the same bytes.
    assert client_bob.get(f"/s/{revoked}/").content == answers[0].content
    # Nor can one continue from them.
    assert client_bob.post(f"/s/{revoked}/continue/").content == answers[0].content


def test_deleting_the_owner_removes_the_links(client_bob, bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    bob.delete()
    assert not ShareLink.objects.exists()
    assert Client().get(f"/s/{token}/").status_code == 404


def test_a_deactivated_owners_links_stop_working(client_bob, bob, bob_conversation, talk):
    link = create(client_bob, bob_conversation)
    bob.is_active = False
    bob.save()
    assert Client().get(f"/s/{token_of(link)}/").status_code == 404
    # Lists and the admin show it as revoked.
    assert sharing.state_of(ShareLink.objects.get()) == "revoked"


def test_an_email_username_is_not_shown(client_bob, bob, bob_conversation, talk):
    bob.username, bob.first_name, bob.last_name = "bob@corp.example", "", ""
    bob.save()
    page = Client().get(f"/s/{token_of(create(client_bob, bob_conversation))}/")
    assert b"corp.example" not in page.content and b"Shared by bob on" in page.content


def test_a_revoked_link_cannot_be_brought_back_by_a_snapshot(client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    link = ShareLink.objects.get()
    client_bob.post(f"/account/shares/{link.pk}/revoke/")
    assert client_bob.post(f"/api/shares/{link.pk}/snapshot/").status_code == 400
    assert Client().get(f"/s/{token}/").status_code == 404


# --- Guessing -------------------------------------------------------------------------------------


def test_guessing_from_one_address_is_stopped_after_20_misses(client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    guesser = Client(REMOTE_ADDR="203.0.113.9")
    for number in range(20):
        assert guesser.get(f"/s/guess{number}/").status_code == 404
    assert guesser.get("/s/guess-21/").status_code == 429
    # Even the right token, from that address, for the rest of the window.
    assert guesser.get(f"/s/{token}/").status_code == 429
    # With the default site-wide limit, one visitor's misses do not lock the links for everyone.
    assert Client(REMOTE_ADDR="198.51.100.7").get(f"/s/{token}/").status_code == 200


def test_parallel_guesses_cannot_slip_past_the_limit(client_bob, bob_conversation, talk, monkeypatch):
    # As if 30 guesses arrived at once: each passed the up-front check before any of them had counted.
    monkeypatch.setattr(sharing, "guesser_throttled", lambda guesser: False)
    answers = [Client(REMOTE_ADDR="203.0.113.9").get(f"/s/guess{n}/").status_code for n in range(30)]
    assert answers == [404] * 20 + [429] * 10


def test_a_forwarded_address_counts_only_from_a_trusted_proxy(client_bob, bob_conversation, talk, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.1"]
    token = token_of(create(client_bob, bob_conversation))
    # An untrusted peer writing the header counts as itself, whatever it claims.
    for number in range(20):
        spoofing = Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"192.0.2.{number}")
        assert spoofing.get(f"/s/guess{number}/").status_code == 404
    assert Client(REMOTE_ADDR="203.0.113.9").get(f"/s/{token}/").status_code == 429
    # Through the proxy, each client is its own.
    proxied = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert proxied.get(f"/s/{token}/").status_code == 429
    other = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert other.get(f"/s/{token}/").status_code == 200


def test_guessing_from_many_addresses_is_stopped_globally(client_bob, bob_conversation, talk, settings):
    settings.SHARE_MISSES_GLOBAL = 5  # 300 by default; lowered to keep the test short
    token = token_of(create(client_bob, bob_conversation))
    for number in range(5):
        assert Client(REMOTE_ADDR=f"192.0.2.{number}").get(f"/s/guess{number}/").status_code == 404
    # Past the site-wide ceiling, anyone's misses are refused...
    assert Client(REMOTE_ADDR="198.51.100.7").get("/s/guess-again/").status_code == 429
    # ...while a working link still opens: a scan cannot lock readers out.
    assert Client(REMOTE_ADDR="198.51.100.8").get(f"/s/{token}/").status_code == 200


def test_ipv6_guessers_are_counted_per_64(client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    for number in range(20):  # a new address of the same /64 for every guess
        assert (
            Client(REMOTE_ADDR=f"2001:db8:1:2::{number + 1:x}").get(f"/s/guess{number}/").status_code == 404
        )
    assert Client(REMOTE_ADDR="2001:db8:1:2::ffff").get(f"/s/{token}/").status_code == 429
    assert Client(REMOTE_ADDR="2001:db8:1:3::1").get(f"/s/{token}/").status_code == 200


def test_members_are_counted_by_account_and_not_locked_out_by_anonymous_guessing(
    client_bob, client_charlie, bob_conversation, talk, settings
):
    settings.SHARE_MISSES_GLOBAL = 5
    token = token_of(create(client_bob, bob_conversation))
    for number in range(5):
        assert Client(REMOTE_ADDR=f"192.0.2.{number}").get(f"/s/guess{number}/").status_code == 404
    assert Client(REMOTE_ADDR="198.51.100.7").get("/s/guess-again/").status_code == 429
    # A member's misses are their own: not refused for the scan, counted per account.
    assert client_charlie.get("/s/guess-mine/").status_code == 404
    for number in range(19):
        assert client_charlie.get(f"/s/guess{number}/").status_code == 404
    assert client_charlie.get(f"/s/{token}/").status_code == 429  # and is limited as one guesser


def test_found_links_are_not_misses(client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    reader = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(25):
        assert reader.get(f"/s/{token}/").status_code == 200


# --- Images ---------------------------------------------------------------------------------------


def png(color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def pictures(bob, bob_conversation, talk, settings, tmp_path):
    """An image in the shared answer, one in a later message, and one in another conversation."""
    settings.MEDIA_ROOT = tmp_path / "media"
    made = []
    for color in ((200, 0, 0), (0, 200, 0), (0, 0, 200)):
        attachment = images.save_upload(bob, png(color))
        made.append(attachment)
    shared, later, elsewhere = made
    other = Conversation.objects.create(owner=bob)
    Attachment.objects.filter(pk__in=[shared.pk, later.pk]).update(conversation=bob_conversation)
    Attachment.objects.filter(pk=elsewhere.pk).update(conversation=other)
    talk[-1].set_parts([*talk[-1].parts, {"type": "image", "attachment": str(shared.public_id)}])
    talk[-1].save()
    return shared, later, elsewhere


def test_images_are_served_under_the_token_only_if_in_the_snapshot(
    client_bob, bob_conversation, talk, pictures
):
    shared, later, elsewhere = pictures
    token = token_of(create(client_bob, bob_conversation))
    message = add(bob_conversation, "user", "later", talk[-1])
    message.set_parts([{"type": "image", "attachment": str(later.public_id)}])
    message.save()

    reader = Client()
    response = reader.get(f"/s/{token}/attachments/{shared.public_id}/")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff" and response["X-Robots-Tag"].startswith("noindex")
    missing = reader.get(f"/s/{token}/attachments/{later.public_id}/")
    assert missing.status_code == 404
    assert reader.get(f"/s/{token}/attachments/{elsewhere.public_id}/").content == missing.content
    assert reader.get(f"/s/nothing/attachments/{shared.public_id}/").content == missing.content
    # The owner's own address stays the owner's.
    assert reader.get(f"/attachments/{shared.public_id}/").status_code == 404
    # The page points its image at the token's address.
    data = page_data(reader.get(f"/s/{token}/"))
    assert data["image_url"] == f"/s/{token}/attachments/00000000-0000-0000-0000-000000000000/"


# --- Continue this conversation -------------------------------------------------------------------


def test_continuing_copies_the_snapshot_and_leaves_the_original(
    client_bob, client_charlie, charlie, bob_conversation, talk, pictures
):
    shared = pictures[0]
    token = token_of(create(client_bob, bob_conversation))
    before = list(Message.objects.filter(conversation=bob_conversation).values())

    response = client_charlie.post(f"/s/{token}/continue/")
    copy = Conversation.objects.get(owner=charlie)
    assert response.status_code == 302 and response["Location"] == f"/c/{copy.public_id}/"
    messages = list(copy.messages.order_by("pk"))
    assert [m.text for m in messages] == [m.text for m in talk]
    assert messages[1].parent_id == messages[0].pk and copy.current_leaf_id == messages[1].pk
    assert copy.title == bob_conversation.title and copy.model_id == bob_conversation.model_id
    assert copy.system_prompt == "" and copy.parameters == {}
    # The image is charlie's own copy, readable at charlie's address.
    image_part = messages[1].parts[-1]
    assert image_part["type"] == "image" and image_part["attachment"] != str(shared.public_id)
    mine = Attachment.objects.get(public_id=image_part["attachment"])
    assert mine.owner == charlie and mine.conversation == copy and mine.file.name != shared.file.name
    assert client_charlie.get(f"/attachments/{mine.public_id}/").status_code == 200

    assert list(Message.objects.filter(conversation=bob_conversation).values()) == before
    assert Attachment.objects.get(pk=shared.pk).owner_id == bob_conversation.owner_id
    # charlie now owns a conversation, but still not bob's.
    assert client_charlie.get(f"/c/{bob_conversation.public_id}/").status_code == 404


def test_continuing_leaves_out_an_image_whose_file_is_gone(
    client_bob, client_charlie, charlie, bob_conversation, talk, pictures
):
    token = token_of(create(client_bob, bob_conversation))
    pictures[0].file.storage.delete(pictures[0].file.name)
    assert client_charlie.post(f"/s/{token}/continue/").status_code == 302
    answer = Conversation.objects.get(owner=charlie).messages.order_by("pk").last()
    assert [part["type"] for part in answer.parts] == ["text"]


def test_system_messages_are_neither_shown_nor_copied(client_bob, client_charlie, charlie, bob_conversation):
    instructions = add(bob_conversation, "system", "You are bob's private assistant.")
    question = add(bob_conversation, "user", "Hello?", instructions)
    add(bob_conversation, "assistant", "Hi.", question)
    token = token_of(create(client_bob, bob_conversation))
    page = Client().get(f"/s/{token}/")
    assert [m["role"] for m in page_data(page)["messages"]] == ["user", "assistant"]
    assert b"private assistant" not in page.content
    client_charlie.post(f"/s/{token}/continue/")
    copied = list(Conversation.objects.get(owner=charlie).messages.order_by("pk"))
    assert [(m.role, m.text) for m in copied] == [("user", "Hello?"), ("assistant", "Hi.")]
    assert copied[0].parent_id is None


def test_continuing_needs_a_login_and_a_post(client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    response = Client().post(f"/s/{token}/continue/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert logged_in_client(bob_conversation.owner).get(f"/s/{token}/continue/").status_code == 405
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(bob_conversation.owner)
    assert csrf.post(f"/s/{token}/continue/").status_code == 403
    assert Conversation.objects.count() == 1


# --- My shared links and the admin ----------------------------------------------------------------


def test_my_shared_links_lists_only_mine_and_revokes(client_bob, client_charlie, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    link = ShareLink.objects.get()
    assert f'data-share="{link.pk}"' in client_bob.get("/account/shares/").content.decode()
    assert f'data-share="{link.pk}"' not in client_charlie.get("/account/shares/").content.decode()
    assert client_bob.post(f"/account/shares/{link.pk}/revoke/").status_code == 302
    assert Client().get(f"/s/{token}/").status_code == 404


def test_the_owner_can_copy_a_working_link_again(client_bob, bob_conversation, talk):
    revoked, expired, working = (token_of(create(client_bob, bob_conversation)) for _ in range(3))
    links = {link.token: link for link in ShareLink.objects.all()}
    client_bob.delete(f"/api/shares/{links[revoked].pk}/")
    ShareLink.objects.filter(pk=links[expired].pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    listed = client_bob.get(f"/api/conversations/{bob_conversation.public_id}/shares/").json()["shares"]
    paths = {share["id"]: share["path"] for share in listed}
    assert paths == {links[revoked].pk: None, links[expired].pk: None, links[working].pk: f"/s/{working}/"}
    assert {s["id"]: s["path"] for s in client_bob.get("/api/shares/").json()["shares"]} == paths

    page = client_bob.get("/account/shares/").content.decode()
    assert f'value="http://testserver/s/{working}/"' in page
    assert page.count('class="share-copy"') == 1
    assert revoked not in page and expired not in page


def test_an_address_encrypted_under_another_key_is_not_offered_but_the_link_works(
    client_bob, bob_conversation, talk
):
    token = token_of(create(client_bob, bob_conversation))
    ShareLink.objects.update(token_encrypted=Fernet(Fernet.generate_key()).encrypt(token.encode()).decode())
    assert [s["path"] for s in client_bob.get("/api/shares/").json()["shares"]] == [None]
    assert 'class="share-copy"' not in client_bob.get("/account/shares/").content.decode()
    assert Client().get(f"/s/{token}/").status_code == 200


def test_an_admin_lists_and_revokes_anyones_links(client_alice, client_bob, bob_conversation, talk):
    token = token_of(create(client_bob, bob_conversation))
    link = ShareLink.objects.get()
    listing = client_alice.get("/admin/conversations/sharelink/")
    assert listing.status_code == 200 and "bob" in listing.content.decode()
    # Admins revoke links; they are never shown the address.
    detail = client_alice.get(f"/admin/conversations/sharelink/{link.pk}/change/")
    assert detail.status_code == 200
    for page in (listing, detail):
        assert token not in page.content.decode() and link.token_encrypted not in page.content.decode()
    response = client_alice.post(
        "/admin/conversations/sharelink/", {"action": "revoke", "_selected_action": [link.pk]}
    )
    assert response.status_code == 302
    assert Client().get(f"/s/{token}/").status_code == 404


def test_the_admin_filters_links_by_state_as_the_links_answer(
    client_alice, client_bob, client_charlie, charlie, bob_conversation, talk
):
    """Each state filter holds exactly the links that answer so: usable, expired, or revoked (a
    deactivated owner's included)."""
    active, expired, revoked = (token_of(create(client_bob, bob_conversation)) for _ in range(3))
    ShareLink.objects.filter(token_hash=hash_token(expired)).update(expires_at=timezone.now())
    sharing.revoke(ShareLink.objects.get(token_hash=hash_token(revoked)))
    theirs = Conversation.objects.create(owner=charlie, title="Charlie's")
    add(theirs, "user", "Hi")
    departed = token_of(create(client_charlie, theirs))
    charlie.is_active = False
    charlie.save()

    def listed(state: str) -> set[str]:
        response = client_alice.get(f"/admin/conversations/sharelink/?state={state}")
        return {link.token_hash for link in response.context["cl"].result_list}

    assert listed("active") == {hash_token(active)}
    assert listed("expired") == {hash_token(expired)}
    assert listed("revoked") == {hash_token(revoked), hash_token(departed)}
    for token in (expired, revoked, departed):
        assert Client().get(f"/s/{token}/").status_code == 404
    assert Client().get(f"/s/{active}/").status_code == 200


# --- The chat socket ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_share_does_not_open_the_conversation_over_the_socket(charlie, bob_conversation):
    await database_sync_to_async(add)(bob_conversation, "user", "hello")
    _link, token = await database_sync_to_async(sharing.create_link)(bob_conversation, "anyone")
    socket = Socket(await database_sync_to_async(session_cookie)(charlie))
    assert await socket.open()
    for conversation in (str(bob_conversation.public_id), token, f"/s/{token}/"):
        for frame in (
            {"type": "subscribe", "conversation": conversation},
            {"type": "send", "conversation": conversation, "text": "hi"},
            {"type": "history", "conversation": conversation, "before": 1},
        ):
            await socket.send(**frame, ref="x")
            error = await socket.until("error")
            assert error["code"] == "not_found", frame
    await socket.close()
    assert await database_sync_to_async(Message.objects.count)() == 1
