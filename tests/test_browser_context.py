"""A conversation longer than its model's context window, in a real browser against a live server: the
reply says above itself how many earlier messages were left out, and a message that cannot fit at all
is refused with its text given back."""

import re

import pytest
from playwright.sync_api import expect

from conversations.models import Message
from tests.fixtures.browser import shot
from tests.test_context_budget import history, small_window, text

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_long_conversation_on_a_small_window_shows_what_was_left_out(
    open_chat, bob_conversation, offline_model
):
    small_window(offline_model, 1000)
    history(bob_conversation, 20, 300)
    chat = open_chat()
    chat.page.goto(f"{chat.base_url}/c/{bob_conversation.public_id}/")
    expect(chat.page.locator("article.message")).to_have_count(40)

    chat.send("What did we say at the start?")

    expect(chat.replies).to_have_count(21)
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    reply = Message.objects.filter(conversation=bob_conversation, role="assistant").latest("pk")
    omitted = reply.parts[0]["omitted_messages"]
    note = chat.last_reply.locator(".context-note")
    expect(note).to_have_text(f"{omitted} earlier messages were left out to fit the model's context window.")
    expect(note).to_be_visible()
    shot(chat.page, "1-marker")

    chat.page.reload()  # saved with the reply, so a reload shows it again
    expect(chat.last_reply.locator(".context-note")).to_contain_text(f"{omitted} earlier messages")
    assert chat.dialogs == []


def test_a_message_too_long_for_the_window_is_refused_and_kept(open_chat, bob_conversation, offline_model):
    small_window(offline_model, 400)
    chat = open_chat()
    chat.page.goto(f"{chat.base_url}/c/{bob_conversation.public_id}/")
    chat.wait_until_connected()  # under load the socket opens after the page: send only then
    long_text = text(3000)

    chat.send(long_text)

    expect(chat.page.locator("#composer-error")).to_contain_text("too long for the model's context window")
    expect(chat.composer).to_have_value(long_text)
    expect(chat.page.locator("article.message")).to_have_count(0)
    shot(chat.page, "1-refused")
