"""Hostile content is inert on every page that shows content: the chat page, the account pages and the
admin. Each string of tests/fixtures/hostile.py goes where a member, an admin, a provider or a model
could put it; the browser must then open no dialog, break no rule of the Content Security Policy,
ask no other host for anything and grow no handler, script, frame or script URL, while the string is
still there to read as text.
"""

import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from playwright.sync_api import BrowserContext, Locator, Page, expect

from conversations import accounts, sharing
from conversations.messaging import SNAPSHOT_MESSAGES
from conversations.models import ChatModel, Conversation, Message, Provider, UsageRecord
from tests.fixtures import hostile
from tests.fixtures.browser import shot
from tests.fixtures.hostile_watch import CHAT_CONTENT, FORBIDDEN_IN_FORMS, Guard
from tests.fixtures.users import ALICE_PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MALLORY_PASSWORD = "mallory-paper-lantern-cobalt"


@pytest.fixture
def guarded(new_context: Callable[..., BrowserContext], live_server_url: str) -> Callable[[], Guard]:
    return lambda: Guard(new_context(), live_server_url)


@pytest.fixture
def hostile_group(db) -> Group:
    return Group.objects.create(name=hostile.GROUP_NAME)


@pytest.fixture
def mallory(db, hostile_group):
    """A member whose every name is markup."""
    user = make_user(
        hostile.USERNAME, MALLORY_PASSWORD, first_name=hostile.FIRST_NAME, last_name=hostile.LAST_NAME
    )
    user.groups.add(hostile_group)
    return user


@pytest.fixture
def hostile_model(db, offline_upstream, hostile_group) -> ChatModel:
    """The offline upstream's chat model, under a provider and a display name that are markup, limited
    to the group whose name is markup; a second model of the same provider has markup for an id."""
    provider = Provider.objects.create(
        name=hostile.PROVIDER_NAME, base_url=offline_upstream.base_url, is_offline=True
    )
    model = ChatModel.objects.create(
        provider=provider, upstream_id="offline-chat", display_name=hostile.MODEL_DISPLAY_NAME
    )
    model.allowed_groups.add(hostile_group)
    ChatModel.objects.create(
        provider=provider, upstream_id=hostile.MODEL_UPSTREAM_ID, display_name="Second", enabled=False
    )
    return model


@pytest.fixture
def hostile_records(mallory, hostile_model) -> Conversation:
    """What the admin lists: a pinned conversation, a failed reply and a usage row, all markup."""
    conversation = Conversation.objects.create(
        owner=mallory, title=hostile.STORED_TITLE, model=hostile_model, pinned=True
    )
    prompt = Message(conversation=conversation, role=Message.Role.USER)
    prompt.set_parts([{"type": "text", "text": hostile.FIRST_MESSAGE}])
    prompt.save()
    reply = Message.objects.create(
        conversation=conversation,
        parent=prompt,
        role=Message.Role.ASSISTANT,
        status=Message.Status.ERROR,
        error_code=hostile.ERROR_CODE,
        error_detail=hostile.ERROR_DETAIL,
        model=hostile_model,
    )
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf"])
    UsageRecord.objects.create(
        user=mallory,
        conversation=conversation,
        message=reply,
        provider=hostile_model.provider,
        model=hostile_model,
        model_name=hostile.USAGE_MODEL_NAME,
        status=UsageRecord.Status.ERROR,
        error_code=hostile.ERROR_CODE,
        prompt_tokens=12,
        cost=Decimal("0.0001"),
    )
    return conversation


# --- The chat page --------------------------------------------------------------------------------


def offline(directive: dict) -> str:
    return "!offline " + json.dumps(directive)


def send(page: Page, text: str, status: str = "complete") -> Locator:
    """Send a message and wait until its reply has finished; returns the reply."""
    replies = page.locator(".message-assistant")
    count = replies.count()
    composer = page.get_by_label("Message", exact=True)
    composer.fill(text)
    composer.press("Enter")
    expect(replies).to_have_count(count + 1)
    reply = replies.nth(count)
    expect(reply).to_have_class(re.compile(rf"status-{status}"))
    return reply


def check_thread(page: Page) -> None:
    """Every hostile string of the thread is there to read, and the replies say what they should."""
    users = page.locator(".message-user .plain-text")
    replies = page.locator(".message-assistant")
    expect(users.first).to_contain_text(hostile.FIRST_MESSAGE.splitlines()[1])
    expect(replies.first.locator(".markdown")).to_contain_text("You said")
    for index, case in enumerate(hostile.REPLY_CASES, start=1):
        # The member's message is the directive, shown as typed.
        expect(users.nth(index)).to_have_text(offline(case.directive))
        for text in case.shown:
            expect(replies.nth(index), f"{case.name}: {text}").to_contain_text(text)
    failed = replies.nth(len(hostile.REPLY_CASES) + 1)
    expect(failed.locator(".notice-detail")).to_contain_text(hostile.ERROR_MESSAGE)
    index, case = next((i, c) for i, c in enumerate(hostile.REPLY_CASES, start=1) if c.name == "reasoning")
    expect(replies.nth(index).locator("details.reasoning pre")).to_have_text(case.directive["reasoning"])


