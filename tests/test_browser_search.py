"""The sidebar search in a real browser against a live server."""

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from conversations.models import Conversation
from tests.fixtures.browser import shot
from tests.fixtures.users import BOB_PASSWORD
from tests.test_search import conversation_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def bobs_conversations(bob, charlie) -> dict[str, Conversation]:
    conversations = {
        "weather": conversation_with(
            bob, "Weekend plans", "今天北京的天气怎么样", "北京今天晴天最高气温二十五度适合出门"
        ),
        "shopping": conversation_with(bob, "Shopping list", "Eggs, milk and bread.", "Noted."),
        "poem": conversation_with(bob, "Spring poem", "Write a poem about Shanghai in spring."),
    }
    conversation_with(charlie, "Charlie's trip", "北京有什么好玩的")
    return conversations


def log_in(context: BrowserContext, base_url: str) -> Page:
    page = context.new_page()
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill(BOB_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base_url}/")
    return page


def test_it_finds_a_conversation_by_a_chinese_word_in_its_messages(
    new_context: Callable[..., BrowserContext], live_server_url: str, offline_model, bobs_conversations
):
    page = log_in(new_context(), live_server_url)
    listed = page.locator("#recent-list .conversation-item")
    results = page.locator("#search-results .conversation-item")
    search = page.get_by_label("Search conversations")
    expect(listed).to_have_count(3)

    # Ctrl+K from anywhere on the page: here the message box has the focus.
    expect(page.get_by_label("Message", exact=True)).to_be_focused()
    page.keyboard.press("Control+K")
    expect(search).to_be_focused()
    page.keyboard.type("北京")

    expect(results).to_have_count(1)
    expect(results).to_contain_text("Weekend plans")
    expect(results.locator(".result-snippet")).to_have_text("北京今天晴天最高气温二十五度适合出门")
    expect(results.locator("mark").first).to_have_text("北京")
    expect(page.locator("#recent-list")).to_be_hidden()
    shot(page, "1-desktop")

    # A result opens like any conversation, and the search stays for the next one.
    results.locator(".conversation-link").click()
    weather = bobs_conversations["weather"]
    expect(page).to_have_url(re.compile(rf"/c/{weather.public_id}/$"))
    expect(page.locator("#conversation-title")).to_have_text("Weekend plans")
    expect(results).to_have_count(1)

    search.fill("no such thing")
    expect(page.locator("#search-status")).to_have_text("No conversation matches.")
    expect(results).to_have_count(0)

    search.press("Escape")
    expect(search).to_have_value("")
    expect(listed).to_have_count(3)
    expect(page.locator("#search-results")).to_be_hidden()


def test_the_search_works_on_a_phone(
    new_context: Callable[..., BrowserContext], live_server_url: str, offline_model, bobs_conversations
):
    page = log_in(new_context(viewport={"width": 375, "height": 812}, has_touch=True), live_server_url)
    search = page.get_by_label("Search conversations")
    expect(page.locator("#recent-list .conversation-item")).to_have_count(3)  # the page's script runs
    expect(search).to_be_hidden()

    # The box is in the closed drawer: the shortcut opens it first.
    page.keyboard.press("Control+K")
    expect(search).to_be_focused()
    page.keyboard.type("北京")

    results = page.locator("#search-results .conversation-item")
    expect(results).to_have_count(1)
    expect(results).to_contain_text("Weekend plans")
    box = search.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    shot(page, "2-phone")

    # Esc clears the box first and only then closes the drawer.
    search.press("Escape")
    expect(search).to_have_value("")
    expect(page.locator("#recent-list .conversation-item")).to_have_count(3)
    expect(search).to_be_visible()
    search.press("Escape")
    expect(search).to_be_hidden()
