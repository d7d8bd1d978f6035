"""The chat page in a real browser against a live server and the offline upstream."""

import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from conversations.models import Conversation
from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Sixty distinct words: a duplicated or lost delta shows in the final text.
SIXTY_WORDS = " ".join(f"word{number:02d}" for number in range(1, 61))


def test_it_streams_a_reply_into_a_new_conversation(open_chat):
    chat = open_chat()
    shot(chat.page, "1-empty")

    chat.send("Hello")

    expect(chat.page.locator(".message-user")).to_have_text("Hello")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    assert "You said: “Hello”" in chat.reply_text()
    expect(chat.page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    expect(chat.page.locator(".conversation-item.active")).to_have_text("Hello")
    expect(chat.composer).to_be_focused()
    shot(chat.page, "2-reply")

    chat.page.reload()
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    assert "You said: “Hello”" in chat.reply_text()
    assert chat.dialogs == []


def test_a_reload_in_the_middle_of_a_reply_loses_and_repeats_nothing(open_chat):
    chat = open_chat()
    chat.send(offline(reply=SIXTY_WORDS, pace_ms=50))
    chat.wait_for_words(8)

    chat.page.reload()

    # The snapshot brings the text so far; the rest follows from where it left off.
    expect(chat.last_reply.locator(".markdown")).to_contain_text("word01")
    assert chat.page.locator(".message-assistant.status-streaming").count() == 1
    shot(chat.page, "1-after-reload")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"), timeout=15_000)
    assert chat.reply_text() == SIXTY_WORDS
    shot(chat.page, "2-complete")


def test_stop_keeps_the_text_so_far(open_chat):
    chat = open_chat()
    chat.send(offline(reply=SIXTY_WORDS, pace_ms=80))
    chat.wait_for_words(5)
    expect(chat.page.get_by_role("button", name="Send")).to_be_hidden()

    chat.page.get_by_role("button", name="Stop").click()

    expect(chat.last_reply).to_have_class(re.compile(r"status-cancelled"))
    expect(chat.last_reply.locator(".notice-stopped")).to_have_text("Stopped")
    partial = chat.reply_text()
    assert SIXTY_WORDS.startswith(partial)
    assert 5 <= len(partial.split()) < 60
    expect(chat.page.get_by_role("button", name="Stop")).to_be_hidden()
    shot(chat.page, "stopped")

    chat.page.reload()
    expect(chat.last_reply.locator(".notice-stopped")).to_be_visible()
    assert chat.reply_text() == partial


def test_a_reply_the_provider_cut_short_says_so(open_chat):
    chat = open_chat()
    chat.send(offline(reply="A long answer that", finish_reason="length"))
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    expect(chat.last_reply.locator(".notice-cut")).to_have_text(
        "The reply reached its length limit (max tokens) and stops here."
    )
    chat.send(offline(reply="", finish_reason="content_filter"))
    expect(chat.last_reply.locator(".notice-cut")).to_have_text(
        "The provider's content filter stopped this reply."
    )
    shot(chat.page, "cut-short")

    chat.page.reload()
    expect(chat.page.locator(".notice-cut")).to_have_count(2)


def test_regenerate_adds_a_version_that_survives_a_reload(open_chat):
    chat = open_chat()
    chat.send("Hello")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    first_id = chat.last_reply.get_attribute("data-id")

    chat.last_reply.get_by_role("button", name="Regenerate").click()

    expect(chat.last_reply.locator(".version-label")).to_have_text("2/2")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    second_id = chat.last_reply.get_attribute("data-id")
    assert second_id != first_id
    assert chat.replies.count() == 1
    shot(chat.page, "1-second-version")

    chat.last_reply.get_by_role("button", name="Previous version").click()
    expect(chat.last_reply.locator(".version-label")).to_have_text("1/2")
    expect(chat.last_reply).to_have_attribute("data-id", first_id)

    chat.page.reload()
    expect(chat.last_reply.locator(".version-label")).to_have_text("1/2")
    expect(chat.last_reply).to_have_attribute("data-id", first_id)
    chat.last_reply.get_by_role("button", name="Next version").click()
    expect(chat.last_reply).to_have_attribute("data-id", second_id)


def test_a_failed_reply_shows_why_and_can_be_retried(open_chat):
    chat = open_chat()
    once = f"retry-{uuid.uuid4().hex}"
    chat.send(offline(status=400, fail_times=1, fail_key=once, reply="The second try worked."))

    expect(chat.last_reply).to_have_class(re.compile(r"status-error"))
    expect(chat.last_reply.locator(".notice-error")).to_be_visible()
    shot(chat.page, "1-error")

    chat.last_reply.get_by_role("button", name="Retry").click()

    expect(chat.last_reply.locator(".version-label")).to_have_text("2/2")
    expect(chat.last_reply.locator(".markdown")).to_have_text("The second try worked.")
    shot(chat.page, "2-retried")


def test_hostile_model_output_is_shown_but_never_run(open_chat):
    chat = open_chat()
    hostile = (
        "<img src=x onerror=alert(1)><script>alert(2)</script>**bold** "
        "![tracker](https://tracker.example/pixel.png) [a link](https://example.com/) "
        '<button class="regenerate" data-select="1">Click me</button> ![same site](/logout/)'
    )
    chat.send(offline(reply=hostile))

    reply = chat.last_reply.locator(".markdown")
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("script")).to_have_count(0)
    expect(reply.locator("[onerror]")).to_have_count(0)
    expect(reply.locator("img")).to_have_count(0)  # not outside images, nor requests to this site
    expect(reply.locator("button, [data-select]")).to_have_count(0)  # no look-alike of the page's controls
    expect(reply.locator(".blocked-image")).to_have_text(
        ["[image not shown]", "[image not shown: tracker]", "[image not shown: same site]"]
    )
    link = reply.get_by_role("link", name="a link")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    # The user's own message is text, never markup.
    expect(chat.page.locator(".message-user")).to_contain_text("<script>alert(2)</script>")
    chat.page.wait_for_timeout(300)
    shot(chat.page, "hostile")
    assert chat.dialogs == []


