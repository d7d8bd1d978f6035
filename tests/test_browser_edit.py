"""Editing a message into a new branch, jumping to the latest text, and the chat page's keys, in a
real browser against a live server and the offline upstream."""

import re

import pytest
from playwright.sync_api import Locator, expect

from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

COMPLETE = re.compile(r"status-complete")
STREAMING = re.compile(r"status-streaming")
PHONE = {"viewport": {"width": 375, "height": 812}, "has_touch": True, "is_mobile": True}
# A reply many screens tall that streams for about 16 seconds, asked for in a short message.
TALL_REPLY = offline(words=4000, pace_ms=4)


def user_messages(chat: Chat) -> Locator:
    return chat.page.locator(".message-user")


def editor(chat: Chat) -> Locator:
    return chat.page.get_by_label("Edit your message")


def jump_button(chat: Chat) -> Locator:
    return chat.page.get_by_role("button", name="Jump to latest")


def distance_to_end(chat: Chat) -> float:
    return chat.page.locator("#messages-scroller").evaluate(
        "el => el.scrollHeight - el.scrollTop - el.clientHeight"
    )


def scroll_up_during_reply(chat: Chat) -> None:
    """Wait until the streaming reply is a few screens tall, then turn the mouse wheel up."""
    chat.page.wait_for_function(
        "() => { const el = document.querySelector('#messages-scroller');"
        " return el.scrollHeight > 3 * el.clientHeight; }"
    )
    expect(chat.last_reply).to_have_class(STREAMING)
    chat.page.locator("#messages-scroller").hover()
    chat.page.mouse.wheel(0, -1200)
    chat.page.wait_for_function(
        "() => { const el = document.querySelector('#messages-scroller');"
        " return el.scrollHeight - el.scrollTop - el.clientHeight > 600; }"
    )


def send_and_wait(chat: Chat, text: str) -> None:
    count = chat.replies.count()
    chat.send(text)
    expect(chat.replies).to_have_count(count + 1)
    expect(chat.last_reply).to_have_class(COMPLETE)


def test_editing_an_earlier_message_starts_a_branch_that_survives_a_reload(open_chat):
    chat = open_chat()
    send_and_wait(chat, "First question")
    send_and_wait(chat, "Second question")
    old_reply_ids = [reply.get_attribute("data-id") for reply in chat.replies.all()]

    user_messages(chat).first.get_by_role("button", name="Edit", exact=True).click()

    expect(editor(chat)).to_have_value("First question")
    expect(editor(chat)).to_be_focused()
    shot(chat.page, "1-editor-open")
    editor(chat).fill("First question, asked again")
    editor(chat).press("Shift+Enter")  # a new line, not a save
    editor(chat).press_sequentially("on two lines")
    expect(editor(chat)).to_have_value("First question, asked again\non two lines")
    editor(chat).press("Enter")

    # The new branch: the edited message and its own reply; the second question stays on the old one.
    expect(user_messages(chat)).to_have_count(1)
    expect(user_messages(chat).locator(".plain-text")).to_have_text(
        "First question, asked again\non two lines"
    )
    expect(user_messages(chat).locator(".version-label")).to_have_text("2/2")
    expect(chat.replies).to_have_count(1)
    expect(chat.last_reply).to_have_class(COMPLETE)
    assert chat.last_reply.get_attribute("data-id") not in old_reply_ids
    assert "First question, asked again" in chat.reply_text()
    expect(editor(chat)).to_have_count(0)
    expect(chat.composer).to_be_focused()
    shot(chat.page, "2-new-branch")

    other = Chat(chat.page.context.new_page(), chat.base_url)
    other.page.goto(chat.page.url)
    other.wait_until_connected()
    expect(user_messages(other).locator(".version-label")).to_have_text("2/2")
    expect(user_messages(other)).to_have_count(1)

    user_messages(chat).get_by_role("button", name="Previous version").click()

    expect(user_messages(chat).locator(".plain-text")).to_have_text(["First question", "Second question"])
    expect(user_messages(chat).first.locator(".version-label")).to_have_text("1/2")
    expect(chat.replies).to_have_count(2)
    assert [reply.get_attribute("data-id") for reply in chat.replies.all()] == old_reply_ids
    # The choice is the conversation's, so the other tab follows it.
    expect(user_messages(other).first.locator(".version-label")).to_have_text("1/2")
    expect(user_messages(other)).to_have_count(2)

    chat.page.reload()
    chat.wait_until_connected()
    expect(user_messages(chat).first.locator(".version-label")).to_have_text("1/2")
    expect(user_messages(chat).locator(".plain-text")).to_have_text(["First question", "Second question"])
    user_messages(chat).first.get_by_role("button", name="Next version").click()
    expect(user_messages(chat).locator(".plain-text")).to_have_text(
        ["First question, asked again\non two lines"]
    )


