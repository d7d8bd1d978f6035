"""Real daphne processes: a reply outlives kill -9 and SIGTERM as "interrupted" with its text, and on
PostgreSQL + Redis a reply started through one process is watched and stopped through another."""

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import websockets
from django.conf import settings
from django.db import connection

from conversations.models import Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.fixtures.live import RunningServer, chatsite_server
from tests.websocket_client import offline

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = " ".join(f"word{i}" for i in range(300))


@contextmanager
def server(offline_upstream) -> Iterator[RunningServer]:
    # A short lease, so that the sweeper finds a killed process's reply within seconds.
    with chatsite_server(offline_upstream, REPLY_LEASE_SECONDS="2") as running:
        yield running


def ws_url(server: RunningServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/chat/"


async def connect(server: RunningServer, cookie: bytes):
    socket = await websockets.connect(
        ws_url(server), origin=server.url, additional_headers={"Cookie": cookie.decode()}
    )
    assert json.loads(await socket.recv())["type"] == "hello"
    return socket


async def receive_until(socket, type: str, **match) -> dict:
    async with asyncio.timeout(20):
        while True:
            event = json.loads(await socket.recv())
            if event["type"] == type and all(event.get(k) == v for k, v in match.items()):
                return event


async def start_slow_reply(server: RunningServer, cookie: bytes, conversation: str, deltas: int = 5) -> tuple:
    socket = await connect(server, cookie)
    await socket.send(
        json.dumps({"type": "send", "conversation": conversation, "text": offline(reply=WORDS, pace_ms=40)})
    )
    await receive_until(socket, "message.created")
    reply = await receive_until(socket, "message.created")
    await receive_until(socket, "reply.delta", seq=deltas)
    return socket, reply["message"]


def wait_until_interrupted(reply_id: int) -> None:
    """In a worker thread, whose database connection is closed after: PostgreSQL cannot drop the test
    database while a connection is open."""
    try:
        wait_for(lambda: Message.objects.get(pk=reply_id).status == "interrupted")
    finally:
        connection.close()


def wait_for(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_kill_9_leaves_an_interrupted_reply_with_its_text_and_retry_works(
    bob, bob_conversation, offline_upstream
):
    cookie = session_cookie(bob)
    conversation = str(bob_conversation.public_id)
    with server(offline_upstream) as first:
        _, reply_id = asyncio.run(
            start_slow_reply(first, cookie, conversation, deltas=70)
        )  # > 2 s: checkpointed
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    saved = Message.objects.get(pk=reply_id)
    assert saved.status == "streaming" and WORDS.startswith(saved.text) and saved.text

    with server(offline_upstream) as second:

        async def reopen_and_retry() -> dict:
            socket = await connect(second, cookie)  # a socket starts the sweeper of this process
            await asyncio.to_thread(wait_until_interrupted, reply_id)
            await socket.send(json.dumps({"type": "subscribe", "conversation": conversation}))
            snapshot = await receive_until(socket, "snapshot")
            await socket.send(
                json.dumps({"type": "regenerate", "conversation": conversation, "message": reply_id})
            )
            done = await receive_until(socket, "reply.done")
            await socket.close()
            return snapshot, done

        snapshot, done = asyncio.run(reopen_and_retry())
    interrupted = snapshot["data"]["messages"][-1]
    assert interrupted["status"] == "interrupted" and interrupted["error"]["code"] == "interrupted"
    assert interrupted["parts"][-1]["text"] == saved.text
    assert done["data"]["status"] == "complete" and done["data"]["siblings"] == [reply_id, done["message"]]
    assert UsageRecord.objects.get(message_id=reply_id).status == "interrupted"


def test_sigterm_saves_the_reply_as_interrupted_before_exit(bob, bob_conversation, offline_upstream):
    cookie = session_cookie(bob)
    with server(offline_upstream) as running:
        _, reply_id = asyncio.run(
            start_slow_reply(running, cookie, str(bob_conversation.public_id), deltas=10)
        )
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=20) is not None
    saved = Message.objects.get(pk=reply_id)
    assert saved.status == "interrupted" and len(saved.text.split()) >= 10 and WORDS.startswith(saved.text)
    assert UsageRecord.objects.get(message_id=saved.pk).status == "interrupted"


@pytest.mark.skipif(
    not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")),
    reason="two processes share replies through PostgreSQL + Redis (DATABASE_URL and REDIS_URL)",
)
def test_a_reply_started_in_one_process_is_watched_and_stopped_from_another(
    bob, bob_conversation, offline_upstream
):
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"].startswith("channels_redis")
    cookie = session_cookie(bob)
    conversation = str(bob_conversation.public_id)
    with server(offline_upstream) as first, server(offline_upstream) as second:

        async def watch_and_stop() -> tuple[dict, dict, str]:
            writer, reply_id = await start_slow_reply(first, cookie, conversation, deltas=10)
            watcher = await connect(second, cookie)
            await watcher.send(json.dumps({"type": "subscribe", "conversation": conversation}))
            snapshot = await receive_until(watcher, "snapshot")
            live = snapshot["data"]["messages"][-1]
            text, last = live["parts"][-1]["text"], live["seq"]
            while last < live["seq"] + 10:  # deltas from the other process, none missing, none twice
                event = await receive_until(watcher, "reply.delta")
                if event["seq"] <= last:
                    continue
                assert event["seq"] == last + 1
                text, last = text + event["content"], event["seq"]
            await watcher.send(
                json.dumps({"type": "stop", "conversation": conversation, "message": reply_id})
            )
            done_watcher = await receive_until(watcher, "reply.done")
            done_writer = await receive_until(writer, "reply.done")
            await watcher.close()
            await writer.close()
            return live, done_watcher, done_writer, text

        live, done_watcher, done_writer, text = asyncio.run(watch_and_stop())
    assert live["status"] == "streaming" and live["seq"] >= 10
    assert done_watcher["data"]["status"] == done_writer["data"]["status"] == "cancelled"
    final = done_watcher["data"]["parts"][-1]["text"]
    assert final.startswith(text) and WORDS.startswith(final)
    assert UsageRecord.objects.get(message_id=done_watcher["message"]).status == "cancelled"