def check_names(page: Page, title: str) -> None:
    expect(page.locator("#conversation-title")).to_have_text(title)
    assert page.title() == f"{title} · chatsite"
    expect(page.locator("#pinned-list .conversation-link")).to_have_text([hostile.STORED_TITLE])
    expect(page.locator("#recent-list .conversation-link")).to_have_text([title])
    expect(page.locator("#model-picker option")).to_have_text([hostile.MODEL_DISPLAY_NAME])
    expect(page.locator(".site-header")).to_contain_text(hostile.USERNAME)


def test_hostile_content_on_the_chat_page_is_inert(guarded, live_server_url, mallory, hostile_records):
    # The reload below shows the whole thread only while it fits in one snapshot.
    assert 2 * (len(hostile.REPLY_CASES) + 2) <= SNAPSHOT_MESSAGES, "split the reply cases in two threads"
    guard = guarded()
    page = guard.page
    guard.log_in(hostile.USERNAME, MALLORY_PASSWORD)
    expect(page).to_have_url(f"{live_server_url}/")
    guard.wait_for_chat()

    send(page, hostile.FIRST_MESSAGE)
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    for case in hostile.REPLY_CASES:
        send(page, offline(case.directive))
    send(page, offline({"status": 400, "error_message": hostile.ERROR_MESSAGE}), status="error")
    check_names(page, hostile.MODEL_TITLE)
    check_thread(page)
    guard.audit(CHAT_CONTENT, min_roots=4)

    # Renamed elsewhere (the API, as another tab would): the change arrives over the socket.
    public_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    csrf = next(c["value"] for c in guard.context.cookies() if c["name"] == "csrftoken")
    response = page.request.patch(
        f"{live_server_url}/api/conversations/{public_id}/",
        data=json.dumps({"title": hostile.RENAMED_TITLE}),
        headers={"X-CSRFToken": csrf, "Content-Type": "application/json"},
    )
    assert response.ok, response.text()
    expect(page.locator("#conversation-title")).to_have_text(hostile.RENAMED_TITLE)
    check_names(page, hostile.RENAMED_TITLE)
    guard.audit(CHAT_CONTENT, min_roots=4)

    # The same conversation from the server's snapshot rather than from deltas.
    page.reload()
    expect(page.locator(".message-assistant")).to_have_count(len(hostile.REPLY_CASES) + 2)
    check_names(page, hostile.RENAMED_TITLE)
    check_thread(page)
    guard.audit(CHAT_CONTENT, min_roots=4)
    shot(page, "chat-end")
    page.locator(".message-assistant").filter(has_text="outside-images").scroll_into_view_if_needed()
    shot(page, "chat-middle")

    # Searching for markup finds it in both conversations' messages, as text with the match marked.
    query = 'onerror=alert("first title")'
    page.get_by_label("Search conversations").fill(query)
    results = page.locator("#search-results .conversation-item")
    expect(results).to_have_count(2)
    expect(results.locator("mark").first).to_have_text(query)
    expect(page.locator("#search-results")).to_contain_text(hostile.RENAMED_TITLE)
    expect(page.locator("#search-results")).to_contain_text(hostile.STORED_TITLE)
    guard.audit(CHAT_CONTENT, min_roots=4)
    shot(page, "search")
    page.get_by_label("Search conversations").fill("")
    expect(page.locator("#search-results")).to_be_hidden()

    # The export is a download named after the title, never a page.
    export = page.request.get(f"{live_server_url}/api/conversations/{public_id}/export/?format=md")
    assert export.ok
    assert export.headers["content-type"].startswith("text/markdown")
    assert export.headers["content-disposition"].startswith("attachment;")
    assert "<" not in export.headers["content-disposition"]
    assert export.headers["x-content-type-options"] == "nosniff"

    # The stored conversation: a failed reply whose detail is markup.
    page.locator("#pinned-list .conversation-link").click()
    expect(page.locator("#conversation-title")).to_have_text(hostile.STORED_TITLE)
    expect(page.locator(".message-user .plain-text")).to_have_text(hostile.FIRST_MESSAGE)
    expect(page.locator(".notice-detail")).to_have_text(hostile.ERROR_DETAIL)
    guard.audit(CHAT_CONTENT, min_roots=4)


