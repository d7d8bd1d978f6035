"""Share links in a real browser: share from the chat, read in a logged-out browser, team-only links,
update, copy again, revoke, and continue as another member; a shared image shows and a later one is not
served; hostile content on the shared page stays inert."""

import json
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from conversations import sharing
from conversations.models import ChatModel, Conversation, Message, Profile
from tests.fixtures import hostile
from tests.fixtures.browser import shot
from tests.fixtures.hostile_watch import Guard
from tests.fixtures.users import BOB_PASSWORD, CHARLIE_PASSWORD, make_user
from tests.test_browser_a11y import Audit  # axe's runner, as for the other pages
from tests.test_browser_images import attach, picture
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT_COPIES = Path("/tmp")


@pytest.fixture
def live_server_env(tmp_path) -> dict[str, str]:
    # Uploaded images go to the test's own directory.
    return {"MEDIA_ROOT": str(tmp_path / "media")}


def keep(path: Path, name: str) -> None:
    """A copy for the report, beside the test artifacts."""
    shutil.copy(path, SCREENSHOT_COPIES / f"share-{name}.png")


def create_link(page: Page, audience: str = "anyone") -> str:
    """Open the Share dialog, make a link and return its address."""
    page.get_by_role("button", name="More").click()
    page.get_by_role("button", name="Share…").click()
    dialog = page.locator("#share-dialog")
    expect(dialog).to_be_visible()
    label = "Anyone with the link" if audience == "anyone" else "Team members only (login required)"
    dialog.get_by_label(label).check()
    count = dialog.locator("#share-links [data-share]").count()
    dialog.get_by_role("button", name="Create link").click()
    expect(dialog.locator("#share-url")).to_have_value(re.compile(r"/s/[\w-]{43,}/$"))
    expect(dialog.locator("#share-links [data-share]")).to_have_count(count + 1)
    return dialog.locator("#share-url").input_value()