def test_cancelling_an_edit_keeps_the_message(open_chat):
    chat = open_chat()
    send_and_wait(chat, "Keep me")
    message = user_messages(chat).first

    message.get_by_role("button", name="Edit", exact=True).click()
    editor(chat).fill("Something else")
    chat.page.get_by_role("button", name="Cancel").click()

    expect(editor(chat)).to_have_count(0)
    expect(message.locator(".plain-text")).to_have_text("Keep me")
    expect(message.locator(".version-label")).to_have_count(0)
    expect(message.get_by_role("button", name="Edit", exact=True)).to_be_focused()
    expect(chat.replies).to_have_count(1)


def test_jump_to_latest_appears_when_the_reader_scrolls_up_during_a_reply(open_chat):
    chat = open_chat()
    chat.send(TALL_REPLY)
    expect(jump_button(chat)).to_be_hidden()

    scroll_up_during_reply(chat)

    expect(jump_button(chat)).to_be_visible()
    # The reader's place is kept while the reply grows below it.
    place = chat.page.locator("#messages-scroller").evaluate("el => el.scrollTop")
    chat.page.wait_for_timeout(300)
    assert chat.page.locator("#messages-scroller").evaluate("el => el.scrollTop") == place
    expect(chat.last_reply).to_have_class(STREAMING)
    shot(chat.page, "1-jump-visible")

    jump_button(chat).click()

    expect(jump_button(chat)).to_be_hidden()
    assert distance_to_end(chat) < 48
    # From here the view follows the reply again.
    chat.page.wait_for_timeout(300)
    expect(chat.last_reply).to_have_class(STREAMING)
    assert distance_to_end(chat) < 48

    # Scrolling back down by hand hides it too.
    scroll_up_during_reply(chat)
    expect(jump_button(chat)).to_be_visible()
    chat.page.mouse.wheel(0, 100_000)
    expect(jump_button(chat)).to_be_hidden()
    chat.page.get_by_role("button", name="Stop").click()
    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))


def test_the_jump_button_is_reachable_by_keyboard(open_chat):
    chat = open_chat()
    chat.send(TALL_REPLY)
    scroll_up_during_reply(chat)
    expect(jump_button(chat)).to_be_visible()

    chat.composer.focus()
    chat.page.keyboard.press("Shift+Tab")
    expect(chat.page.get_by_role("button", name="Attach images")).to_be_focused()  # in the composer
    chat.page.keyboard.press("Shift+Tab")
    expect(jump_button(chat)).to_be_focused()
    chat.page.keyboard.press("Enter")

    expect(jump_button(chat)).to_be_hidden()
    assert distance_to_end(chat) < 48
    expect(chat.composer).to_be_focused()
    chat.page.keyboard.press("Escape")
    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))


