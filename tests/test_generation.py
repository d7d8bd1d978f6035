"""A reply's life on the server: queries per reply, checkpoints, the sweeper, shutdown."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import events, generation, messaging
from conversations.models import Message, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


def say(**directive) -> str:
    return "!offline " + json.dumps(directive)


def reply_queries(bob, conversation, words: int, monkeypatch) -> tuple[int, int]:
    """Queries made by one reply from launch to reply.done, and how many checkpoints it took."""
    plan = messaging.do_send_message(bob, str(conversation.public_id), say(words=words))
    checkpoints = []
    save_checkpoint = generation._save_checkpoint

    def counted(*args):
        checkpoints.append(args)
        save_checkpoint(*args)

    monkeypatch.setattr(generation, "_save_checkpoint", counted)

    async def run() -> None:
        await generation.launch(plan)

    with CaptureQueriesContext(connection) as queries:
        async_to_sync(run)()
    plan.reply.refresh_from_db()
    assert plan.reply.status == "complete" and len(plan.reply.text.split()) == words
    return len(queries), len(checkpoints)


def test_it_saves_a_reply_in_a_fixed_count_of_queries_plus_one_per_checkpoint(
    bob, bob_conversation, monkeypatch
):
    # At full speed a 2,000-word reply may still outlast a checkpoint interval (a Redis round trip per
    # delta): whatever it took, each checkpoint is one query and nothing else grows with the length.
    short, short_checkpoints = reply_queries(bob, bob_conversation, 10, monkeypatch)
    long, long_checkpoints = reply_queries(bob, bob_conversation, 2000, monkeypatch)
    assert short_checkpoints == 0
    assert long == short + long_checkpoints


def test_a_slow_reply_is_checkpointed_while_it_streams(bob, bob_conversation, monkeypatch):
    monkeypatch.setattr(generation, "CHECKPOINT_SECONDS", 0.2)
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), say(words=40, pace_ms=20))
    seen = []

    async def run() -> None:
        task = generation.launch(plan)
        while not task.done():
            await asyncio.sleep(0.1)
            seen.append(await _saved_text(plan.reply.pk))
        await task

    async_to_sync(run)()
    partial = [text for text in seen if text and len(text.split()) < 40]
    assert partial, "the text was saved while the reply was still streaming"


async def _saved_text(message_id: int) -> str:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(lambda: Message.objects.get(pk=message_id).text)()


def test_the_sweeper_marks_lapsed_replies_interrupted_and_keeps_their_text(bob, bob_conversation):
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    Message.objects.filter(pk=plan.reply.pk).update(
        status="streaming", text="half a", parts=[{"type": "text", "text": "half a"}]
    )
    assert generation.sweep() == []  # the lease has not lapsed
    Message.objects.filter(pk=plan.reply.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    [(group, done)] = generation.sweep()
    assert group == events.conversation_group(bob_conversation.public_id.hex)  # open tabs are told
    assert done["type"] == "reply.done" and done["message"] == plan.reply.pk
    assert done["data"]["status"] == "interrupted" and done["data"]["parts"][-1]["text"] == "half a"
    reply = Message.objects.get(pk=plan.reply.pk)
    assert reply.status == "interrupted" and reply.text == "half a" and reply.error_code == "interrupted"
    assert UsageRecord.objects.get(message=reply).status == "interrupted"


def test_shutdown_saves_live_replies_as_interrupted(bob, bob_conversation):
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), say(words=500, pace_ms=10))

    async def run() -> None:
        task = generation.launch(plan)
        await asyncio.sleep(0.5)
        await generation.shutdown()
        assert task.done()

    async_to_sync(run)()
    reply = Message.objects.get(pk=plan.reply.pk)
    assert reply.status == "interrupted" and 0 < len(reply.text.split()) < 500
    assert UsageRecord.objects.get(message=reply).status == "interrupted"


def test_it_refuses_a_model_the_member_may_not_use(bob, bob_conversation, offline_model, offline_upstream):
    from django.contrib.auth.models import Group

    offline_model.allowed_groups.add(Group.objects.create(name="staff only"))
    with pytest.raises(messaging.RefusedError) as refused:
        messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    assert refused.value.code == "unknown_model"
    assert not Message.objects.exists()  # nothing half-saved


def test_a_reply_claimed_while_announced_is_not_swept_and_a_stop_meanwhile_holds(
    bob, bob_conversation, offline_upstream
):
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), say(words=50, pace_ms=20))
    Message.objects.filter(pk=plan.reply.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    offline_upstream.clear()

    async def run() -> None:
        generation.claim(plan)  # as the consumer does before publishing message.created
        assert await database_sync_to_async(generation.sweep)() == []  # claimed: not the sweeper's
        await generation.stop(plan.reply.pk)  # Stop before the reply was launched
        await generation.launch(plan)

    from channels.db import database_sync_to_async

    async_to_sync(run)()
    reply = Message.objects.get(pk=plan.reply.pk)
    assert reply.status == Message.Status.CANCELLED
    assert offline_upstream.requests() == []  # nothing was asked upstream
    record = UsageRecord.objects.get(message=reply)
    assert (record.status, record.prompt_tokens, record.estimated) == ("cancelled", 0, False)
