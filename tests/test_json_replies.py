"""Replies asked for as JSON (conversations/json_replies.py) and reasoning, from the check itself to a
reply over the chat socket with the offline upstream: what was asked upstream, what was stored, what
was counted."""

import json

import pytest
from channels.db import database_sync_to_async

from conversations import context, json_replies, schemas, transfer
from conversations.models import ChatModel, Conversation, Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "stops": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
                "required": ["name", "price"],
            },
        },
    },
    "required": ["city", "days", "stops"],
    "additionalProperties": False,
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True}}
JSON_MODE = {"type": "json_object"}


def paths(result: dict) -> list[str]:
    return [error["path"] for error in result["errors"]]


# --- The check ------------------------------------------------------------------------------------


def test_a_reply_that_matches_the_schema_is_valid():
    result = json_replies.check('{"city": "Lisbon", "days": 3, "stops": []}', SCHEMA_FORMAT)
    assert result == {
        "type": "json_check",
        "mode": "json_schema",
        "name": "trip",
        "parsed": True,
        "valid": True,
        "errors": [],
        "more_errors": 0,
    }


def test_errors_are_listed_by_json_pointer_path_in_document_order():
    reply = {
        "city": 7,
        "days": 0,
        "stops": [{"name": "a", "price": 1}] * 2 + [{"name": "b", "price": -1}] * 9 + [{"price": 2}],
        "a/b~c": True,
    }
    result = json_replies.check(json.dumps(reply), SCHEMA_FORMAT)
    assert result["parsed"] and not result["valid"]
    assert paths(result) == [
        "",  # the unexpected property, named in the message
        "/city",
        "/days",
        *[f"/stops/{index}/price" for index in range(2, 11)],
        "/stops/11",  # items sort as numbers: 11 after 2
    ]
    assert "'a/b~c' was unexpected" in result["errors"][0]["message"]
    assert result["errors"][2]["message"] == "0 is less than the minimum of 1"
    assert result["errors"][-1]["message"] == "'name' is a required property"


