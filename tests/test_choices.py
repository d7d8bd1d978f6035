"""n > 1: one upstream request, its choices saved as versions of the reply ("< 1/3 >")."""

import pytest
from asgiref.sync import async_to_sync

from conversations import generation, messaging
from conversations.models import Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline, text_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def model_takes_n(offline_model):
    offline_model.supported_parameters = ["temperature", "n"]
    offline_model.save()


async def run_reply(plan) -> None:
    await generation.launch(plan)


def test_each_choice_becomes_a_version_of_the_reply(bob, bob_conversation, offline_upstream):
    bob_conversation.parameters = {"n": 3}
    bob_conversation.save()
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), offline(reply="Same answer"))
    async_to_sync(run_reply)(plan)
    replies = list(Message.objects.filter(parent_id=plan.reply.parent_id).order_by("pk"))
    assert [reply.text for reply in replies] == [
        "Version 1 of 3. Same answer",
        "Version 2 of 3. Same answer",
        "Version 3 of 3. Same answer",
    ]
    assert {reply.status for reply in replies} == {Message.Status.COMPLETE}
    bob_conversation.refresh_from_db()
    assert bob_conversation.current_leaf_id == plan.reply.pk  # the first choice stays selected
    # One upstream request, one usage record, counting every choice's tokens.
    record = UsageRecord.objects.get(message=plan.reply)
    assert UsageRecord.objects.count() == 1
    ledger = offline_upstream.request(str(record.request_id))
    assert ledger["body"]["n"] == 3
    assert record.completion_tokens == ledger["usage"]["completion_tokens"] == 3 * 3


def test_the_versions_arrive_with_the_end_of_the_reply_and_after_a_reload(
    bob, bob_conversation, offline_upstream
):
    bob_conversation.parameters = {"n": 2}
    bob_conversation.save()
    cookie = session_cookie(bob)
    conversation = str(bob_conversation.public_id)

    async def scenario() -> tuple[dict, dict]:
        socket = Socket(cookie)
        assert await socket.open()
        await socket.send(type="subscribe", conversation=conversation)
        await socket.until("snapshot")
        await socket.send(type="send", conversation=conversation, text=offline(reply="Hello there"))
        done = await socket.until("reply.done")
        await socket.send(type="subscribe", conversation=conversation)
        snapshot = await socket.until("snapshot")
        await socket.close()
        return done, snapshot

    done, snapshot = async_to_sync(scenario)()
    assert len(done["data"]["siblings"]) == 2 and done["data"]["siblings"][0] == done["message"]
    assert text_of(done["data"]) == "Version 1 of 2. Hello there"
    shown = snapshot["data"]["messages"][-1]
    assert shown["id"] == done["message"] and shown["siblings"] == done["data"]["siblings"]
    other = Message.objects.get(pk=done["data"]["siblings"][1])
    assert other.text == "Version 2 of 2. Hello there"


def test_a_stopped_request_keeps_what_each_choice_wrote(bob, bob_conversation, offline_upstream):
    bob_conversation.parameters = {"n": 2}
    bob_conversation.save()
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), offline(words=400, pace_ms=10))

    async def run() -> None:
        import asyncio

        task = generation.launch(plan)
        await asyncio.sleep(0.6)
        await generation.stop(plan.reply.pk)
        await task

    async_to_sync(run)()
    replies = list(Message.objects.filter(parent_id=plan.reply.parent_id).order_by("pk"))
    assert len(replies) == 2
    assert {reply.status for reply in replies} == {Message.Status.CANCELLED}
    assert all(reply.text.startswith(f"Version {i} of 2.") for i, reply in enumerate(replies, 1))
    assert all(len(reply.text.split()) < 400 for reply in replies)
