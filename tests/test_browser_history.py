"""A long conversation opens on its newest page and loads older messages as the reader scrolls up,
in a real browser against a live server."""

from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, expect

from conversations import messaging
from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat
from tests.test_messaging import long_conversation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chat(new_context: Callable[..., BrowserContext], live_server_url: str, bob, offline_model) -> Chat:
    chat = Chat(new_context().new_page(), live_server_url)
    chat.log_in()
    return chat


def scroll_to_top(chat: Chat) -> None:
    chat.page.locator("#messages-scroller").evaluate("el => { el.scrollTop = 0; }")


def test_a_long_conversation_opens_at_its_end_and_loads_older_pages_on_scroll(chat, bob_conversation):
    long_conversation(bob_conversation, 130)
    chat.page.goto(f"{chat.base_url}/c/{bob_conversation.public_id}/")
    articles = chat.page.locator("article.message")
    expect(articles).to_have_count(messaging.SNAPSHOT_MESSAGES)
    expect(articles.last).to_contain_text("message 129")
    expect(chat.page.get_by_text("message 129")).to_be_in_viewport()

    first_shown = articles.first
    expect(first_shown).to_contain_text("message 80")
    scroll_to_top(chat)
    expect(articles).to_have_count(100)
    # The page above arrives without moving what the reader was looking at.
    expect(chat.page.get_by_text("message 80", exact=True)).to_be_in_viewport()
    shot(chat.page, "1-second-page")

    scroll_to_top(chat)
    expect(articles).to_have_count(130)
    expect(articles.first).to_contain_text("message 0")
    expect(chat.page.get_by_role("button", name="Show older messages")).to_be_hidden()
    scroll_to_top(chat)
    expect(chat.page.get_by_text("message 0", exact=True)).to_be_in_viewport()
    assert chat.dialogs == []


def test_older_messages_can_be_loaded_from_the_keyboard(chat, bob_conversation):
    long_conversation(bob_conversation, 60)
    chat.page.goto(f"{chat.base_url}/c/{bob_conversation.public_id}/")
    articles = chat.page.locator("article.message")
    expect(articles).to_have_count(messaging.SNAPSHOT_MESSAGES)
    button = chat.page.get_by_role("button", name="Show older messages")
    button.focus()
    chat.page.keyboard.press("Enter")
    expect(articles).to_have_count(60)
    expect(button).to_be_hidden()
