"""The context budget (conversations/context_budget.py): what is left out when a conversation outgrows
the model's context window, the refusal when even the new message does not fit, and the ratio of
tokens to characters learned from what the offline upstream reported."""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.core.cache import cache

from conversations import catalog, context_budget, generation, messaging, tools
from conversations.models import ChatModel, Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket

PROSE = "Plain words for the budget, counted by characters and nothing else. "  # 68 characters


def text(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


def model(window: int, ratio: float = 0.25) -> ChatModel:
    return ChatModel(upstream_id="offline-chat", context_window=window, tokens_per_char=ratio)


def user(chars: int = 400) -> dict:
    return {"role": "user", "content": text(chars)}


def assistant(chars: int = 400) -> dict:
    return {"role": "assistant", "content": text(chars)}


# At 0.25 tokens per character a message of 400 characters costs 100 + 4 tokens; a system prompt of 40, 14.


def test_a_request_that_fits_is_sent_whole():
    messages = [{"role": "system", "content": text(40)}, user(), assistant(), user()]
    payload = {"messages": list(messages)}
    fitted = context_budget.fit(payload, model(8192))
    assert payload["messages"] == messages
    assert fitted.omitted == 0 and fitted.estimate == 14 + 3 * 104
    assert fitted.prompt_chars == 40 + 3 * 400


def test_it_keeps_the_system_prompt_and_the_newest_turn_and_leaves_out_the_oldest_turns_first():
    system = {"role": "system", "content": text(40)}
    turns = [[user(), assistant()] for _ in range(5)]
    newest = user()
    payload = {"messages": [system, *[m for turn in turns for m in turn], newest], "max_tokens": 100}
    # Room: (800 - 100 for the answer) / 1.05 = 666 tokens. The system prompt and the newest turn take
    # 118, each earlier turn 208: two fit (534), a third would not (742).
    fitted = context_budget.fit(payload, model(800))
    assert payload["messages"] == [system, *turns[3], *turns[4], newest]
    assert fitted.omitted == 6 and fitted.estimate == 534


def test_the_room_for_the_answer_comes_from_max_tokens():
    def omitted(**parameters) -> int:
        payload = {"messages": [m for _ in range(5) for m in (user(), assistant())] + [user()], **parameters}
        return context_budget.fit(payload, model(1200)).omitted

    # 1,144 tokens in all. Without max_tokens a quarter of the window (at most 1,024 tokens) is kept for
    # the answer: (1200 - 300) / 1.05 = 857 tokens of room.
    assert omitted() == 4
    assert omitted(max_tokens=50) == 2
    assert omitted(max_completion_tokens=500) == 6


def test_a_tool_call_is_left_out_together_with_its_results():
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ],
    }
    results = [{"role": "tool", "tool_call_id": "call_1", "content": text(40)} for _ in range(2)]
    first_turn = [user(40), call, *results, assistant(40)]
    second_turn = [user(), assistant()]
    newest = user()
    payload = {"messages": [*first_turn, *second_turn, newest], "max_tokens": 100}
    # The first turn costs 83 tokens, the other two 312 of the (500 - 100) / 1.05 = 380 there is room
    # for: the first turn's tool results alone (28) would fit, but they never go without their call.
    fitted = context_budget.fit(payload, model(500))
    assert payload["messages"] == [*second_turn, newest]
    assert fitted.omitted == len(first_turn)


def test_a_newest_turn_that_cannot_fit_is_refused():
    payload = {"messages": [{"role": "system", "content": text(40)}, user(), assistant(), user(4000)]}
    with pytest.raises(context_budget.ContextTooLongError) as refused:
        context_budget.fit(payload, model(1000))
    assert refused.value.code == "context_too_long"
    assert "about 1018 tokens, 714 fit" in str(refused.value)  # (1000 - 250 for the answer) / 1.05


# --- With the database and the offline upstream ----------------------------------------------------


def history(conversation, turns: int, chars: int) -> None:
    """A finished path of `turns` user messages and replies of `chars` characters each."""
    parent = None
    for index in range(2 * turns):
        role = Message.Role.USER if index % 2 == 0 else Message.Role.ASSISTANT
        message = Message(conversation=conversation, parent=parent, role=role)
        message.set_parts([{"type": "text", "text": f"{index}: {text(chars)}"}])
        message.save()
        parent = message
    conversation.current_leaf = parent
    conversation.save()


def small_window(chat_model: ChatModel, window: int) -> None:
    chat_model.context_window = window
    chat_model.tokens_per_char = 0.25  # as calibrated against the offline upstream
    chat_model.save()  # through the signal, so that the catalog reloads it


@pytest.fixture
def bob_cookie(bob):
    return session_cookie(bob)


