"""The sidebar's delete with Undo and its folders, in a real browser against a live server."""

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from conversations.models import Conversation, Folder
from tests.fixtures.browser import shot
from tests.fixtures.users import BOB_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 375, "height": 812}, "has_touch": True, "is_mobile": True}


@pytest.fixture
def bobs_conversations(bob, offline_model) -> dict[str, Conversation]:
    """Three conversations, the newest first: "Weekend plans", "Shopping list", "Spring poem"."""
    start = timezone.now() - timedelta(hours=1)
    titles = ["Spring poem", "Shopping list", "Weekend plans"]
    return {
        title: Conversation.objects.create(
            owner=bob, title=title, updated_at=start + timedelta(minutes=number)
        )
        for number, title in enumerate(titles)
    }


# Deleting asks nothing any more: any dialog a page opens is noted here.
DIALOGS: list[str] = []


@pytest.fixture(autouse=True)
def no_dialogs():
    DIALOGS.clear()
    yield
    assert DIALOGS == []


def open_tab(context: BrowserContext, base_url: str, *, log_in: bool = False) -> Page:
    """A chat page of bob's, once its socket is open (hello sets the composer's limit)."""
    page = context.new_page()
    page.on("dialog", lambda dialog: (DIALOGS.append(dialog.message), dialog.dismiss()))
    if log_in:
        page.goto(f"{base_url}/login/")
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Password").fill(BOB_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{base_url}/")
    else:
        page.goto(f"{base_url}/")
    expect(page.get_by_label("Message", exact=True)).to_have_attribute("maxlength", re.compile(r"\d+"))
    return page


def recent(page: Page):
    return page.locator("#recent-list .conversation-item")


def row(page: Page, title: str):
    return page.locator(".conversation-item").filter(has=page.get_by_role("link", name=title, exact=True))


def toast(page: Page):
    return page.locator("#toast-region .toast")


def test_a_deleted_conversation_comes_back_with_undo(
    new_context: Callable[..., BrowserContext], live_server_url: str, bobs_conversations
):
    context = new_context()
    page = open_tab(context, live_server_url, log_in=True)
    other = open_tab(context, live_server_url)
    everything = ["Weekend plans", "Shopping list", "Spring poem"]
    expect(recent(page)).to_have_text(everything)
    expect(page.locator("#toast-region")).to_have_attribute("role", "status")

    # From the keyboard: the link, then Tab through pin, "Move to…" and rename to delete.
    page.get_by_role("link", name="Shopping list").focus()
    for _ in range(4):
        page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Delete: Shopping list")).to_be_focused()
    page.keyboard.press("Enter")

    # At once, without asking; the toast's Undo takes the focus the delete button had.
    expect(recent(page)).to_have_text(["Weekend plans", "Spring poem"])
    expect(recent(other)).to_have_text(["Weekend plans", "Spring poem"])
    expect(toast(page)).to_have_text(re.compile(r"^Conversation deleted\s*Undo$"))
    undo = toast(page).get_by_role("button", name="Undo")
    expect(undo).to_be_focused()
    assert Conversation.objects.get(title="Shopping list").deleted_at is not None
    shot(page, "1-toast")

    page.keyboard.press("Enter")

    expect(recent(page)).to_have_text(everything)
    expect(recent(other)).to_have_text(everything)
    expect(toast(page)).to_have_count(0)
    expect(page.get_by_role("link", name="Shopping list")).to_be_focused()
    assert Conversation.objects.get(title="Shopping list").deleted_at is None
    # Another tab's change redraws the list here: the focus stays on the row that had it.
    row(other, "Weekend plans").hover()
    other.get_by_role("button", name="Pin: Weekend plans").click()
    expect(page.locator("#pinned-list .conversation-item")).to_have_count(1)
    expect(page.get_by_role("link", name="Shopping list")).to_be_focused()
    row(other, "Weekend plans").hover()
    other.get_by_role("button", name="Unpin: Weekend plans").click()
    expect(recent(page)).to_have_text(everything)
    expect(page.get_by_role("link", name="Shopping list")).to_be_focused()

    # The open conversation: the page goes to a new chat; Undo brings it back and opens it again.
    poem = bobs_conversations["Spring poem"]
    page.get_by_role("link", name="Spring poem").click()
    expect(page).to_have_url(f"{live_server_url}/c/{poem.public_id}/")
    page.get_by_role("button", name="Delete: Spring poem").click()
    expect(page).to_have_url(f"{live_server_url}/")
    expect(page.locator("#conversation-title")).to_have_text("New conversation")
    expect(recent(other)).to_have_text(["Weekend plans", "Shopping list"])
    expect(page.locator("#composer-error")).to_be_hidden()
    # A pointer's delete leaves the focus where the page put it.
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    toast(page).get_by_role("button", name="Undo").click()
    expect(page).to_have_url(f"{live_server_url}/c/{poem.public_id}/")
    expect(page.locator("#conversation-title")).to_have_text("Spring poem")
    expect(recent(other)).to_have_text(everything)

    # Left alone, the toast goes after a few seconds, and the delete stays.
    row(page, "Weekend plans").hover()
    page.get_by_role("button", name="Delete: Weekend plans").click()
    expect(toast(page)).to_have_count(1)
    page.mouse.move(900, 400)
    expect(toast(page)).to_have_count(0, timeout=12_000)
    page.reload()
    expect(recent(page)).to_have_text(["Shopping list", "Spring poem"])


