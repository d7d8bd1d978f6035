"""JSON replies and reasoning in a real browser: a schema conversation's reply pretty-printed and
highlighted with its copy button and badge, a reply that breaks the schema flagged by path, and a
model's reasoning collapsed above its answer, counting the seconds while it thinks."""

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation
from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "days", "tags"],
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}}
AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
# The serious and critical accessibility problems axe finds on the page (as tests/test_browser_a11y.py).
SEVERE_PROBLEMS = """async () => {
    const results = await axe.run(document, { resultTypes: ["violations"] });
    return results.violations
        .filter((violation) => ["serious", "critical"].includes(violation.impact))
        .map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`);
}"""
REASONING = "The member asks for two and two. Adding them gives four, which is the whole answer here."


@pytest.fixture
def schema_conversation(bob, offline_model) -> Conversation:
    # Before the live server starts: it reads the models once and keeps them.
    offline_model.supports_json = True
    offline_model.save(update_fields=["supports_json"])
    return Conversation.objects.create(
        owner=bob, title="Trips", model=offline_model, parameters={"response_format": RESPONSE_FORMAT}
    )


def open_conversation(chat: Chat, conversation: Conversation) -> None:
    chat.page.goto(f"{chat.base_url}{conversation.get_absolute_url()}")
    chat.wait_until_connected()


def test_a_schema_reply_is_pretty_with_its_badge_and_a_flagged_one_shows_the_paths(
    schema_conversation, open_chat
):
    # bypass_csp: axe-core is injected as an inline script (as in tests/test_browser_a11y.py).
    chat = open_chat(permissions=["clipboard-read", "clipboard-write"], bypass_csp=True)
    open_conversation(chat, schema_conversation)

    chat.send("Plan a trip")
    reply = chat.last_reply
    expect(reply).to_have_class(re.compile(r"status-complete"))
    code = reply.locator(".json-reply .code-block code")
    expect(code).to_have_class(re.compile(r"\bhljs\b.*\blanguage-json\b"))
    pretty = json.dumps({"city": "offline", "days": 1, "tags": ["offline"]}, indent=2)
    expect(code).to_have_text(pretty)
    expect(code.locator(".hljs-attr").first).to_have_text('"city"')
    expect(reply.locator(".code-bar")).to_contain_text("json")
    expect(reply.locator(".json-badge")).to_have_text("Matches schema")
    expect(reply.locator(".json-schema-name")).to_have_text("trip")
    expect(reply.locator(".json-check")).to_have_class(re.compile(r"\bjson-valid\b"))
    reply.get_by_role("button", name="Copy code").click()
    expect(reply.locator(".code-copy")).to_have_text("Copied")
    assert chat.page.evaluate("navigator.clipboard.readText()") == pretty + "\n"
    shot(chat.page, "valid")

    chat.send(offline(reply='{"city": 7, "days": 0}'))
    flagged = chat.last_reply
    expect(flagged).to_have_class(re.compile(r"status-complete"))
    expect(flagged.locator(".json-badge")).to_have_text("Does not match the schema")
    expect(flagged.locator(".json-errors .json-path")).to_have_text(["(whole reply)", "/city", "/days"])
    expect(flagged.locator(".json-errors li").nth(1)).to_contain_text("7 is not of type 'string'")
    expect(flagged.locator(".json-errors li").nth(2)).to_contain_text("0 is less than the minimum of 1")
    # Still shown pretty: it is JSON, only not the JSON asked for.
    expect(flagged.locator(".json-reply code")).to_have_text('{\n  "city": 7,\n  "days": 0\n}')

    chat.send(offline(reply="Sorry, no JSON today."))
    broken = chat.last_reply
    expect(broken).to_have_class(re.compile(r"status-complete"))
    expect(broken.locator(".json-badge")).to_have_text("Not valid JSON")
    expect(broken.locator(".json-reply")).to_have_text("Sorry, no JSON today.")
    expect(broken.locator(".json-errors li")).to_contain_text("Expecting value (line 1, column 1)")
    shot(chat.page, "flagged")
    chat.page.add_script_tag(path=str(AXE))
    assert chat.page.evaluate(SEVERE_PROBLEMS) == []
    chat.page.emulate_media(color_scheme="dark")
    assert chat.page.evaluate(SEVERE_PROBLEMS) == []
    shot(chat.page, "flagged-dark")

    # A reload draws the stored verdicts the same way.
    chat.page.reload()
    chat.wait_until_connected()
    expect(chat.page.locator(".json-badge")).to_have_text(
        ["Matches schema", "Does not match the schema", "Not valid JSON"]
    )
    assert chat.dialogs == []


def test_reasoning_is_collapsed_above_the_answer_and_counts_while_thinking(bob, offline_model, open_chat):
    conversation = Conversation.objects.create(owner=bob, title="Sums", model=offline_model)
    chat = open_chat()
    open_conversation(chat, conversation)

    chat.send(offline(reasoning=REASONING, reply="Two and two make **four**.", pace_ms=150))
    reply = chat.last_reply
    details = reply.locator("details.reasoning")
    summary = details.locator("summary")
    expect(summary).to_have_text(re.compile(r"^Thinking… [1-9]\d* s$"))
    expect(details).to_have_js_property("open", False)
    shot(chat.page, "thinking")

    expect(reply).to_have_class(re.compile(r"status-complete"))
    expect(summary).to_have_text(re.compile(r"^Thought for \d+ s$"))
    expect(details).to_have_js_property("open", False)
    expect(reply.locator(".markdown strong")).to_have_text("four")
    above = details.evaluate(
        "(element) => Boolean(element.compareDocumentPosition("
        "element.parentElement.querySelector('.markdown')) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    assert above, "the reasoning comes before the answer"
    shot(chat.page, "answered")
    summary.click()
    expect(details.locator("pre")).to_have_text(REASONING)
    shot(chat.page, "opened")

    # After a reload the time is not known any more; the reasoning stays collapsed above the answer.
    chat.page.reload()
    chat.wait_until_connected()
    expect(chat.last_reply.locator("details.reasoning summary")).to_have_text("Reasoning")
    expect(chat.last_reply.locator("details.reasoning")).to_have_js_property("open", False)
    assert chat.dialogs == []
