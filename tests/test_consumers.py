"""The chat socket against the offline upstream over a real socket (docs/websocket.md)."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from conversations import consumers, messaging
from conversations.models import Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = "Streams **arrive** in order, one piece at a time, and nothing is lost."


@pytest.fixture
def bob_cookie(bob):
    return session_cookie(bob)


@pytest.fixture
def charlie_cookie(charlie):
    return session_cookie(charlie)


async def open_socket(cookie, **kwargs) -> Socket:
    socket = Socket(cookie, **kwargs)
    assert await socket.open()
    return socket


async def test_it_streams_a_reply_and_saves_it_once(bob_cookie, bob_conversation, offline_upstream):
    socket = await open_socket(bob_cookie)
    await socket.send(type="subscribe", conversation=str(bob_conversation.public_id))
    await socket.until("snapshot")
    await socket.send(
        type="send", conversation=str(bob_conversation.public_id), text=offline(reply=REPLY, pace_ms=5)
    )
    prompt = await socket.until("message.created")
    reply = await socket.until("message.created")
    assert prompt["data"]["role"] == "user" and reply["data"]["status"] == "pending"
    seqs = []
    while True:
        event = await socket.receive()
        if event["type"] == "reply.delta":
            seqs.append(event["seq"])
        if event["type"] == "reply.done":
            break
    await socket.close()
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 5
    assert event["data"]["status"] == "complete"
    assert socket.texts[reply["message"]] == REPLY

    saved = await database_sync_to_async(Message.objects.get)(pk=reply["message"])
    assert saved.text == REPLY and saved.status == "complete" and saved.stream_seq == len(seqs)
    record = await database_sync_to_async(UsageRecord.objects.get)(message_id=saved.pk)
    ledger = offline_upstream.request(str(record.request_id))
    assert record.status == "complete"
    assert record.completion_tokens == ledger["usage"]["completion_tokens"]
    assert record.prompt_tokens == ledger["usage"]["prompt_tokens"]


async def test_it_starts_a_new_conversation(bob_cookie, offline_model):
    socket = await open_socket(bob_cookie)
    await socket.send(type="send", conversation=None, text="Hello there")
    seen = {}
    # The model's title (titles.py) follows the reply; waiting for it leaves no task behind the test.
    while "conversation.updated" not in seen:
        event = await socket.receive()
        seen.setdefault(event["type"], event)
    await socket.close()
    created, snapshot, done = seen["conversation.created"], seen["snapshot"], seen["reply.done"]
    assert snapshot["conversation"] == created["conversation"] == done["conversation"]
    assert created["data"]["title"] == "Hello there"  # the first line, until the model's arrives
    assert seen["conversation.updated"]["data"]["title"] == "Hello There"
    assert [m["role"] for m in snapshot["data"]["messages"]] == ["user", "assistant"]
    assert "offline" in socket.texts[done["message"]].lower()


async def test_it_resumes_after_reconnect_with_nothing_missing_or_twice(
    bob_cookie, bob_conversation, offline_upstream
):
    words = " ".join(f"w{i}" for i in range(60))
    first = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    await first.send(type="subscribe", conversation=conversation)
    await first.until("snapshot")
    await first.send(type="send", conversation=conversation, text=offline(reply=words, pace_ms=15))
    await first.until("message.created")
    reply = await first.until("message.created")
    await first.until("reply.delta", seq=10)
    await first.close()  # the tab is closed mid-reply

    second = await open_socket(bob_cookie)
    await second.send(type="subscribe", conversation=conversation)
    snapshot = await second.until("snapshot")
    live = snapshot["data"]["messages"][-1]
    assert live["status"] == "streaming" and live["seq"] >= 10
    assert words.startswith(second.texts[reply["message"]])
    await second.until("reply.done")
    await second.close()
    assert second.texts[reply["message"]] == words and second.gaps == 0


async def test_a_dropped_delta_is_recovered_by_resync(bob_cookie, bob_conversation, monkeypatch):
    dropped = []
    forward = consumers.ChatConsumer.forward

    async def lossy_forward(self, event):
        if '"seq":3,' in event["frame"] and not dropped:
            dropped.append(event)  # as channels_redis does when a channel is full: silently
            return
        await forward(self, event)

    monkeypatch.setattr(consumers.ChatConsumer, "forward", lossy_forward)
    words = " ".join(f"x{i}" for i in range(30))
    socket = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(type="send", conversation=conversation, text=offline(reply=words, pace_ms=10))
    await socket.until("message.created")
    reply = await socket.until("message.created")
    while socket.gaps == 0:
        await socket.receive()
    await socket.send(type="resync", conversation=conversation)
    await socket.until("snapshot")
    await socket.until("reply.done")
    await socket.close()
    assert dropped and socket.texts[reply["message"]] == words


async def test_stop_from_a_second_socket_keeps_the_text_and_counts_usage_once(
    bob_cookie, bob_conversation, offline_upstream
):
    words = " ".join(f"s{i}" for i in range(200))
    conversation = str(bob_conversation.public_id)
    writer, watcher = await open_socket(bob_cookie), await open_socket(bob_cookie)
    for socket in (writer, watcher):
        await socket.send(type="subscribe", conversation=conversation)
        await socket.until("snapshot")
    await writer.send(type="send", conversation=conversation, text=offline(reply=words, pace_ms=20))
    await watcher.until("message.created")
    reply = await watcher.until("message.created")
    await watcher.until("reply.delta", seq=5)
    await watcher.send(type="stop", conversation=conversation, message=reply["message"])
    done = await writer.until("reply.done")
    await watcher.until("reply.done")
    await writer.close()
    await watcher.close()
    assert done["data"]["status"] == "cancelled"
    saved = await database_sync_to_async(Message.objects.get)(pk=reply["message"])
    assert saved.status == "cancelled" and words.startswith(saved.text) and len(saved.text) > 5
    records = await database_sync_to_async(list)(UsageRecord.objects.filter(message_id=saved.pk))
    assert len(records) == 1 and records[0].status == "cancelled" and records[0].finished_at


async def test_an_upstream_error_is_kept_on_the_message(bob_cookie, bob_conversation):
    socket = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    await socket.send(type="send", conversation=conversation, text=offline(status=401))
    done = await socket.until("reply.done")
    await socket.close()
    assert done["data"]["status"] == "error" and done["data"]["error"]["code"] == "auth"
    saved = await database_sync_to_async(Message.objects.get)(pk=done["message"])
    assert saved.status == "error" and saved.error_code == "auth" and saved.error_detail


async def test_regenerate_adds_a_version_and_select_switches(bob_cookie, bob_conversation):
    socket = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    await socket.send(type="send", conversation=conversation, text=offline(reply="first"))
    first = await socket.until("reply.done")
    await socket.send(type="regenerate", conversation=conversation, message=first["message"])
    second = await socket.until("reply.done")
    assert second["data"]["siblings"] == [first["message"], second["message"]]
    await socket.send(type="select", conversation=conversation, message=first["message"])
    snapshot = await socket.until("snapshot")
    await socket.close()
    assert snapshot["data"]["current_leaf"] == first["message"]
    assert snapshot["data"]["messages"][-1]["siblings"] == [first["message"], second["message"]]


async def test_older_messages_come_page_by_page(bob_cookie, bob_conversation, monkeypatch):
    monkeypatch.setattr(messaging, "SNAPSHOT_MESSAGES", 2)
    monkeypatch.setattr(messaging, "HISTORY_MESSAGES", 2)
    socket = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    for word in ("one", "two"):
        await socket.send(type="send", conversation=conversation, text=offline(reply=word))
        await socket.until("reply.done")
    await socket.send(type="subscribe", conversation=conversation)
    snapshot = await socket.until("snapshot")
    assert [m["role"] for m in snapshot["data"]["messages"]] == ["user", "assistant"]
    assert snapshot["data"]["older"] is True
    await socket.send(
        type="history", conversation=conversation, before=snapshot["data"]["messages"][0]["id"], ref="h"
    )
    history = await socket.until("history")
    await socket.close()
    assert history["ref"] == "h" and history["data"]["older"] is False
    assert [m["parts"][0]["text"] for m in history["data"]["messages"]][1] == "one"


async def test_it_refuses_anonymous_and_foreign_origins(bob_cookie):
    assert not await Socket(None).open()
    assert not await Socket(bob_cookie, origin=b"http://evil.example").open()


async def test_charlie_cannot_reach_bobs_conversation(charlie_cookie, bob_conversation):
    socket = await open_socket(charlie_cookie)
    conversation = str(bob_conversation.public_id)
    for frame in (
        {"type": "subscribe", "conversation": conversation},
        {"type": "send", "conversation": conversation, "text": "hi"},
        {"type": "stop", "conversation": conversation, "message": 1},
        {"type": "resync", "conversation": conversation},
        {"type": "history", "conversation": conversation, "before": 1},
    ):
        await socket.send(**frame, ref="x")
        error = await socket.until("error")
        assert error["code"] == "not_found" and error["ref"] == "x"
    await socket.close()
    assert not await database_sync_to_async(Message.objects.exists)()


async def test_malformed_frames_get_typed_errors_and_the_socket_stays_usable(bob_cookie):
    socket = await open_socket(bob_cookie)
    communicator = socket.communicator
    await communicator.send_to(bytes_data=b"\x00\x01")
    assert (await socket.until("error"))["code"] == "binary_frame"
    await communicator.send_to(text_data="{not json")
    assert (await socket.until("error"))["code"] == "bad_json"
    await communicator.send_to(text_data="[1, 2]")
    assert (await socket.until("error"))["code"] == "bad_json"
    await communicator.send_to(text_data='{"type": "send", "text": "' + "a" * 70_000 + '"}')
    assert (await socket.until("error"))["code"] == "too_large"
    await socket.send(type="send", conversation=None, text=42)
    assert (await socket.until("error"))["code"] == "bad_request"
    await socket.send(type="ping", v=2)
    assert (await socket.until("error"))["code"] == "bad_version"
    await socket.send(type="no-such-type")
    await socket.send(type=[1])  # not a type at all: ignored like an unknown one
    await socket.send(type={"name": "ping"})
    await socket.send(type="ping")
    assert (await socket.receive())["type"] == "pong"
    await socket.close()


async def test_the_socket_closes_when_the_session_ends(bob, bob_cookie, monkeypatch):
    monkeypatch.setattr(consumers, "SESSION_CHECK_SECONDS", 0.1)
    socket = await open_socket(bob_cookie)
    bob.is_active = False
    await database_sync_to_async(bob.save)()
    output = await socket.communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": consumers.CLOSE_UNAUTHENTICATED}
    await asyncio.sleep(0)


async def test_it_refuses_a_prompt_under_a_reply_still_being_written(bob_cookie, bob_conversation):
    socket = await open_socket(bob_cookie)
    conversation = str(bob_conversation.public_id)
    await socket.send(type="send", conversation=conversation, text=offline(words=200, pace_ms=20))
    await socket.until("reply.delta", seq=2)
    await socket.send(type="send", conversation=conversation, text="And another thing", ref="second")
    error = await socket.until("error")
    assert error["code"] == "busy" and error["ref"] == "second"
    reply = max(socket.last_seq)
    await socket.send(type="stop", conversation=conversation, message=reply)
    await socket.until("reply.done")
    await socket.send(type="send", conversation=conversation, text=offline(reply="fine now"))
    done = await socket.until("reply.done", message=reply + 2)
    await socket.close()
    assert done["data"]["status"] == "complete" and socket.texts[done["message"]] == "fine now"


async def test_a_forbidden_model_is_refused_before_anything_reaches_the_upstream(
    bob_cookie, bob, offline_model, offline_upstream
):
    def forbid() -> None:
        from django.contrib.auth.models import Group

        offline_model.allowed_groups.add(Group.objects.create(name="research"))

    await database_sync_to_async(forbid)()
    offline_upstream.clear()
    socket = Socket(bob_cookie)
    assert await socket.open()
    await socket.send(type="send", conversation=None, text="Hello", model=offline_model.pk, ref="s1")
    error = await socket.until("error")
    assert (error["code"], error["ref"]) == ("unknown_model", "s1")
    await socket.close()
    assert offline_upstream.requests() == []  # the offline upstream's log: no request reached it
    assert not await database_sync_to_async(Message.objects.exists)()