def test_undo_on_a_phone(
    new_context: Callable[..., BrowserContext], live_server_url: str, bobs_conversations
):
    page = open_tab(new_context(**PHONE), live_server_url, log_in=True)
    menu = page.get_by_role("button", name="Show conversations")

    menu.click()
    page.get_by_role("link", name="Shopping list").click()
    menu.click()
    # On a touch screen only the open conversation shows its buttons.
    page.get_by_role("button", name="Delete: Shopping list").click()

    expect(page).to_have_url(f"{live_server_url}/")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    expect(toast(page)).to_be_in_viewport()
    # The tab that deleted it says nothing of a conversation gone: the toast says it.
    expect(page.locator("#composer-error")).to_be_hidden()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "nothing is wider than the phone"
    shot(page, "1-toast")
    toast(page).get_by_role("button", name="Undo").click()
    expect(page.locator("#conversation-title")).to_have_text("Shopping list")
    menu.click()
    expect(recent(page)).to_have_text(["Weekend plans", "Shopping list", "Spring poem"])


def test_folders_group_conversations_and_follow_other_tabs(
    new_context: Callable[..., BrowserContext], live_server_url: str, bobs_conversations
):
    context = new_context()
    page = open_tab(context, live_server_url, log_in=True)
    other = open_tab(context, live_server_url)
    folders = page.locator(".folder-group")

    page.get_by_role("button", name="New folder").click()
    name = page.get_by_label("Folder name")
    expect(name).to_be_focused()
    name.fill("Travel")
    name.press("Enter")

    expect(folders.locator(".folder-name")).to_have_text(["Travel"])
    expect(page.get_by_role("button", name="Travel", exact=True)).to_be_focused()
    expect(folders).to_contain_text("No conversations in this folder")
    expect(other.locator(".folder-group .folder-name")).to_have_text(["Travel"])

    # "Move to…" with the pointer.
    row(page, "Weekend plans").hover()
    page.get_by_role("button", name="Move to…: Weekend plans").click()
    choices = page.get_by_role("menu", name="Move to…: Weekend plans").get_by_role("menuitemradio")
    expect(choices).to_have_text(["No folder", "Travel"])
    expect(choices.first).to_have_attribute("aria-checked", "true")
    shot(page, "1-move-menu")
    choices.filter(has_text="Travel").click()

    travel = page.locator(".folder-group").filter(has_text="Travel")
    expect(travel.locator(".conversation-item")).to_have_text(["Weekend plans"])
    expect(recent(page)).to_have_text(["Shopping list", "Spring poem"])
    expect(other.locator(".folder-group .conversation-item")).to_have_text(["Weekend plans"])
    expect(recent(other)).to_have_text(["Shopping list", "Spring poem"])

    # And from the keyboard: Enter opens the menu on the current choice, arrows move, Enter picks.
    page.get_by_role("link", name="Spring poem").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Move to…: Spring poem")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("menuitemradio", name="No folder")).to_be_focused()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    expect(travel.locator(".conversation-item")).to_have_text(["Weekend plans", "Spring poem"])
    expect(page.get_by_role("link", name="Spring poem")).to_be_focused()
    shot(page, "2-desktop")

    # Kept by the server: a reload shows the same folder, newest first; a closed folder stays closed.
    page.reload()
    expect(travel.locator(".conversation-item")).to_have_text(["Weekend plans", "Spring poem"])
    expect(recent(page)).to_have_text(["Shopping list"])
    toggle = page.get_by_role("button", name="Travel", exact=True)
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    expect(travel.locator(".conversation-item").first).to_be_hidden()
    page.reload()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(travel.locator(".conversation-item")).to_have_count(2)

    page.locator(".folder-header").hover()
    page.get_by_role("button", name="Rename: Travel").click()
    name = page.get_by_label("Folder name")
    name.fill("Trips")
    name.press("Enter")
    expect(other.locator(".folder-group .folder-name")).to_have_text(["Trips"])

    # On a phone the folder is in the drawer with its conversations.
    phone = open_tab(new_context(**PHONE), live_server_url, log_in=True)
    phone.get_by_role("button", name="Show conversations").click()
    phone.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left === 0")
    expect(phone.locator(".folder-group .conversation-item")).to_have_text(["Weekend plans", "Spring poem"])
    shot(phone, "3-phone")

    # Deleting the folder keeps its conversations: back in "Recent", here and in the other tab.
    page.locator(".folder-header").hover()
    page.get_by_role("button", name="Delete: Trips").click()
    everything = ["Weekend plans", "Shopping list", "Spring poem"]
    expect(folders).to_have_count(0)
    expect(recent(page)).to_have_text(everything)
    expect(recent(other)).to_have_text(everything)
    expect(toast(page)).to_have_text("Folder deleted; its conversations are kept")
    assert not Folder.objects.exists()
    assert Conversation.objects.filter(deleted_at=None, folder=None).count() == 3
    page.reload()
    expect(recent(page)).to_have_text(everything)