def test_outside_media_in_a_reply_is_never_requested(guarded, mallory, hostile_model):
    guard = guarded()
    guard.log_in(hostile.USERNAME, MALLORY_PASSWORD)
    guard.wait_for_chat()
    for case in hostile.RENDERER_GAPS:
        reply = send(guard.page, offline(case.directive))
        for text in case.shown:
            expect(reply, f"{case.name}: {text}").to_contain_text(text)
    guard.audit(CHAT_CONTENT, min_roots=4)


def test_imported_messages_of_every_kind_are_inert(guarded, mallory, hostile_model):
    guard = guarded()
    page = guard.page
    guard.log_in(hostile.USERNAME, MALLORY_PASSWORD)
    guard.wait_for_chat()
    page.get_by_role("button", name="More").click()
    page.locator("#import-file").set_input_files(
        files=[
            {
                "name": "hostile.json",
                "mimeType": "application/json",
                "buffer": json.dumps(hostile.imported_file()).encode(),
            }
        ]
    )

    expect(page.locator("#conversation-title")).to_have_text(hostile.IMPORTED_TITLE)
    expect(page.locator(".conversation-item.active")).to_have_text(hostile.IMPORTED_TITLE)
    thread = page.locator("#messages")
    expect(thread.locator(".message")).to_have_count(5)
    # A line that starts with <script> is an HTML block: the rest of the line stays text too.
    expect(thread.locator(".message-system")).to_contain_text("system [js](javascript:alert(1))")
    expect(thread.locator(".message-user .plain-text")).to_have_text(hostile.FIRST_MESSAGE)
    expect(thread.locator("details.reasoning pre")).to_have_text(hostile.SYSTEM_TEXT)
    expect(thread.locator(".refusal")).to_have_text(hostile.REFUSAL)
    expect(thread.locator("details.tool summary").first).to_contain_text(hostile.TOOL_NAME)
    # Arguments are shown indented: the same JSON, as text.
    arguments = thread.locator("details.tool pre").first
    expect(arguments).to_have_text(json.dumps(json.loads(hostile.TOOL_ARGUMENTS), indent=2))
    expect(thread.locator("details.tool pre").last).to_have_text(hostile.TOOL_RESULT)
    expect(thread.locator(".notice-detail")).to_have_text(hostile.ERROR_DETAIL)
    expect(thread.locator(".message-assistant").last).to_contain_text("failed partly")
    guard.audit(CHAT_CONTENT, min_roots=4)

    page.reload()
    expect(thread.locator(".message")).to_have_count(5)
    for details in thread.locator("details").all():
        details.locator("summary").click()
    expect(thread.locator("details.tool pre").last).to_be_visible()
    guard.audit(CHAT_CONTENT, min_roots=4)
    shot(page, "imported")


# --- The account pages ----------------------------------------------------------------------------


def test_hostile_names_on_the_account_pages_are_inert(guarded, live_server_url, mallory, hostile_model):
    guard = guarded()
    page = guard.page
    # A refused login shows the username again, in the form.
    guard.goto(f"{live_server_url}/login/")
    guard.self_check()
    page.get_by_label("Username").fill(hostile.USERNAME)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-errors")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value(hostile.USERNAME)
    guard.audit("main", forbidden=FORBIDDEN_IN_FORMS)

    guard.log_in(hostile.USERNAME, MALLORY_PASSWORD)
    guard.goto(f"{live_server_url}/account/")
    expect(page.locator("main")).to_contain_text(f"Logged in as {hostile.USERNAME}.")
    expect(page.locator(".site-header")).to_contain_text(hostile.USERNAME)
    expect(page.get_by_label("Default model").locator("option")).to_contain_text([hostile.MODEL_DISPLAY_NAME])
    guard.audit("main", forbidden=FORBIDDEN_IN_FORMS)
    page.get_by_label("Default model").select_option(label=hostile.MODEL_DISPLAY_NAME)
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_label("Default model")).to_have_value(str(hostile_model.pk))
    guard.audit("main", forbidden=FORBIDDEN_IN_FORMS)
    shot(page, "account")

    guard.goto(f"{live_server_url}/account/password/")
    expect(page.locator(".site-header")).to_contain_text(hostile.USERNAME)
    guard.audit("main", forbidden=FORBIDDEN_IN_FORMS)


# --- The admin ------------------------------------------------------------------------------------


@pytest.fixture
def hostile_alice(alice):
    alice.first_name = hostile.ADMIN_FIRST_NAME
    alice.save(update_fields=["first_name"])
    return alice


