"""Titles written by the model after a new conversation's first reply (conversations/titles.py), over
real sockets: the chat socket and the offline upstream."""

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from conversations import messaging, offline_upstream, titles
from conversations.models import Conversation, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "tell me about lighthouses in winter, please"
GENERATED = "Tell Me About Lighthouses In Winter"  # the offline upstream's title: first six words


@pytest.fixture
def bob_cookie(bob):
    return session_cookie(bob)


async def open_socket(cookie: bytes) -> Socket:
    socket = Socket(cookie)
    assert await socket.open()
    return socket


async def until_done(socket: Socket) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    """Read up to the next reply's reply.done; the reply's id and every event seen, by type."""
    seen: dict[str, list[dict[str, Any]]] = {}
    reply_id = None
    while True:
        event = await socket.receive()
        seen.setdefault(event["type"], []).append(event)
        if event["type"] == "message.created" and event["data"]["role"] == "assistant":
            reply_id = event["message"]
        if event["type"] == "reply.done" and event["message"] == reply_id:
            return reply_id, seen


async def start_conversation(socket: Socket, text: str) -> tuple[str, int, dict[str, list[dict[str, Any]]]]:
    await socket.send(type="send", conversation=None, text=text)
    reply_id, seen = await until_done(socket)
    return seen["conversation.created"][0]["conversation"], reply_id, seen


async def settle(reply_id: int) -> None:
    """Wait for the reply's own task to end (a title task has started by then), then for titles."""
    for task in [t for t in asyncio.all_tasks() if t.get_name() == f"reply-{reply_id}"]:
        await task
    await asyncio.gather(*titles.pending())


async def leftover(socket: Socket) -> list[dict[str, Any]]:
    """The events still on their way to the socket."""
    events = []
    while not await socket.communicator.receive_nothing(timeout=0.2):
        events.append(await socket.receive())
    return events


@database_sync_to_async
def title_records(conversation: str) -> list[UsageRecord]:
    return list(
        UsageRecord.objects.filter(
            conversation__public_id=conversation, source=UsageRecord.Source.TITLE
        ).order_by("pk")
    )


@database_sync_to_async
def title_of(conversation: str) -> str:
    return Conversation.objects.get(public_id=conversation).title


async def test_the_model_titles_a_new_conversation_after_its_first_reply(
    bob, bob_cookie, offline_model, offline_upstream
):
    socket = await open_socket(bob_cookie)
    conversation, reply_id, seen = await start_conversation(socket, FIRST)
    # The first line stands in until the model's title arrives, after reply.done.
    assert seen["conversation.created"][0]["data"]["title"] == FIRST
    assert seen["reply.done"][0]["data"]["status"] == "complete"
    assert "conversation.updated" not in seen
    updated = await socket.until("conversation.updated", conversation=conversation)
    await socket.close()

    assert updated["data"]["title"] == GENERATED
    assert await title_of(conversation) == GENERATED
    [record] = await title_records(conversation)
    assert record.status == "complete" and record.error_code == ""
    assert (record.user_id, record.message_id, record.model_id) == (bob.pk, reply_id, offline_model.pk)
    ledger = offline_upstream.request(str(record.request_id))
    assert ledger["stream"] is False
    assert record.prompt_tokens == ledger["usage"]["prompt_tokens"] > 0
    assert record.completion_tokens == ledger["usage"]["completion_tokens"] == len(GENERATED.split())
    assert not record.estimated and record.finished_at is not None
    sent = ledger["body"]["messages"]
    assert sent[0] == {"role": "user", "content": FIRST}
    assert sent[1]["role"] == "assistant" and "You said" in sent[1]["content"]
    assert sent[2] == {"role": "user", "content": titles.INSTRUCTION}


async def test_a_slow_title_holds_up_neither_the_reply_nor_the_next_send(bob_cookie, offline_model):
    socket = await open_socket(bob_cookie)
    first = offline(reply="Hello.", title={"first_byte_ms": 1500})
    conversation, _, _ = await start_conversation(socket, first)

    await socket.send(type="send", conversation=conversation, text=offline(reply="Second."))
    second_id, seen = await until_done(socket)
    assert socket.texts[second_id] == "Second."
    # Only the send's own announcement so far, still with the provisional title.
    assert [e["data"]["title"] for e in seen["conversation.updated"]] == [first[: messaging.TITLE_CHARS]]

    updated = await socket.until("conversation.updated", conversation=conversation)
    await socket.close()
    assert updated["data"]["title"] == offline_upstream.OFFLINE_TITLE  # a directive is no topic
    assert await title_of(conversation) == offline_upstream.OFFLINE_TITLE


async def test_a_rename_before_the_title_arrives_wins(bob, bob_cookie, offline_model):
    socket = await open_socket(bob_cookie)
    conversation, reply_id, _ = await start_conversation(
        socket, offline(reply="Hello.", title={"first_byte_ms": 800})
    )

    def rename() -> int:
        client = Client()
        client.force_login(bob)
        body = json.dumps({"title": "My own name"})
        return client.patch(
            f"/api/conversations/{conversation}/", body, content_type="application/json"
        ).status_code

    assert await database_sync_to_async(rename)() == 200
    assert titles.pending(), "the title was still on its way"
    await settle(reply_id)
    events = await leftover(socket)
    await socket.close()

    assert await title_of(conversation) == "My own name"
    [record] = await title_records(conversation)
    assert record.status == "complete"  # the model answered; its title was not wanted any more
    assert [e["data"]["title"] for e in events if e["type"] == "conversation.updated"] == ["My own name"]