def test_a_key_with_a_slash_or_tilde_is_escaped_in_the_path():
    schema = {"type": "object", "properties": {"a/b~c": {"type": "string"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert paths(json_replies.check('{"a/b~c": 1}', response_format)) == ["/a~1b~0c"]


def test_the_errors_shown_are_capped_and_the_rest_counted():
    schema = {"type": "array", "items": {"type": "string"}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    result = json_replies.check(json.dumps(list(range(50))), response_format)
    assert len(result["errors"]) == json_replies.MAX_ERRORS
    assert result["more_errors"] == 50 - json_replies.MAX_ERRORS
    assert result["errors"][0] == {"path": "/0", "message": "0 is not of type 'string'"}


def test_a_reply_in_a_json_fence_is_read_inside_it():
    fenced = '```json\n{"city": "Porto", "days": 2, "stops": []}\n```\n'
    assert json_replies.check(fenced, SCHEMA_FORMAT)["valid"]
    assert json_replies.check('```\n{"any": 1}\n```', JSON_MODE)["valid"]


def test_a_reply_that_is_not_json_is_flagged_with_where_it_broke():
    result = json_replies.check('{"city": "Lisbon",', SCHEMA_FORMAT)
    assert result["parsed"] is False and result["valid"] is False
    assert result["errors"] == [
        {
            "path": "",
            "code": "not_json",
            "message": "Expecting property name enclosed in double quotes (line 1, column 19)",
        }
    ]
    assert json_replies.check("NaN", JSON_MODE)["errors"][0]["code"] == "not_json"


def test_json_mode_asks_for_an_object():
    assert json_replies.check('{"a": [1, 2]}', JSON_MODE)["valid"]
    result = json_replies.check("[1, 2]", JSON_MODE)
    assert result["parsed"] and not result["valid"]
    assert result["errors"][0]["code"] == "not_object"


def test_formats_the_validator_knows_are_checked():
    schema = {"type": "object", "properties": {"mail": {"type": "string", "format": "email"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert json_replies.check('{"mail": "a@example.com"}', response_format)["valid"]
    assert paths(json_replies.check('{"mail": "nobody"}', response_format)) == ["/mail"]


def test_a_broken_schema_is_reported_instead_of_validating():
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "thing"}}}
    result = json_replies.check("{}", response_format)
    assert result["valid"] is False and "schema_error" in result
    assert schemas.problem({"type": "thing"})
    assert schemas.problem(SCHEMA) is None


def test_replies_not_asked_for_as_json_are_not_checked():
    assert json_replies.check("{}", None) is None
    assert json_replies.check("{}", {"type": "text"}) is None
    text = [{"type": "text", "text": "hello"}]
    assert json_replies.with_check(text, None) == text
    # A reply that only called tools has no text to check yet.
    assert json_replies.with_check([{"type": "text", "text": ""}], JSON_MODE) == [
        {"type": "text", "text": ""}
    ]


# --- Reasoning sent back on tool turns ------------------------------------------------------------


TOOL_TURN = [
    {"type": "reasoning", "text": "The time is needed."},
    {"type": "tool_call", "id": "call_1", "name": "current_time", "arguments": "{}"},
    {"type": "text", "text": "Checking the clock."},
]


def test_reasoning_goes_back_only_on_tool_turns_and_only_when_asked():
    turn = context.tool_turns(TOOL_TURN, with_reasoning=True)[0]
    assert turn["tool_calls"] and turn["reasoning_content"] == "The time is needed."
    assert "reasoning_content" not in context.tool_turns(TOOL_TURN)[0]  # another model wrote it
    plain = Message(role=Message.Role.ASSISTANT, parts=[TOOL_TURN[0], TOOL_TURN[2]], model_id=1)
    assert "reasoning_content" not in context.to_openai(plain)


# --- Over the chat socket -------------------------------------------------------------------------


@pytest.fixture
def json_model(offline_model) -> ChatModel:
    offline_model.supports_json = True
    offline_model.save(update_fields=["supports_json"])
    return offline_model


@pytest.fixture
def schema_conversation(bob, json_model) -> Conversation:
    return Conversation.objects.create(
        owner=bob, title="Trips", model=json_model, parameters={"response_format": SCHEMA_FORMAT}
    )


async def reply_to(bob, conversation: Conversation, text: str) -> dict:
    """Send text in the conversation and return the reply's reply.done."""
    socket = Socket(await database_sync_to_async(session_cookie)(bob))
    assert await socket.open()
    try:
        await socket.send(type="subscribe", conversation=str(conversation.public_id))
        await socket.until("snapshot")
        await socket.send(type="send", conversation=str(conversation.public_id), text=text)
        return await socket.until("reply.done")
    finally:
        await socket.close()


def request_body(offline_upstream, message_id: int) -> dict:
    record = UsageRecord.objects.get(message_id=message_id)
    return offline_upstream.request(str(record.request_id))["body"]


@pytest.mark.django_db(transaction=True)
async def test_a_schema_reply_is_asked_for_checked_and_kept(bob, schema_conversation, offline_upstream):
    done = await reply_to(bob, schema_conversation, "Plan three days in Lisbon")

    body = await database_sync_to_async(request_body)(offline_upstream, done["message"])
    assert body["response_format"] == SCHEMA_FORMAT
    text, check = done["data"]["parts"][-2:]
    assert json.loads(text["text"]) == {
        "city": "offline",
        "days": 1,
        "stops": [{"name": "offline", "price": 1.5}],
    }
    assert check == {
        "type": "json_check",
        "mode": "json_schema",
        "name": "trip",
        "parsed": True,
        "valid": True,
        "errors": [],
        "more_errors": 0,
    }
    saved = await database_sync_to_async(Message.objects.get)(pk=done["message"])
    assert saved.parts == done["data"]["parts"]
    # The verdict is not part of the searchable text.
    assert saved.text == text["text"]


@pytest.mark.django_db(transaction=True)
async def test_a_reply_that_breaks_the_schema_is_flagged_by_path(bob, schema_conversation, offline_upstream):
    done = await reply_to(bob, schema_conversation, offline(reply='{"a": 1}'))

    check = done["data"]["parts"][-1]
    assert check["type"] == "json_check" and check["parsed"] and not check["valid"]
    assert paths(check) == ["", "", "", ""]
    messages = [error["message"] for error in check["errors"]]
    assert "Additional properties are not allowed ('a' was unexpected)" in messages
    assert "'city' is a required property" in messages


@pytest.mark.django_db(transaction=True)
async def test_json_mode_reaches_the_upstream_and_a_non_json_reply_is_flagged(
    bob, json_model, offline_upstream
):
    conversation = await database_sync_to_async(Conversation.objects.create)(
        owner=bob, title="JSON", model=json_model, parameters={"response_format": JSON_MODE}
    )
    done = await reply_to(bob, conversation, "Summarize this")
    body = await database_sync_to_async(request_body)(offline_upstream, done["message"])
    assert body["response_format"] == JSON_MODE
    assert done["data"]["parts"][-1]["valid"] is True

    done = await reply_to(bob, conversation, offline(reply="Sure! Here is the JSON you asked for."))
    check = done["data"]["parts"][-1]
    assert check["parsed"] is False and check["errors"][0]["code"] == "not_json"


@pytest.mark.django_db(transaction=True)
async def test_a_model_without_json_support_is_neither_asked_nor_checked(
    bob, offline_model, offline_upstream
):
    conversation = await database_sync_to_async(Conversation.objects.create)(
        owner=bob, title="Plain", model=offline_model, parameters={"response_format": JSON_MODE}
    )
    done = await reply_to(bob, conversation, "Hello")
    body = await database_sync_to_async(request_body)(offline_upstream, done["message"])
    assert "response_format" not in body
    assert [part["type"] for part in done["data"]["parts"]] == ["text"]


@pytest.mark.django_db(transaction=True)
async def test_reasoning_is_kept_first_and_counted_in_usage(bob, bob_conversation, offline_upstream):
    socket = Socket(await database_sync_to_async(session_cookie)(bob))
    assert await socket.open()
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(
        type="send",
        conversation=conversation,
        text=offline(reply="Four.", reasoning="Two and two make four."),
    )
    kinds = []
    while (event := await socket.receive())["type"] != "reply.done":
        if event["type"] == "reply.delta":
            kinds += [kind for kind in ("reasoning", "content") if kind in event]
    await socket.close()

    # Reasoning streams before the answer, and is stored above it.
    assert kinds == ["reasoning"] * kinds.count("reasoning") + ["content"] * kinds.count("content")
    assert "content" in kinds
    assert event["data"]["parts"] == [
        {"type": "reasoning", "text": "Two and two make four."},
        {"type": "text", "text": "Four."},
    ]
    record = await database_sync_to_async(UsageRecord.objects.get)(message_id=event["message"])
    ledger = offline_upstream.request(str(record.request_id))
    reported = ledger["usage"]["completion_tokens_details"]["reasoning_tokens"]
    assert record.reasoning_tokens == reported == 5  # the offline upstream: one token per word
    assert record.completion_tokens == ledger["usage"]["completion_tokens"] == 6
    assert event["usage"]["reasoning_tokens"] == 5


@pytest.mark.django_db(transaction=True)
async def test_a_tool_turn_carries_its_reasoning_back_upstream(bob, offline_model, offline_upstream):
    def tool_turn_conversation() -> Conversation:
        conversation = Conversation.objects.create(owner=bob, title="Clock", model=offline_model)
        question = conversation.messages.create(
            role=Message.Role.USER, parts=[{"type": "text", "text": "What time is it?"}]
        )
        # A reply that called a tool keeps its steps in one message (generation.py).
        steps = [
            *TOOL_TURN,
            {"type": "tool_result", "tool_call_id": "call_1", "content": "12:00"},
            {"type": "reasoning", "text": "Noon."},
            {"type": "text", "text": "It is noon."},
        ]
        answer = conversation.messages.create(
            role=Message.Role.ASSISTANT, parent=question, parts=steps, model=offline_model
        )
        conversation.current_leaf = answer
        conversation.save(update_fields=["current_leaf"])
        return conversation

    conversation = await database_sync_to_async(tool_turn_conversation)()
    done = await reply_to(bob, conversation, "And in Tokyo?")

    body = await database_sync_to_async(request_body)(offline_upstream, done["message"])
    assistants = [message for message in body["messages"] if message["role"] == "assistant"]
    # The step that called the tool carries its reasoning; the answer after it does not need it.
    assert [message.get("reasoning_content") for message in assistants] == ["The time is needed.", None]
    assert assistants[0]["tool_calls"][0]["id"] == "call_1"


@pytest.mark.django_db
def test_an_export_with_checked_replies_imports_without_the_verdicts(bob, schema_conversation):
    parts = json_replies.with_check([{"type": "text", "text": '{"a": 1}'}], SCHEMA_FORMAT)
    question = schema_conversation.messages.create(
        role=Message.Role.USER, parts=[{"type": "text", "text": "Go"}]
    )
    answer = schema_conversation.messages.create(role=Message.Role.ASSISTANT, parent=question, parts=parts)
    schema_conversation.current_leaf = answer
    schema_conversation.save(update_fields=["current_leaf"])

    exported = json.dumps(transfer.export_json(schema_conversation)).encode()
    assert '"json_check"' in exported.decode()
    (imported,) = transfer.import_file(bob, exported)
    assert imported.messages.get(role=Message.Role.ASSISTANT).parts == [{"type": "text", "text": '{"a": 1}'}]