def admin_pages(conversation: Conversation, mallory) -> Iterator[tuple[str, list[str]]]:
    """Each admin page that shows what was written, and the strings it must show."""
    reply = conversation.messages.get(role=Message.Role.ASSISTANT)
    model = conversation.model
    usage = UsageRecord.objects.get(conversation=conversation)
    base = "/admin/conversations"
    yield "/admin/", [hostile.ADMIN_FIRST_NAME]
    yield "/admin/auth/user/", [hostile.USERNAME, hostile.FIRST_NAME, hostile.LAST_NAME]
    yield f"/admin/auth/user/{mallory.pk}/change/", [hostile.USERNAME, hostile.GROUP_NAME]
    yield "/admin/auth/group/", [hostile.GROUP_NAME]
    yield f"{base}/conversation/", [hostile.STORED_TITLE, hostile.USERNAME, hostile.MODEL_DISPLAY_NAME]
    yield f"{base}/conversation/{conversation.pk}/change/", [hostile.STORED_TITLE, hostile.USERNAME]
    yield (
        f"{base}/message/",
        [hostile.STORED_TITLE, hostile.USERNAME, hostile.ERROR_CODE, hostile.MODEL_DISPLAY_NAME],
    )
    yield (
        f"{base}/message/{reply.pk}/change/",
        [hostile.ERROR_DETAIL, hostile.ERROR_CODE, hostile.STORED_TITLE],
    )
    yield f"{base}/chatmodel/", [hostile.MODEL_DISPLAY_NAME, hostile.PROVIDER_NAME, hostile.MODEL_UPSTREAM_ID]
    yield f"{base}/chatmodel/{model.pk}/change/", [hostile.MODEL_DISPLAY_NAME, hostile.GROUP_NAME]
    yield f"{base}/provider/", [hostile.PROVIDER_NAME]
    yield f"{base}/provider/{model.provider.pk}/change/", [hostile.PROVIDER_NAME]
    yield f"{base}/usagerecord/", [hostile.USAGE_MODEL_NAME, hostile.USERNAME, hostile.PROVIDER_NAME]
    yield f"{base}/usagerecord/{usage.pk}/change/", [hostile.USAGE_MODEL_NAME, hostile.ERROR_CODE]
    yield f"{base}/accountlink/", [hostile.USERNAME]
    yield f"{base}/sharelink/", [hostile.USERNAME, hostile.STORED_TITLE]


def test_hostile_content_in_the_admin_is_inert(
    guarded, live_server_url, hostile_alice, mallory, hostile_records
):
    accounts.issue_reset(mallory, created_by=hostile_alice)
    sharing.create_link(hostile_records, "anyone")
    guard = guarded()
    page = guard.page
    guard.log_in("alice", ALICE_PASSWORD)

    for path, strings in admin_pages(hostile_records, mallory):
        guard.goto(f"{live_server_url}{path}")
        for text in strings:
            expect(page.locator("body"), f"{path}: {text}").to_contain_text(text)
        guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)
        if path.endswith("/usagerecord/"):
            shot(page, "usage")

    # A search echoes what was typed.
    guard.goto(
        f"{live_server_url}/admin/conversations/usagerecord/?{urlencode({'q': hostile.USAGE_MODEL_NAME})}"
    )
    expect(page.locator("#searchbar")).to_have_value(hostile.USAGE_MODEL_NAME)
    expect(page.locator("#result_list")).to_contain_text(hostile.USAGE_MODEL_NAME)
    guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)

    # An action's message names the provider.
    guard.goto(f"{live_server_url}/admin/conversations/provider/")
    page.locator("input.action-select").first.check()
    page.locator("select[name=action]").select_option("test_connection")
    page.locator("button[name=index]").click()
    expect(page.locator(".messagelist")).to_contain_text(hostile.PROVIDER_NAME)
    guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)

    # Saving a model logs it under its name, which the index then lists.
    guard.goto(f"{live_server_url}/admin/conversations/chatmodel/{hostile_records.model.pk}/change/")
    page.locator("input[name=_save]").click()
    expect(page.locator(".messagelist")).to_contain_text(hostile.MODEL_DISPLAY_NAME)
    guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)
    assert LogEntry.objects.filter(object_repr=hostile.MODEL_DISPLAY_NAME).exists()
    guard.goto(f"{live_server_url}/admin/")
    expect(page.locator("#recent-actions-module")).to_contain_text(hostile.MODEL_DISPLAY_NAME)
    guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)

    # The member's own pages for a reset link.
    guard.goto(f"{live_server_url}/admin/auth/user/{mallory.pk}/reset-link/")
    expect(page.locator("#content")).to_contain_text(hostile.USERNAME)
    guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)
    page.get_by_role("button", name="Issue the link").click()
    expect(page.locator("#content")).to_contain_text(f"Link for {hostile.USERNAME}")
    guard.audit("#content", min_roots=1, forbidden=FORBIDDEN_IN_FORMS)
    shot(page, "reset-link")