def log_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_share_read_logged_out_team_only_revoke_and_continue(
    open_chat, new_context, charlie, live_server_url
):
    chat = open_chat()
    chat.send("What is a snapshot?")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))

    url = create_link(chat.page)
    keep(shot(chat.page, "share-dialog"), "dialog")
    chat.page.locator("#share-close").click()

    # A logged-out browser reads it, read-only.
    reader = new_context().new_page()
    response = reader.goto(url)
    assert response.status == 200 and response.headers["x-robots-tag"].startswith("noindex")
    expect(reader.locator(".shared-by")).to_contain_text("Shared by bob on")
    expect(reader.locator(".message-user")).to_have_text("What is a snapshot?")
    expect(reader.locator(".message-assistant .markdown")).to_contain_text("You said")
    expect(reader.locator("#composer-input, .regenerate, .edit-message")).to_have_count(0)
    expect(reader.get_by_role("link", name="Log in to continue this conversation")).to_be_visible()
    keep(shot(reader, "shared-page"), "page")

    # A later message stays out until bob updates the snapshot.
    chat.send("And after it?")
    expect(chat.replies).to_have_count(2)
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    reader.reload()
    expect(reader.locator(".message")).to_have_count(2)
    chat.page.get_by_role("button", name="More").click()
    chat.page.get_by_role("button", name="Share…").click()
    chat.page.locator("#share-links").get_by_role("button", name="Update snapshot").click()
    expect(chat.page.locator("#share-status")).to_contain_text("Snapshot updated")
    reader.reload()
    expect(reader.locator(".message")).to_have_count(4)
    chat.page.locator("#share-close").click()

    # Team only: a logged-out reader is sent to log in, and comes back to the page after it.
    team_url = create_link(chat.page, audience="team")
    chat.page.locator("#share-close").click()
    member = new_context().new_page()
    member.goto(team_url)
    expect(member).to_have_url(re.compile(r"/login/\?next=/s/"))
    log_in(member, "charlie", CHARLIE_PASSWORD)
    expect(member).to_have_url(team_url)
    expect(member.locator(".shared-by")).to_contain_text("Team members only")
    expect(member.locator(".message")).to_have_count(4)

    # Revoking the first link: the reader gets the same page as for a link that never was.
    chat.page.get_by_role("button", name="More").click()
    chat.page.get_by_role("button", name="Share…").click()
    links = chat.page.locator("#share-links [data-share]")
    links.filter(has_text="Anyone with the link").get_by_role("button", name="Revoke").click()
    expect(chat.page.locator("#share-status")).to_have_text("Link revoked.")
    expect(links.filter(has_text="revoked")).to_have_count(1)
    # A revoked link's address is no longer given out.
    expect(links.filter(has_text="revoked").get_by_role("button", name="Copy link")).to_have_count(0)
    revoked = reader.goto(url)
    assert revoked.status == 404
    never = reader.request.get(f"{live_server_url}/s/{'A' * 43}/")
    assert never.status == 404 and never.body() == revoked.body()
    expect(reader.get_by_role("heading", name="Link not found")).to_be_visible()

    # charlie continues the team link's conversation as his own and chats on.
    member.get_by_role("button", name="Continue this conversation").click()
    expect(member).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    expect(member.locator(".message")).to_have_count(4)
    composer = member.get_by_label("Message", exact=True)
    expect(composer).to_have_attribute("maxlength", re.compile(r"\d+"))
    composer.fill("Continuing here")
    composer.press("Enter")
    expect(member.locator(".message-assistant")).to_have_count(3)
    expect(member.locator(".message-assistant").last).to_have_class(re.compile(r"status-complete"))
    shot(member, "continued")
    # bob's conversation is as it was.
    original = Conversation.objects.get(owner__username="bob")
    assert original.messages.count() == 4
    assert not original.messages.filter(text="Continuing here").exists()
    assert chat.dialogs == []

    # Esc closes the dialog and leaves a reply being written alone (the page's own Esc stops one).
    chat.page.locator("#share-close").click()  # still open from the revoke
    chat.send(offline(words=300, pace_ms=30))
    live = re.compile(r"status-(pending|streaming)")
    expect(chat.last_reply).to_have_class(live)
    chat.page.get_by_role("button", name="More").click()
    chat.page.get_by_role("button", name="Share…").click()
    expect(chat.page.locator("#share-dialog")).to_be_visible()
    chat.page.keyboard.press("Escape")
    expect(chat.page.locator("#share-dialog")).to_be_hidden()
    expect(chat.last_reply).to_have_class(live)


# --- Images, and copying a link again -------------------------------------------------------------


@pytest.fixture
def vision_model(vision_model, bob) -> ChatModel:
    """The vision model (tests/fixtures/chat.py), bob's default: his new chats can take images."""
    Profile.objects.filter(user=bob).update(default_model=vision_model)
    return vision_model


def send_picture(chat, text: str, size: tuple[int, int]) -> None:
    attach(chat, "picture.png", "image/png", picture(size))
    expect(chat.page.locator("#attachment-tray .attachment:not(.uploading)")).to_have_count(1)
    chat.composer.fill(text)
    chat.composer.press("Enter")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))


