"""Export and import from the pane header's "More" menu, in a real browser against a live server."""

import json
import re

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation, Message
from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"viewport": {"width": 375, "height": 812}, "has_touch": True, "is_mobile": True}


@pytest.fixture
def lisbon(bob, offline_model) -> Conversation:
    conversation = Conversation.objects.create(owner=bob, title="Lisbon notes", model=offline_model)
    prompt = Message(conversation=conversation, role="user")
    prompt.set_parts([{"type": "text", "text": "Where should I eat in Alfama?"}])
    prompt.save()
    reply = Message(conversation=conversation, parent=prompt, role="assistant", model=offline_model)
    reply.set_parts([{"type": "text", "text": "Try the **grilled sardines** by the castle."}])
    reply.save()
    conversation.current_leaf = reply
    conversation.save()
    return conversation


def more_menu(chat: Chat):
    return chat.page.get_by_role("button", name="More")


def test_a_conversation_goes_out_as_a_file_and_a_file_comes_in_as_a_conversation(open_chat, lisbon, tmp_path):
    chat = open_chat()
    chat.page.goto(f"{chat.base_url}{lisbon.get_absolute_url()}")
    expect(chat.last_reply.locator(".markdown")).to_contain_text("grilled sardines")

    more_menu(chat).click()
    expect(more_menu(chat)).to_have_attribute("aria-expanded", "true")
    shot(chat.page, "1-menu")
    with chat.page.expect_download() as markdown_download:
        chat.page.get_by_role("link", name="Export as Markdown").click()
    download = markdown_download.value
    assert download.suggested_filename == "lisbon-notes.md"
    download.save_as(tmp_path / "lisbon.md")
    text = (tmp_path / "lisbon.md").read_text()
    assert text.startswith("# Lisbon notes\n\n## You\n\nWhere should I eat in Alfama?\n\n## Assistant\n\n")
    assert "Try the **grilled sardines** by the castle." in text
    expect(chat.page.locator("#more-panel")).to_be_hidden()

    more_menu(chat).click()
    with chat.page.expect_download() as json_download:
        chat.page.get_by_role("link", name="Export as JSON").click()
    download = json_download.value
    assert download.suggested_filename == "lisbon-notes.json"
    download.save_as(tmp_path / "lisbon.json")
    exported = json.loads((tmp_path / "lisbon.json").read_text())
    assert [m["parts"][0]["text"] for m in exported["conversation"]["messages"]] == [
        "Where should I eat in Alfama?",
        "Try the **grilled sardines** by the castle.",
    ]

    openai_file = {
        "messages": [
            {"role": "user", "content": "What is the capital of Portugal?"},
            {"role": "assistant", "content": [{"type": "text", "text": "It is **Lisbon**."}]},
        ]
    }
    more_menu(chat).click()
    with chat.page.expect_file_chooser() as chooser:
        chat.page.get_by_role("button", name="Import…").click()
    chooser.value.set_files(
        {"name": "capital.json", "mimeType": "application/json", "buffer": json.dumps(openai_file).encode()}
    )

    imported = chat.page.locator(".conversation-item.active")
    expect(imported).to_have_text("What is the capital of Portugal?")
    expect(chat.page.locator(".message-user")).to_have_text("What is the capital of Portugal?")
    expect(chat.last_reply.locator(".markdown strong")).to_have_text("Lisbon")
    conversation = Conversation.objects.get(title="What is the capital of Portugal?")
    expect(chat.page).to_have_url(re.compile(f"/c/{conversation.public_id}/$"))
    expect(chat.page.locator("#conversation-title")).to_have_text("What is the capital of Portugal?")
    shot(chat.page, "2-imported")
    assert chat.dialogs == []


def test_an_unreadable_file_is_refused_with_a_reason(open_chat):
    chat = open_chat()

    more_menu(chat).click()
    # A new chat has nothing to export yet; importing is always there.
    expect(chat.page.get_by_role("link", name="Export as Markdown")).to_be_hidden()
    expect(chat.page.get_by_role("link", name="Export as JSON")).to_be_hidden()
    with chat.page.expect_file_chooser() as chooser:
        chat.page.get_by_role("button", name="Import…").click()
    chooser.value.set_files({"name": "notes.json", "mimeType": "application/json", "buffer": b"{not json"})

    expect(chat.page.locator("#composer-error")).to_have_text("The file is not valid JSON.")
    assert not Conversation.objects.exists()


def test_the_menu_fits_a_phone(open_chat, lisbon):
    chat = open_chat(**PHONE)
    chat.page.goto(f"{chat.base_url}{lisbon.get_absolute_url()}")
    expect(chat.last_reply.locator(".markdown")).to_contain_text("grilled sardines")

    more_menu(chat).click()

    panel = chat.page.locator("#more-panel")
    expect(panel).to_be_visible()
    box = panel.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    expect(chat.page.get_by_role("link", name="Export as Markdown")).to_be_visible()
    shot(chat.page, "menu")

    chat.page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(more_menu(chat)).to_be_focused()