async def test_a_stopped_first_reply_gets_no_title(bob_cookie, offline_model):
    socket = await open_socket(bob_cookie)
    text = offline(words=400, pace_ms=20)
    await socket.send(type="send", conversation=None, text=text)
    delta = await socket.until("reply.delta", seq=3)
    await socket.send(type="stop", conversation=delta["conversation"], message=delta["message"])
    done = await socket.until("reply.done", message=delta["message"])
    assert done["data"]["status"] == "cancelled"
    await settle(delta["message"])
    events = await leftover(socket)
    await socket.close()

    assert await title_records(delta["conversation"]) == []
    assert await title_of(delta["conversation"]) == text[: messaging.TITLE_CHARS]
    assert not [e for e in events if e["type"] == "conversation.updated"]


async def test_a_failed_first_reply_gets_no_title(bob_cookie, offline_model, upstream_settings):
    socket = await open_socket(bob_cookie)
    text = offline(status=400)
    conversation, reply_id, seen = await start_conversation(socket, text)
    assert seen["reply.done"][0]["data"]["status"] == "error"
    await settle(reply_id)
    await socket.close()

    assert await title_records(conversation) == []
    assert await title_of(conversation) == text[: messaging.TITLE_CHARS]


@pytest.mark.parametrize(
    ("title", "code"),
    [
        ({"status": 400, "error_message": "No titles today."}, "bad_request"),
        ({"first_byte_ms": 3000}, "first_byte_timeout"),
    ],
)
async def test_a_failed_title_request_keeps_the_first_line_and_is_recorded(
    bob_cookie, offline_model, upstream_settings, title, code
):
    upstream_settings.UPSTREAM_FIRST_BYTE_TIMEOUT = 0.5
    upstream_settings.UPSTREAM_MAX_RETRIES = 0
    socket = await open_socket(bob_cookie)
    text = offline(reply="Hello.", title=title)
    conversation, reply_id, seen = await start_conversation(socket, text)
    assert seen["reply.done"][0]["data"]["status"] == "complete"
    await settle(reply_id)
    events = await leftover(socket)
    await socket.close()

    assert await title_of(conversation) == text[: messaging.TITLE_CHARS]
    [record] = await title_records(conversation)
    assert record.status == "error" and record.error_code == code
    assert record.estimated and record.completion_tokens == 0 and record.finished_at is not None
    assert not [e for e in events if e["type"] in ("conversation.updated", "error")]


async def test_only_the_first_reply_of_a_new_conversation_asks_for_a_title(bob_cookie, offline_model):
    socket = await open_socket(bob_cookie)
    conversation, first_reply, _ = await start_conversation(socket, FIRST)
    await socket.until("conversation.updated", conversation=conversation)
    await settle(first_reply)

    await socket.send(type="send", conversation=conversation, text="And in summer?")
    second_reply, _ = await until_done(socket)
    await settle(second_reply)
    await socket.send(type="regenerate", conversation=conversation, message=first_reply)
    regenerated, _ = await until_done(socket)
    await settle(regenerated)
    snapshot = await _snapshot(socket, conversation)
    prompt = snapshot["data"]["messages"][0]["id"]
    await socket.send(type="edit", conversation=conversation, message=prompt, text="what about fog at sea")
    edited, _ = await until_done(socket)
    await settle(edited)
    await socket.close()

    assert len(await title_records(conversation)) == 1
    assert await title_of(conversation) == GENERATED


async def test_a_conversation_that_existed_before_its_first_message_keeps_its_title(
    bob_cookie, bob_conversation
):
    # Conversations are created by their first message or by an import; either way a title exists
    # that is not the first line of a send, and the model is not asked for another.
    socket = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(type="send", conversation=conversation, text=FIRST)
    reply_id, _ = await until_done(socket)
    await settle(reply_id)
    await socket.close()

    assert await title_records(conversation) == []
    assert await title_of(conversation) == "Bob's"


async def _snapshot(socket: Socket, conversation: str) -> dict[str, Any]:
    await socket.send(type="resync", conversation=conversation)
    return await socket.until("snapshot")


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        ("Trip to Lisbon", "Trip to Lisbon"),
        ('**Title:** "Spring poems."', "Spring poems"),
        ("<think>The user asks about fog.\nShort.</think>\n\n“Fog at sea”\nA second line", "Fog at sea"),
        (
            "\u6807\u9898\uff1a\u300a\u51ac\u5929\u7684\u706f\u5854\u300b",
            "冬天的灯塔",
        ),  # "Title:" and book-title marks, in Chinese
        ("# Regex   help\n", "Regex help"),
        ("x" * 300, "x" * 200),
        ("  \n ", ""),
    ],
)
def test_a_title_is_cleaned_to_one_short_line(answer, title):
    assert titles.clean(answer) == title


def test_the_offline_upstream_titles_from_the_first_words():
    assert offline_upstream.title_for(FIRST) == GENERATED
    assert offline_upstream.title_for("hello!") == "Hello"
    assert offline_upstream.title_for("冬天的灯塔 怎么样") == "冬天的灯塔 怎么样"
    assert offline_upstream.title_for(offline(reply="x")) == offline_upstream.OFFLINE_TITLE
    assert titles.INSTRUCTION.startswith(offline_upstream.TITLE_REQUEST)
