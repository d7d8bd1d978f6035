"""Budgets and rate limits: windows in the configured zone, admission by one conditional UPDATE, the
race with room for one request, settlement to the real usage, and what the member is told."""

import asyncio
import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import budgets, generation, messaging
from conversations.models import Conversation, Limit, LimitUsage, Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

pytestmark = pytest.mark.django_db(transaction=True)


def test_days_and_months_start_at_midnight_in_the_budget_time_zone(settings):
    settings.BUDGET_TIME_ZONE = "Asia/Shanghai"
    late_utc = datetime(2026, 11, 29, 17, 30, tzinfo=UTC)  # 01:30 on the 30th in Shanghai
    start, end = budgets.window(Limit.Period.DAY, late_utc)
    assert start.isoformat() == "2026-11-30T00:00:00+08:00"
    assert end.isoformat() == "2026-12-01T00:00:00+08:00"
    start, end = budgets.window(Limit.Period.MONTH, late_utc)
    assert (start.isoformat(), end.isoformat()) == ("2026-11-01T00:00:00+08:00", "2026-12-01T00:00:00+08:00")
    start, end = budgets.window(Limit.Period.MINUTE, late_utc.replace(second=42))
    assert (end - start).total_seconds() == 60 and start.second == 0


def test_a_day_across_a_clock_change_still_ends_at_midnight(settings):
    settings.BUDGET_TIME_ZONE = "Europe/Berlin"
    start, end = budgets.window(Limit.Period.DAY, datetime(2026, 3, 29, 10, tzinfo=UTC))
    assert (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds() == 23 * 3600  # spring forward
    assert end.hour == 0 and end.day == 30


def test_a_member_without_limits_costs_no_query(bob, offline_model):
    budgets.limits_for(bob.pk)  # loads the (empty) limits once
    with CaptureQueriesContext(connection) as queries:
        assert budgets.admit(bob.pk, offline_model, {"messages": []}, 100) == []
    assert len(queries) == 0


def one_request_of_tokens(model, chars: int) -> Decimal:
    """What admit() reserves for a prompt of `chars` characters with no max_tokens."""
    return budgets.estimate(model, {}, chars)[Limit.Kind.TOKENS]


def test_parallel_requests_with_room_for_one_admit_exactly_one(bob, offline_model):
    # Each thread has its own database connection: the conditional UPDATE is what decides.
    amount = one_request_of_tokens(offline_model, 10)
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=amount)
    admitted, refused = [], []
    barrier = threading.Barrier(6)

    def request() -> None:
        try:
            barrier.wait()
            admitted.append(budgets.admit(bob.pk, offline_model, {}, 10))
        except budgets.LimitReached as error:
            refused.append(error.code)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 1 and refused == ["budget_exceeded"] * 5
    row = LimitUsage.objects.get()
    assert row.reserved == amount and row.used == 0


def test_with_room_for_one_reply_parallel_sends_make_one_upstream_call(bob, offline_model, offline_upstream):
    text = offline(words=3)
    conversations = [Conversation.objects.create(owner=bob, model=offline_model) for _ in range(5)]
    chars = len(text)
    Limit.objects.create(
        user=bob,
        kind=Limit.Kind.TOKENS,
        period=Limit.Period.DAY,
        amount=one_request_of_tokens(offline_model, chars),
    )
    offline_upstream.clear()
    cookie = session_cookie(bob)

    async def scenario() -> list[dict]:
        sockets = [Socket(cookie) for _ in conversations]
        for socket in sockets:
            assert await socket.open()
        for socket, conversation in zip(sockets, conversations, strict=True):
            await socket.send(type="send", conversation=str(conversation.public_id), text=text, ref="r")
        answers = []
        for socket in sockets:
            while True:
                event = await socket.receive()
                if event["type"] in {"reply.done", "error"}:
                    answers.append(event)
                    break
        for socket in sockets:
            await socket.close()
        return answers

    answers = async_to_sync(scenario)()
    assert sorted(answer["type"] for answer in answers) == ["error"] * 4 + ["reply.done"]
    assert {a["code"] for a in answers if a["type"] == "error"} == {"budget_exceeded"}
    assert len(offline_upstream.requests()) == 1
    # A refused send saved nothing: the member's text went back to the composer instead.
    assert Message.objects.filter(conversation__owner=bob).count() == 2