@pytest.mark.django_db(transaction=True)
def test_calibration_moves_the_ratio_towards_the_upstreams_count(bob, bob_conversation, offline_model):
    """The offline upstream counts ceil(characters / 4) + 4 per message: 0.25 tokens per character."""
    version = cache.get(catalog.VERSION_KEY)
    catalog.usable_model(bob, offline_model.pk)  # the copy shared by this process's requests
    ratios = []
    for _ in range(5):
        plan = messaging.do_send_message(bob, str(bob_conversation.public_id), text(600))

        async def run(plan=plan) -> None:
            await generation.launch(plan)

        async_to_sync(run)()
        ratios.append(ChatModel.objects.get(pk=offline_model.pk).tokens_per_char)
    assert ratios == sorted(ratios, reverse=True) and 0.25 < ratios[-1] < 0.26
    # The reply's estimate now matches what the upstream counted for it.
    record = UsageRecord.objects.get(message=plan.reply)
    assert record.estimated is False
    estimate = context_budget.fit(plan.payload, plan.model).estimate
    assert abs(estimate - record.prompt_tokens) < 0.05 * record.prompt_tokens
    # The process's own copy followed; no other process was made to reload its catalog for it.
    assert catalog.usable_model(bob, offline_model.pk).tokens_per_char == pytest.approx(ratios[-1])
    assert cache.get(catalog.VERSION_KEY) == version


@pytest.mark.django_db(transaction=True)
async def test_a_long_conversation_reaches_the_upstream_cut_to_fit_with_a_marker(
    bob, bob_cookie, bob_conversation, offline_model, offline_upstream
):
    await database_sync_to_async(small_window)(offline_model, 1000)
    bob_conversation.system_prompt = "Answer briefly. " * 5
    await database_sync_to_async(history)(bob_conversation, 20, 300)
    socket = Socket(bob_cookie)
    assert await socket.open()
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(type="send", conversation=conversation, text="And the last question?")
    await socket.until("message.created")
    created = await socket.until("message.created")
    done = await socket.until("reply.done")
    await socket.close()

    note = created["data"]["parts"][0]
    assert note["type"] == "context_note" and note["omitted_messages"] > 0
    assert done["data"]["parts"][0] == note and done["data"]["status"] == "complete"
    saved = await database_sync_to_async(Message.objects.get)(pk=created["message"])
    assert saved.parts[0] == note
    record = await database_sync_to_async(UsageRecord.objects.get)(message_id=saved.pk)
    sent = offline_upstream.request(str(record.request_id))
    messages = sent["body"]["messages"]
    assert len(messages) == 1 + 41 - note["omitted_messages"]
    assert messages[0] == {"role": "system", "content": bob_conversation.system_prompt}
    assert messages[1]["role"] == "user" and messages[-1]["content"] == "And the last question?"
    # What the upstream counted, with the room kept for the answer, is within the window.
    reserved = context_budget.answer_tokens(sent["body"], offline_model)
    assert sent["usage"]["prompt_tokens"] + reserved <= 1000
    assert sent["usage"]["prompt_tokens"] + reserved > 800  # and not much was left out needlessly


@pytest.mark.django_db(transaction=True)
async def test_a_message_too_long_for_the_window_is_refused_before_any_upstream_request(
    bob, bob_cookie, bob_conversation, offline_model, offline_upstream
):
    await database_sync_to_async(small_window)(offline_model, 400)
    socket = Socket(bob_cookie)
    assert await socket.open()
    before = len(offline_upstream.requests())
    await socket.send(type="send", conversation=str(bob_conversation.public_id), text=text(3000), ref="c1")
    error = await socket.until("error")
    await socket.close()
    assert error["code"] == "context_too_long" and error["ref"] == "c1"
    assert "context window" in error["detail"]
    assert len(offline_upstream.requests()) == before
    assert not await database_sync_to_async(Message.objects.filter(conversation=bob_conversation).exists)()
    assert not await database_sync_to_async(UsageRecord.objects.exists)()


def test_the_note_is_no_content_of_an_imported_conversation():
    from conversations.transfer_formats import _chatsite_parts

    note = context_budget.note(3)
    assert json.loads(json.dumps(note)) == {"type": "context_note", "omitted_messages": 3}
    assert _chatsite_parts([note, {"type": "text", "text": "Hi"}]) == [{"type": "text", "text": "Hi"}]


@pytest.mark.django_db(transaction=True)
def test_a_tool_result_too_long_for_the_window_ends_the_reply_before_the_next_request(
    bob, bob_conversation, offline_model, offline_upstream, monkeypatch
):
    small_window(offline_model, 2000)
    bob_conversation.tools = ["calculator"]
    bob_conversation.save()

    async def huge_result(call, enabled) -> str:
        return "many digits " * 2000  # about 6,000 tokens: the next request cannot fit 2,000

    monkeypatch.setattr(tools, "run", huge_result)
    offline_upstream.clear()
    directive = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2**10"}}]}
    plan = messaging.do_send_message(
        bob, str(bob_conversation.public_id), "!offline " + json.dumps(directive)
    )

    async def run() -> None:
        await generation.launch(plan)

    async_to_sync(run)()
    reply = Message.objects.get(pk=plan.reply.pk)
    assert (reply.status, reply.error_code) == (Message.Status.ERROR, "context_too_long")
    assert [part["type"] for part in reply.parts] == ["tool_call", "tool_result"]  # kept, visible
    assert len(offline_upstream.requests()) == 1  # the step that could not fit was never sent
    assert UsageRecord.objects.filter(message=reply).count() == 1  # nor has it a usage record