def test_a_shared_image_shows_a_later_one_is_not_served_and_links_are_copied_again(
    open_chat, new_context, vision_model, live_server_url
):
    chat = open_chat(permissions=["clipboard-read", "clipboard-write"])
    send_picture(chat, "What is in this picture?", (320, 200))
    url = create_link(chat.page)
    chat.page.locator("#share-close").click()
    team_url = create_link(chat.page, audience="team")

    # Each listed link can be copied again, from the dialog reopened later too.
    chat.page.locator("#share-close").click()
    chat.page.get_by_role("button", name="More").click()
    chat.page.get_by_role("button", name="Share…").click()
    links = chat.page.locator("#share-links [data-share]")
    expect(links.get_by_role("button", name="Copy link")).to_have_count(2)
    links.filter(has_text="Anyone with the link").get_by_role("button", name="Copy link").click()
    expect(chat.page.locator("#share-status")).to_have_text("Copied")
    assert chat.page.evaluate("navigator.clipboard.readText()") == url
    expect(chat.page.locator("#share-url")).to_have_value(url)
    keep(shot(chat.page, "dialog-copy"), "dialog2")
    chat.page.locator("#share-close").click()

    # A logged-out reader sees the image, served under the token.
    reader = new_context().new_page()
    reader.goto(url)
    image = reader.locator(".message-user .message-image img")
    expect(image).to_have_count(1)
    expect(image).to_have_attribute("src", re.compile(rf"^{re.escape(url)}attachments/[0-9a-f-]{{36}}/$"))
    reader.wait_for_function(
        "() => document.querySelector('.message-user .message-image img')?.naturalWidth === 320"
    )

    # An image sent after the snapshot: the owner sees it, the share neither shows nor serves it.
    send_picture(chat, "And this one?", (100, 80))
    later = chat.page.locator(".message-user .message-image img").last
    chat.page.wait_for_function(
        "() => [...document.querySelectorAll('.message-user .message-image img')].at(-1)?.naturalWidth === 100"
    )
    later_id = re.search(r"/attachments/([0-9a-f-]{36})/", later.get_attribute("src"))[1]
    reader.reload()
    expect(reader.locator(".message-user .message-image img")).to_have_count(1)
    assert reader.request.get(f"{url}attachments/{later_id}/").status == 404
    first_id = re.search(r"/attachments/([0-9a-f-]{36})/", image.get_attribute("src"))[1]
    assert reader.request.get(f"{url}attachments/{first_id}/").status == 200

    # "My shared links" copies a working link's address too.
    chat.page.goto(f"{live_server_url}/account/shares/")
    rows = chat.page.locator("[data-share]")
    expect(rows).to_have_count(2)
    team_row = rows.filter(has_text="Team members only")
    expect(team_row.get_by_label("Link")).to_have_value(team_url)
    team_row.get_by_role("button", name="Copy").click()
    expect(team_row.get_by_role("button", name="Copied")).to_be_visible()
    assert chat.page.evaluate("navigator.clipboard.readText()") == team_url
    keep(shot(chat.page, "my-links-copy"), "my-links2")
    team_row.get_by_role("button", name="Revoke").click()
    expect(rows.filter(has_text="revoked").get_by_role("button", name="Copy")).to_have_count(0)
    expect(chat.page.get_by_role("button", name="Copy")).to_have_count(1)
    assert chat.dialogs == []


# --- Hostile content on the shared page -----------------------------------------------------------

MALLORY_PASSWORD = "mallory-paper-lantern-cobalt"


def reply_text(case: hostile.ReplyCase) -> str:
    return case.directive.get("reply") or "".join(case.directive.get("chunks", []))


@pytest.fixture
def hostile_share(db):
    """mallory's conversation: every hostile reply, an imported thread of every part kind, stored."""
    mallory = make_user(
        hostile.USERNAME, MALLORY_PASSWORD, first_name=hostile.FIRST_NAME, last_name=hostile.LAST_NAME
    )
    conversation = Conversation.objects.create(owner=mallory, title=hostile.STORED_TITLE)
    parent = None

    def add(role: str, parts: list, **fields) -> Message:
        nonlocal parent
        message = Message(conversation=conversation, role=role, parent=parent, **fields)
        message.set_parts(parts)
        message.save()
        parent = message
        return message

    add("user", [{"type": "text", "text": hostile.FIRST_MESSAGE}])
    for case in [*hostile.REPLY_CASES, *hostile.RENDERER_GAPS]:
        add("user", [{"type": "text", "text": case.name}])
        reasoning = case.directive.get("reasoning")
        parts = [{"type": "reasoning", "text": reasoning}] if reasoning else []
        add("assistant", [*parts, {"type": "text", "text": reply_text(case)}])
    for message in hostile.imported_file()["conversation"]["messages"][1:]:
        error = message["error"] or {}
        add(
            message["role"],
            message["parts"],
            status=message["status"],
            error_code=error.get("code", ""),
            error_detail=error.get("detail", ""),
        )
    conversation.current_leaf = parent
    conversation.save(update_fields=["current_leaf"])
    _link, token = sharing.create_link(conversation, "anyone")
    return token