MARKDOWN = """## A heading

Some *emphasis*, `inline code` and a list:

- one
- two

```python
def greet(name):
    return f"Hello, {name}!"  # a comment long enough to need a horizontal scroll bar on a phone screen
```

| Model | Context | Vision |
| --- | --- | --- |
| offline-chat | 32768 | no |
| offline-vision | 32768 | yes |

> A quote to finish."""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_markdown_replies_are_readable(open_chat, scheme):
    chat = open_chat(color_scheme=scheme)
    chat.send(offline(reply=MARKDOWN))

    reply = chat.last_reply.locator(".markdown")
    expect(reply.get_by_role("heading", name="A heading")).to_be_visible()
    expect(reply.locator(".code-block .code-bar")).to_contain_text("python")
    expect(reply.locator(".code-block code")).to_contain_text('return f"Hello, {name}!"')
    expect(reply.locator(".table-scroll table tr")).to_have_count(3)
    expect(reply.locator("blockquote")).to_have_text("A quote to finish.")
    shot(chat.page, scheme)


def test_the_sidebar_follows_other_tabs(open_chat):
    chat = open_chat()
    chat.send("Hello")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    other = Chat(chat.page.context.new_page(), chat.base_url)
    other.page.goto(f"{chat.base_url}/")
    other.wait_until_connected()
    item = other.page.locator(".conversation-item").filter(has_text="Hello")
    expect(item).to_have_count(1)

    chat.page.get_by_role("button", name="Rename: Hello").click()
    rename = chat.page.get_by_label("New title")
    rename.fill("Greetings")
    rename.press("Enter")

    expect(other.page.locator(".conversation-item")).to_have_text(["Greetings"])
    expect(chat.page.locator("#conversation-title")).to_have_text("Greetings")

    chat.page.get_by_role("button", name="Pin: Greetings").click()
    expect(other.page.locator("#pinned-list .conversation-item")).to_have_text(["Greetings"])
    shot(other.page, "pinned-elsewhere")

    chat.page.get_by_role("button", name="Delete: Greetings").click()
    expect(other.page.locator(".conversation-item")).to_have_count(0)
    expect(chat.page).to_have_url(f"{chat.base_url}/")


def test_the_models_title_reaches_the_sidebar_and_the_header_live(open_chat):
    chat = open_chat()
    other = Chat(chat.page.context.new_page(), chat.base_url)
    other.page.goto(f"{chat.base_url}/")
    other.wait_until_connected()

    chat.send("tell me about lighthouses in winter, please")

    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    # The first line stands in until the offline model's title (its first words, capitalized) arrives.
    title = "Tell Me About Lighthouses In Winter"
    expect(chat.page.locator(".conversation-item.active")).to_have_text(title)
    expect(chat.page.locator("#conversation-title")).to_have_text(title)
    expect(chat.page).to_have_title(f"{title} · chatsite")
    expect(other.page.locator(".conversation-item")).to_have_text([title])
    shot(chat.page, "titled")


def test_the_sidebar_loads_older_conversations_on_scroll(open_chat, bob):
    start = timezone.now() - timedelta(days=1)
    for number in range(60):
        Conversation.objects.create(
            owner=bob, title=f"c{number:02d}", updated_at=start + timedelta(minutes=number)
        )
    chat = open_chat()
    items = chat.page.locator(".conversation-item")
    expect(items).to_have_count(50)

    items.last.scroll_into_view_if_needed()

    expect(items).to_have_count(60)
    expect(items.last).to_have_text("c00")
    expect(items.first).to_have_text("c59")


def test_it_fits_a_phone(open_chat):
    chat = open_chat(viewport={"width": 375, "height": 812}, has_touch=True, is_mobile=True)
    menu = chat.page.get_by_role("button", name="Show conversations")
    expect(menu).to_be_visible()
    expect(chat.page.locator("#sidebar")).not_to_be_in_viewport()

    chat.send("Hello")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"))
    width = chat.page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "nothing is wider than the phone"
    shot(chat.page, "1-conversation")

    menu.click()
    chat.page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left === 0")
    expect(chat.page.locator(".conversation-item")).to_have_text(["Hello"])
    shot(chat.page, "2-sidebar")
    chat.page.get_by_role("link", name="New chat").click()
    expect(chat.page.locator("#sidebar")).not_to_be_in_viewport()
    expect(chat.page.locator(".message")).to_have_count(0)
