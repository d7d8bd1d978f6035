"""Tool calls in a real browser: the calculator is called, its call and result show collapsed in the
reply while it runs, and the model's answer follows."""

import re

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation
from tests.fixtures.browser import shot
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_tool_call_and_its_result_show_in_the_reply(open_chat, bob, offline_model):
    conversation = Conversation.objects.create(
        owner=bob, title="Arithmetic", model=offline_model, tools=["calculator"]
    )
    chat = open_chat()
    chat.page.goto(f"{chat.base_url}{conversation.get_absolute_url()}")
    chat.wait_until_connected()

    # Each request waits a little before answering: the call and its result are seen before the answer.
    chat.send(
        offline(tool_calls=[{"name": "calculator", "arguments": {"expression": "6 * 7"}}], first_byte_ms=1500)
    )

    reply = chat.last_reply
    call, result = reply.locator("details.tool-call"), reply.locator("details.tool-result")
    expect(call).to_have_count(1)
    expect(result).to_have_count(1)
    expect(call.locator("summary")).to_have_text("Tool call: calculator")
    expect(result.locator("summary")).to_have_text("Tool result: calculator")
    expect(reply).to_have_class(re.compile(r"status-streaming"))
    assert call.get_attribute("open") is None and result.get_attribute("open") is None  # collapsed
    shot(chat.page, "1-running")

    expect(reply).to_have_class(re.compile(r"status-complete"), timeout=10_000)
    expect(reply.locator(".markdown")).to_contain_text("calculator returned 42")
    call.locator("summary").click()
    result.locator("summary").click()
    expect(call.locator("pre")).to_contain_text('"expression": "6 * 7"')
    expect(result.locator("pre")).to_have_text("42")
    shot(chat.page, "2-answered")

    # After a reload the saved reply shows the same: call, result, answer.
    chat.page.reload()
    expect(chat.last_reply.locator("details.tool-call")).to_have_count(1)
    expect(chat.last_reply.locator("details.tool-result pre")).to_have_text("42")
    expect(chat.last_reply.locator(".markdown")).to_contain_text("calculator returned 42")
    assert chat.dialogs == []
