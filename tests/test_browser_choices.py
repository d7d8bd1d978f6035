"""n > 1 in a real browser: the choices of one request are versions of the reply, "< 1/3 >"."""

import re

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation
from tests.fixtures.browser import shot
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_three_choices_are_three_versions_of_the_reply(open_chat, bob, offline_model):
    offline_model.supported_parameters = ["n"]
    offline_model.save()
    conversation = Conversation.objects.create(owner=bob, model=offline_model, parameters={"n": 3})
    chat = open_chat()
    chat.page.goto(f"{chat.base_url}{conversation.get_absolute_url()}")
    chat.wait_until_connected()
    chat.send(offline(reply="Three ways to say it."))
    reply = chat.last_reply
    expect(reply).to_have_class(re.compile("status-complete"), timeout=15_000)
    expect(reply.locator(".version-label")).to_have_text("1/3")
    expect(reply.locator(".markdown")).to_have_text("Version 1 of 3. Three ways to say it.")
    reply.get_by_role("button", name="Next version").click()
    expect(chat.last_reply.locator(".version-label")).to_have_text("2/3")
    expect(chat.last_reply.locator(".markdown")).to_have_text("Version 2 of 3. Three ways to say it.")
    shot(chat.page, "version-2-of-3")
    chat.page.reload()
    chat.wait_until_connected()
    expect(chat.last_reply.locator(".version-label")).to_have_text("2/3")  # the choice is kept