def test_escape_stops_a_streaming_reply(open_chat):
    chat = open_chat()
    chat.send(offline(words=200, pace_ms=30))
    chat.wait_for_words(5)
    expect(chat.composer).to_be_focused()
    # Screen readers hear the reply once it is done, not every frame of it.
    expect(chat.page.get_by_role("log", name="Messages")).to_have_attribute("aria-busy", "true")

    chat.composer.press("Escape")

    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))
    expect(chat.page.get_by_role("log", name="Messages")).to_have_attribute("aria-busy", "false")
    expect(chat.page.get_by_role("log", name="Messages")).to_have_attribute("aria-live", "polite")
    expect(chat.last_reply.locator(".notice-stopped")).to_have_text("Stopped")
    partial = chat.reply_text()
    assert 5 <= len(partial.split()) < 200

    # From the page itself too, not only from the composer.
    chat.send(offline(words=200, pace_ms=30))
    expect(chat.replies).to_have_count(2)
    expect(chat.last_reply.locator(".markdown")).to_have_text(re.compile(r"^(\S+\s+){5}"))
    expect(chat.last_reply).to_have_class(STREAMING)
    chat.page.locator("#conversation-title").click()
    chat.page.keyboard.press("Escape")
    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))
    second = chat.reply_text()
    assert 5 <= len(second.split()) < 200

    chat.page.reload()
    chat.wait_until_connected()
    expect(chat.replies).to_have_count(2)
    assert chat.replies.first.locator(".markdown").inner_text().strip() == partial
    assert chat.reply_text() == second


def test_up_in_an_empty_composer_edits_the_last_message(open_chat):
    chat = open_chat()
    send_and_wait(chat, "One")
    send_and_wait(chat, "Two")
    last_id = user_messages(chat).last.get_attribute("data-id")

    chat.composer.fill("a draft")
    chat.composer.press("Shift+Enter")  # a new line, not a send
    expect(chat.composer).to_have_value("a draft\n")
    chat.composer.press("ArrowUp")
    expect(editor(chat)).to_have_count(0)  # only an empty composer
    expect(chat.replies).to_have_count(2)
    chat.composer.fill("")

    chat.composer.press("ArrowUp")

    expect(editor(chat)).to_be_focused()
    expect(editor(chat)).to_have_value("Two")
    expect(chat.page.locator(f'.message-user[data-id="{last_id}"] .message-editor')).to_have_count(1)

    # Esc in the editor cancels the edit and nothing else.
    editor(chat).press("Escape")
    expect(editor(chat)).to_have_count(0)
    expect(user_messages(chat).last.locator(".plain-text")).to_have_text("Two")
    expect(chat.last_reply).to_have_class(COMPLETE)

    # No edits while a reply is being written on the path: no pencil, and Up does nothing.
    chat.send(offline(words=200, pace_ms=30))
    expect(chat.replies).to_have_count(3)
    expect(chat.last_reply).to_have_class(STREAMING)
    expect(chat.page.locator(".message-user .edit-message:visible")).to_have_count(0)
    chat.composer.press("ArrowUp")
    expect(editor(chat)).to_have_count(0)
    chat.composer.press("Escape")
    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))
    expect(chat.page.locator(".message-user .edit-message")).to_have_count(3)
    expect(
        chat.page.locator(".message-user").last.get_by_role("button", name="Edit", exact=True)
    ).to_be_visible()


def test_editing_and_jumping_fit_a_phone(open_chat):
    chat = open_chat(**PHONE)
    send_and_wait(chat, "A question from a phone, long enough to wrap onto a second line here")

    user_messages(chat).first.get_by_role("button", name="Edit", exact=True).tap()

    expect(editor(chat)).to_be_visible()
    box = editor(chat).bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    expect(chat.page.get_by_role("button", name="Save")).to_be_in_viewport()
    assert chat.page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(chat.page, "1-editor-open")
    chat.page.get_by_role("button", name="Cancel").tap()
    expect(editor(chat)).to_have_count(0)

    chat.send(TALL_REPLY)
    scroll_up_during_reply(chat)
    expect(jump_button(chat)).to_be_in_viewport()
    assert chat.page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(chat.page, "2-jump-visible")
    jump_button(chat).tap()
    expect(jump_button(chat)).to_be_hidden()
    assert distance_to_end(chat) < 48
    chat.page.get_by_role("button", name="Stop").tap()
    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))
