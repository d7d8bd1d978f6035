"""The settings panel and assistants in a real browser: saved on the server, kept across a reload, sent
upstream; a bad value is explained; an assistant starts a new conversation with its settings."""

import re

import pytest
from playwright.sync_api import expect

from conversations.models import Assistant, Conversation, UsageRecord
from tests.fixtures.browser import shot
from tests.test_browser_a11y import Audit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 375, "height": 812}, "has_touch": True, "is_mobile": True}


def last_chat_request(offline_upstream) -> dict:
    """The body the offline upstream received for the newest reply."""
    record = UsageRecord.objects.filter(source=UsageRecord.Source.CHAT).latest("started_at")
    return offline_upstream.finished(str(record.request_id))["body"]


def wait_for_reply(chat, count: int) -> None:
    expect(chat.replies).to_have_count(count)
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))


def test_settings_are_kept_sent_and_shared_as_an_assistant(open_chat, offline_upstream):
    chat = open_chat()
    page = chat.page
    chat.send("Hello")
    wait_for_reply(chat, 1)

    page.get_by_role("button", name="Settings").click()
    dialog = page.get_by_role("dialog", name="Conversation settings")
    expect(dialog).to_be_visible()
    dialog.get_by_label("System prompt").fill("Answer like a pirate.")
    dialog.get_by_label("Temperature").fill("0.4")
    # The offline chat model is neither a reasoning nor a JSON model: those fields are not offered.
    expect(dialog.get_by_label("Reasoning effort")).to_be_hidden()
    expect(dialog.get_by_label("Max completion tokens")).to_be_hidden()
    expect(dialog.get_by_label("calculator")).to_be_visible()  # it takes tools
    shot(page, "1-settings")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#toast-region")).to_contain_text("Settings saved.")

    page.reload()
    chat.wait_until_connected()
    page.get_by_role("button", name="Settings").click()
    expect(dialog.get_by_label("System prompt")).to_have_value("Answer like a pirate.")
    expect(dialog.get_by_label("Temperature")).to_have_value("0.4")

    # Out of range: the server's rule, named, next to the field; nothing saved.
    dialog.get_by_label("Temperature").fill("5")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(dialog.get_by_role("alert")).to_have_text("temperature must be between 0 and 2.")
    expect(dialog.get_by_label("Temperature")).to_have_attribute("aria-invalid", "true")
    shot(page, "2-out-of-range")
    dialog.get_by_label("Temperature").fill("0.4")

    dialog.get_by_label("Assistant name").fill("Pirate")
    dialog.get_by_role("button", name="Save as assistant").click()
    expect(page.locator("#toast-region")).to_contain_text("Assistant “Pirate” saved.")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()

    chat.send("Where is the treasure?")
    wait_for_reply(chat, 2)
    body = last_chat_request(offline_upstream)
    assert body["temperature"] == 0.4
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}

    assistant = Assistant.objects.get(name="Pirate")
    assert assistant.system_prompt == "Answer like a pirate." and assistant.parameters == {"temperature": 0.4}

    # A new conversation from the assistant carries its settings to its very first request.
    page.get_by_role("link", name="New chat").click()
    picker = page.get_by_label("Start from an assistant")
    expect(picker).to_be_visible()
    picker.select_option(label="Pirate")
    shot(page, "3-assistant-picker")
    chat.send("Ahoy")
    wait_for_reply(chat, 1)
    expect(picker).to_be_hidden()
    body = last_chat_request(offline_upstream)
    assert body["temperature"] == 0.4
    assert body["messages"][0] == {"role": "system", "content": "Answer like a pirate."}
    newest = Conversation.objects.latest("created_at")
    assert newest.system_prompt == "Answer like a pirate." and newest.parameters == {"temperature": 0.4}
    assert chat.dialogs == []


def test_settings_fit_a_phone_in_the_dark(open_chat, offline_model):
    offline_model.supports_json = True
    offline_model.save()
    # CSP bypassed for axe's inline script only; the other test runs under the page's policy.
    chat = open_chat(color_scheme="dark", bypass_csp=True, **PHONE)
    page = chat.page
    page.get_by_role("button", name="Settings").click()
    dialog = page.get_by_role("dialog", name="Conversation settings")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#settings-new-note")).to_be_visible()  # no conversation yet: a draft
    dialog.get_by_label("JSON schema", exact=True).check()
    expect(dialog.get_by_label("Schema (JSON)")).to_be_visible()
    box = dialog.bounding_box()
    assert box["width"] <= 375 and box["x"] >= 0
    shot(page, "phone-dark")
    audit = Audit()
    audit.check(page, "settings dialog")
    audit.assert_clean()
    # The draft goes with the first message.
    dialog.get_by_label("JSON mode", exact=True).check()
    dialog.get_by_label("System prompt").fill("Short answers.")
    dialog.get_by_role("button", name="Save", exact=True).click()
    expect(dialog).to_be_hidden()
    chat.send("Hi")
    wait_for_reply(chat, 1)
    conversation = Conversation.objects.get()
    assert conversation.system_prompt == "Short answers."
    assert conversation.parameters == {"response_format": {"type": "json_object"}}