async def run_reply(plan) -> None:
    await generation.launch(plan)


def test_a_finished_reply_settles_to_what_the_upstream_reported(bob, bob_conversation, offline_upstream):
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.MONTH, amount=100_000)
    Limit.objects.create(user=bob, kind=Limit.Kind.REQUESTS, period=Limit.Period.MINUTE, amount=10)
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), offline(words=12))
    assert len(plan.record.reservations) == 2
    async_to_sync(run_reply)(plan)
    record = UsageRecord.objects.get(pk=plan.record.pk)
    ledger = offline_upstream.request(str(record.request_id))
    tokens = LimitUsage.objects.get(limit__kind=Limit.Kind.TOKENS)
    assert tokens.reserved == 0
    assert tokens.used == record.prompt_tokens + record.completion_tokens
    assert record.completion_tokens == ledger["usage"]["completion_tokens"]
    requests = LimitUsage.objects.get(limit__kind=Limit.Kind.REQUESTS)
    assert (requests.used, requests.reserved) == (1, 0)


def test_a_stopped_reply_settles_too(bob, bob_conversation, offline_upstream):
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=100_000)
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), offline(words=200, pace_ms=20))

    async def run() -> None:
        task = generation.launch(plan)
        await asyncio.sleep(0.5)
        await generation.stop(plan.reply.pk)
        await task

    async_to_sync(run)()
    record = UsageRecord.objects.get(pk=plan.record.pk)
    assert record.status == UsageRecord.Status.CANCELLED
    row = LimitUsage.objects.get()
    assert row.reserved == 0 and row.used == record.prompt_tokens + record.completion_tokens > 0


def send_with_a_tool_call(member, conversation):
    conversation.tools = ["calculator"]
    conversation.save(update_fields=["tools"])
    directive = offline(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}])
    return messaging.do_send_message(member, str(conversation.public_id), directive)


def test_a_tool_step_is_admitted_against_budgets_but_not_against_the_rate(
    bob, bob_conversation, offline_upstream
):
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=100_000)
    Limit.objects.create(user=bob, kind=Limit.Kind.REQUESTS, period=Limit.Period.MINUTE, amount=1)
    plan = send_with_a_tool_call(bob, bob_conversation)
    async_to_sync(run_reply)(plan)
    assert Message.objects.get(pk=plan.reply.pk).status == Message.Status.COMPLETE
    first, step = UsageRecord.objects.filter(message=plan.reply).order_by("pk")
    assert step.source == UsageRecord.Source.TOOL_STEP
    assert [kind for _row, kind, _amount in step.reservations] == [Limit.Kind.TOKENS]
    tokens = LimitUsage.objects.get(limit__kind=Limit.Kind.TOKENS)
    both = sum(record.prompt_tokens + record.completion_tokens for record in (first, step))
    assert (tokens.used, tokens.reserved) == (both, 0)
    requests = LimitUsage.objects.get(limit__kind=Limit.Kind.REQUESTS)
    assert (requests.used, requests.reserved) == (1, 0)  # the member asked once


def test_a_tool_step_over_the_budget_ends_the_reply_and_keeps_the_steps(
    bob, bob_conversation, offline_upstream
):
    offline_upstream.clear()
    limit = Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=100_000)
    plan = send_with_a_tool_call(bob, bob_conversation)
    # Room for exactly the first request: the next one, with the call and its result, has none.
    limit.amount = Decimal(plan.record.reservations[0][2])
    limit.save()
    budgets.changed()
    async_to_sync(run_reply)(plan)
    reply = Message.objects.get(pk=plan.reply.pk)
    assert reply.status == Message.Status.ERROR and reply.error_code == "budget_exceeded"
    assert reply.error_detail.startswith("Out of budget:")
    assert [part["type"] for part in reply.parts][:2] == ["tool_call", "tool_result"]
    [record] = UsageRecord.objects.filter(message=reply)
    assert record.status == UsageRecord.Status.COMPLETE
    assert [entry["request_id"] for entry in offline_upstream.requests()] == [
        str(record.request_id)
    ]  # one call
    row = LimitUsage.objects.get()
    assert (row.used, row.reserved) == (record.prompt_tokens + record.completion_tokens, 0)