def test_hostile_content_on_the_shared_page_is_inert(new_context, live_server_url, hostile_share):
    guard = Guard(new_context(), live_server_url)
    page = guard.page
    guard.goto(f"{live_server_url}/s/{hostile_share}/")
    guard.self_check()
    expect(page.locator("#conversation-title")).to_have_text(hostile.STORED_TITLE)
    expect(page.locator(".shared-by")).to_contain_text(f"{hostile.FIRST_NAME} {hostile.LAST_NAME}")
    expect(page.locator(".message-user .plain-text").first).to_have_text(hostile.FIRST_MESSAGE)
    replies = page.locator(".message-assistant")
    for case in [*hostile.REPLY_CASES, *hostile.RENDERER_GAPS]:
        reply = replies.filter(has_text=case.name).first
        for text in case.shown:
            expect(reply, f"{case.name}: {text}").to_contain_text(text)
    expect(page.locator(".refusal")).to_have_text(hostile.REFUSAL)
    expect(page.locator(".notice-detail")).to_have_text(hostile.ERROR_DETAIL)
    expect(page.locator("details.tool summary").first).to_contain_text(hostile.TOOL_NAME)
    for details in page.locator("details").all():
        details.locator("summary").click()
    expect(page.locator("details.tool pre").last).to_have_text(hostile.TOOL_RESULT)
    guard.audit(".message-body, #conversation-title, .shared-by", min_roots=3)
    assert json.loads(page.locator("#shared-data").text_content())["messages"][0]["id"] == 1
    shot(page, "hostile")


# --- Accessibility --------------------------------------------------------------------------------


def test_the_share_dialog_the_shared_page_and_my_links_have_no_serious_issue(
    new_context, live_server_url, bob, bob_conversation
):
    question = Message(conversation=bob_conversation, role="user")
    question.set_parts([{"type": "text", "text": "Is this page accessible?"}])
    question.save()
    answer = Message(conversation=bob_conversation, role="assistant", parent=question)
    answer.set_parts([{"type": "text", "text": "Let **axe** say so.\n\n```python\nprint(1)\n```"}])
    answer.save()
    bob_conversation.current_leaf = answer
    bob_conversation.save(update_fields=["current_leaf"])
    _link, token = sharing.create_link(bob_conversation, "anyone", 7)

    audit = Audit()
    reader = new_context(bypass_csp=True).new_page()
    reader.goto(f"{live_server_url}/s/{token}/")
    expect(reader.locator(".message")).to_have_count(2)
    audit.check(reader, "shared page")
    reader.goto(f"{live_server_url}/s/{'A' * 43}/")
    audit.check(reader, "missing link")

    member = new_context(bypass_csp=True).new_page()
    member.goto(f"{live_server_url}/login/")
    log_in(member, "bob", BOB_PASSWORD)
    member.goto(f"{live_server_url}/c/{bob_conversation.public_id}/")
    expect(member.locator(".message")).to_have_count(2)
    member.get_by_role("button", name="More").click()
    member.get_by_role("button", name="Share…").click()
    expect(member.locator("#share-links [data-share]")).to_have_count(1)
    audit.check(member, "share dialog")
    member.goto(f"{live_server_url}/account/shares/")
    expect(member.locator("[data-share]")).to_have_count(1)
    audit.check(member, "my shared links")
    shot(member, "my-shares")
    audit.assert_clean()