def test_a_lapsed_reply_keeps_its_reservation_as_used(bob, bob_conversation):
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=100_000)
    plan = messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    reserved = LimitUsage.objects.get().reserved
    Message.objects.filter(pk=plan.reply.pk).update(lease_expires_at=timezone.now())
    generation.sweep()
    row = LimitUsage.objects.get()
    assert (row.used, row.reserved) == (reserved, 0)


def test_over_the_rate_the_member_is_told_to_wait(bob, bob_conversation):
    Limit.objects.create(user=bob, kind=Limit.Kind.REQUESTS, period=Limit.Period.MINUTE, amount=2)
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=1)  # also over
    with pytest.raises(messaging.RefusedError) as refused:
        messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    assert refused.value.code == "budget_exceeded"  # the rate had room; the budget had none
    Limit.objects.filter(kind=Limit.Kind.TOKENS).delete()
    for _ in range(2):
        plan = messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
        Message.objects.filter(pk=plan.reply.pk).update(status=Message.Status.COMPLETE)
    with pytest.raises(messaging.RefusedError) as refused:
        messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    assert refused.value.code == "rate_limited"
    assert "at most 2 requests per minute" in refused.value.detail and "Try again in" in refused.value.detail


def test_out_of_budget_names_the_limit_and_when_it_resets(bob, bob_conversation, settings):
    settings.BUDGET_TIME_ZONE = "UTC"
    interns = Group.objects.create(name="Interns")
    bob.groups.add(interns)
    Limit.objects.create(group=interns, kind=Limit.Kind.COST, period=Limit.Period.DAY, amount=Decimal("0"))
    bob_conversation.model.input_price = Decimal(1)
    bob_conversation.model.save()
    with pytest.raises(messaging.RefusedError) as refused:
        messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    detail = refused.value.detail
    assert refused.value.code == "budget_exceeded"
    assert detail.startswith("Out of budget:") and "cost per day" in detail
    assert "the limit of the group Interns" in detail and "It resets on" in detail and "(UTC)" in detail


def test_a_group_limit_counts_each_member_apart(alice, bob, offline_model):
    team = Group.objects.create(name="Team")
    alice.groups.add(team)
    bob.groups.add(team)
    Limit.objects.create(group=team, kind=Limit.Kind.REQUESTS, period=Limit.Period.MINUTE, amount=1)
    budgets.admit(alice.pk, offline_model, {}, 10)
    budgets.admit(bob.pk, offline_model, {}, 10)  # bob's own window, not alice's
    with pytest.raises(budgets.LimitReached):
        budgets.admit(bob.pk, offline_model, {}, 10)
    assert LimitUsage.objects.count() == 2


def test_a_title_without_reservation_still_counts_against_the_budget(bob, bob_conversation):
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=100_000)
    record = UsageRecord.objects.create(
        user=bob, model=bob_conversation.model, model_name="m", source=UsageRecord.Source.TITLE
    )
    budgets.settle(record, 42, Decimal(0))
    assert LimitUsage.objects.get().used == 42


def test_admins_see_who_is_near_a_limit(admin_client, alice, bob, offline_model):
    limit = Limit.objects.create(
        group=None, user=bob, kind=Limit.Kind.REQUESTS, period=Limit.Period.DAY, amount=4
    )
    Limit.objects.create(user=alice, kind=Limit.Kind.REQUESTS, period=Limit.Period.DAY, amount=4)
    for _ in range(3):
        budgets.admit(bob.pk, offline_model, {}, 10)
    budgets.admit(alice.pk, offline_model, {}, 10)
    page = admin_client.get("/admin/conversations/limitusage/").content.decode()
    assert page.index(">bob<") < page.index(">alice<")  # fullest first
    assert "75.0" in page and "25.0" in page
    assert admin_client.get(f"/admin/conversations/limit/{limit.pk}/change/").status_code == 200


def test_members_cannot_open_the_limits_admin(client_bob):
    assert client_bob.get("/admin/conversations/limitusage/").status_code == 302
