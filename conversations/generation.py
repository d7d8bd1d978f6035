"""A reply being written. It runs on its own asyncio task, not the socket's: closing the tab does not
stop it (daphne ends a consumer 10 s after its client leaves).

Per delta: the text kept in memory, the next seq, one group send; no database, no cache.
On timers: a checkpoint to the database every 2 s while text arrives (kill -9 loses at most that), a
copy of every live reply to the cache every 250 ms (for other processes), lease renewal, the sweeper.
At the end: one transaction saves the reply and finishes its usage record; after reply.done, a new
conversation's first complete reply has its title written on another task (titles.py).

Over 400 lines on purpose: the live replies, their timers and the requests from other processes share
one in-memory registry, and read best together.
"""

import asyncio
import contextlib
import itertools
import logging
import signal
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from conversations import (
    budgets,
    context,
    context_budget,
    events,
    json_replies,
    retention,
    titles,
    tools,
    upstream,
    usage,
)
from conversations.messaging import ReplyPlan, lease
from conversations.models import Message, UsageRecord, text_of
from conversations.registry import endpoint_for

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 2.0
COPY_SECONDS = 0.25
REJOIN_EVERY_TICKS = 4 * 3600  # 1 h: joins again, harmless if still a member (some layers expire members)
PURGE_EVERY_TICKS = 4 * 600  # 10 min: conversations deleted past the restore window (retention.py)
STATE_TIMEOUT = 0.5
GENERATIONS_GROUP = "generations"  # every process listens here for stop and state requests
CACHE_PREFIX = "chatsite:live:"

# Stored in English and translated when shown (events.message_data): the sweeper has no member.
INTERRUPTED = gettext_noop("The server stopped while writing this reply.")
FAILED_ON_SERVER = gettext_noop("The reply failed on the server.")
TOOL_STEP_LIMIT = gettext_noop(
    "The model kept asking for tools; the reply stopped at the limit of tool steps."
)
# Rounds of tool calls one reply may run; the model asking once more ends the reply with an error.
MAX_TOOL_STEPS = 5
NOT_RUN = "Not run: the reply reached its limit of tool steps."
MAX_CALLS_PER_STEP = 16
TOO_MANY_CALLS = f"Not run: at most {MAX_CALLS_PER_STEP} tool calls are run at once."

FINAL_STATUS = {
    "stopped": Message.Status.CANCELLED,
    "shutdown": Message.Status.INTERRUPTED,
}


@dataclass(eq=False)
class LiveReply:
    plan: ReplyPlan
    group: str
    conversation: str
    task: asyncio.Task | None = None
    seq: int = 0
    # Sent text (what seq counts) and text read but not sent yet.
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    unsent_content: list[str] = field(default_factory=list)
    unsent_reasoning: list[str] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    status: str = Message.Status.PENDING
    stop_reason: str = ""
    copied_seq: int = -1
    next_checkpoint: float = 0.0
    checkpointing: bool = False
    # Tool steps (run_tools): the sent parts of finished steps, and tool calls or results not sent yet.
    earlier: list[dict[str, Any]] = field(default_factory=list)
    unsent_parts: list[dict[str, Any]] = field(default_factory=list)
    parts_sent: asyncio.Event = field(default_factory=asyncio.Event)
    prompt: list[dict[str, Any]] | None = None  # the first request's messages
    asked: bool = False  # whether a request went upstream at all
    # With n > 1, the other choices by index: read whole and saved at the end as versions of the reply.
    versions: dict[int, "Version"] = field(default_factory=dict)

    def parts(self) -> list[dict[str, Any]]:
        # What the context budget left out (context_budget.note) stays above the reply's text.
        parts = [part for part in self.plan.reply.parts if part.get("type") == "context_note"]
        parts += self.earlier
        if self.reasoning:
            parts.append({"type": "reasoning", "text": "".join(self.reasoning)})
        if self.content or not self.earlier:
            parts.append({"type": "text", "text": "".join(self.content)})
        return parts

    def end_step(self, tool_parts: list[dict[str, Any]]) -> None:
        """Tool calls or results were sent: the step's text so far and they become earlier parts, and
        text that follows starts a part of its own."""
        if self.reasoning:
            self.earlier.append({"type": "reasoning", "text": "".join(self.reasoning)})
        if "".join(self.content):
            self.earlier.append({"type": "text", "text": "".join(self.content)})
        self.earlier += tool_parts
        self.content, self.reasoning = [], []

    def state(self) -> dict[str, Any]:
        return {"seq": self.seq, "parts": self.parts(), "status": self.status}


@dataclass
class Version:
    """One more choice of an n > 1 request. Only the first choice streams; the others become sibling
    replies ("< 2/3 >") when the request ends, so the chat shows one answer at a time."""

    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str = ""

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            self.content.append(delta["content"])
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            self.reasoning.append(reasoning)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def parts(self) -> list[dict[str, Any]]:
        parts = [{"type": "reasoning", "text": "".join(self.reasoning)}] if self.reasoning else []
        return [*parts, {"type": "text", "text": "".join(self.content)}]


# Replies being written by this process, by message id.
_live: dict[int, LiveReply] = {}
# Tasks that must not be garbage-collected mid-flight (asyncio keeps only weak references).
_background: set[asyncio.Task] = set()
_maintenance: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = (
    weakref.WeakKeyDictionary()
)


def _keep(task: asyncio.Task) -> asyncio.Task:
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def claim(plan: ReplyPlan) -> LiveReply:
    """Take the reply as this process's before it is announced and launched: announcing can take a
    while under load (a busy Redis), and a reply nobody has claimed by the end of its lease is the
    sweeper's. A Stop that comes meanwhile is kept and applied at launch."""
    live = _live.get(plan.reply.pk)
    if live is None:
        live = _live[plan.reply.pk] = LiveReply(
            plan=plan,
            group=events.conversation_group(plan.conversation_hex),
            conversation=str(uuid.UUID(plan.conversation_hex)),
        )
    return live


def launch(plan: ReplyPlan) -> asyncio.Task:
    """Start writing a reply on its own task; return the task (tests await it)."""
    live = claim(plan)  # a Stop that came before is seen by _run as it begins
    live.task = _keep(asyncio.get_running_loop().create_task(_run(live), name=f"reply-{plan.reply.pk}"))
    ensure_maintenance()
    return live.task


async def _run(live: LiveReply) -> None:
    plan = live.plan
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    started = loop.time()
    live.next_checkpoint = started + CHECKPOINT_SECONDS
    first_token_at: float | None = None
    reported: dict[str, Any] | None = None
    finish_reason = ""
    error: upstream.UpstreamError | None = None
    status = Message.Status.COMPLETE
    message_id = plan.reply.pk
    publisher = _keep(loop.create_task(_publish(live, layer)))
    try:
        if live.stop_reason:  # stopped while it was being announced: nothing is asked upstream
            raise asyncio.CancelledError
        live.asked = True
        endpoint = endpoint_for(plan.model.provider)
        # One upstream request per step; a step that ends in tool calls runs them and asks again.
        for step in itertools.count(1):
            request_id = str(plan.record.request_id)
            calls: dict[int, dict[str, str]] = {}
            async for chunk in upstream.stream_chat(endpoint, plan.payload, request_id=request_id):
                if chunk.get("usage"):
                    reported = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    if choice.get("index", 0) != 0:
                        live.versions.setdefault(choice["index"], Version()).add(choice)
                        continue
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                    if delta.get("tool_calls"):
                        tools.assemble(calls, delta["tool_calls"])
                    if content or reasoning or delta.get("tool_calls"):
                        if first_token_at is None:
                            first_token_at = loop.time()
                            live.status = Message.Status.STREAMING
                        if content:
                            live.unsent_content.append(content)
                        if reasoning:
                            live.unsent_reasoning.append(reasoning)
                        live.wakeup.set()
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                if loop.time() >= live.next_checkpoint:
                    _checkpoint_soon(live, loop.time())
            # Calls cut off by the length limit may have half their arguments: not run. The reply
            # ends there, its text kept, and says it reached the limit (finish_reason).
            if not calls or finish_reason == "length":
                break
            await run_tools(
                live,
                publisher,
                [calls[index] for index in sorted(calls)],
                step,
                reported,
                _timings(started, first_token_at, loop.time()),
            )
            started, first_token_at, reported, finish_reason = loop.time(), None, None, ""
            # With n > 1 the other choices are versions of the final answer: those of a step that
            # ended in tool calls answered without the results, and must not run into the next step's.
            live.versions.clear()
    except asyncio.CancelledError:
        asyncio.current_task().uncancel()
        status = FINAL_STATUS.get(live.stop_reason, Message.Status.INTERRUPTED)
    except upstream.UpstreamError as upstream_error:
        status, error = Message.Status.ERROR, upstream_error
    except Exception:
        logger.exception("reply %s failed", message_id)
        status = Message.Status.ERROR
        error = upstream.UpstreamError("internal", None, FAILED_ON_SERVER)
    ended = loop.time()
    live.closed = True  # from here on Stop and shutdown leave the reply alone: it is being saved
    live.wakeup.set()
    try:
        await _finish(
            live,
            layer,
            status,
            finish_reason,
            error,
            reported,
            timings={
                "time_to_first_token_ms": round((first_token_at - started) * 1000)
                if first_token_at
                else None,
                "duration_ms": round((ended - started) * 1000),
            },
            publisher=publisher,
        )
    finally:
        # Also after a failed save: the lease then lapses and the sweeper takes the reply over.
        _live.pop(message_id, None)


async def _finish(
    live: LiveReply,
    layer: Any,
    status: str,
    finish_reason: str,
    error: upstream.UpstreamError | None,
    reported: dict[str, Any] | None,
    timings: dict[str, Any],
    publisher: asyncio.Task,
) -> None:
    """Send what was read, save the reply with its usage in one transaction, then announce the end."""
    plan = live.plan
    try:
        await asyncio.shield(publisher)  # what was read is sent and kept, even after Stop
    except Exception:
        logger.exception("reply %s: the last deltas could not be sent", plan.reply.pk)
        live.content += live.unsent_content
        live.reasoning += live.unsent_reasoning
        if live.unsent_parts:
            live.end_step(live.unsent_parts)
    if reported:
        tokens = usage.Tokens.from_upstream(reported)
    elif not live.asked or (
        error is not None and (error.status or 0) >= 400 and not live.content and not live.reasoning
    ):
        # Stopped before it was sent, or refused with an error status before any output: no tokens.
        tokens = usage.Tokens()
    else:
        tokens = usage.Tokens.estimate(
            plan.model, plan.prompt_chars, sum(map(len, live.content)) + sum(map(len, live.reasoning))
        )
    save = _keep(
        asyncio.get_running_loop().create_task(
            database_sync_to_async(_save_final)(live, status, finish_reason, error, tokens, timings)
        )
    )
    await asyncio.shield(save)
    done = events.envelope(
        "reply.done",
        conversation=live.conversation,
        message=plan.reply.pk,
        seq=live.seq,
        data=events.message_data(plan.reply, plan.siblings, live.seq),
        usage=tokens.as_dict(),
    )
    await layer.group_send(live.group, events.frame(done))
    titles.after_reply(plan, status, "".join(live.content))  # on its own task: nothing here waits
    logger.info("reply %s %s request %s", plan.reply.pk, status, plan.record.request_id)


async def _publish(live: LiveReply, layer: Any) -> None:
    """Send what the reader has collected as one delta, then wait for more.

    The reader only appends and wakes this task. When the process keeps up, each upstream piece
    leaves as its own delta one loop turn later; when it is busy (many streams, a slow channel
    layer), the pieces that piled up leave together, so the cost per delta falls as load rises
    instead of queueing without bound.
    """
    message_id = live.plan.reply.pk
    while True:
        await live.wakeup.wait()
        live.wakeup.clear()
        if live.unsent_content or live.unsent_reasoning or live.unsent_parts:
            live.seq += 1
            event = {
                "v": events.PROTOCOL_VERSION,
                "type": "reply.delta",
                "conversation": live.conversation,
                "message": message_id,
                "seq": live.seq,
            }
            if live.unsent_content:
                event["content"] = "".join(live.unsent_content)
                live.content.append(event["content"])
                live.unsent_content.clear()
            if live.unsent_reasoning:
                event["reasoning"] = "".join(live.unsent_reasoning)
                live.reasoning.append(event["reasoning"])
                live.unsent_reasoning.clear()
            if live.unsent_parts:  # tool calls or results: after the text, and they end its step
                event["parts"] = live.unsent_parts
                live.end_step(live.unsent_parts)
                live.unsent_parts = []
                live.parts_sent.set()
            await layer.group_send(live.group, events.frame(event))
        if live.closed and not (live.unsent_content or live.unsent_reasoning or live.unsent_parts):
            return


def _save_final(
    live: LiveReply,
    status: str,
    finish_reason: str,
    error: upstream.UpstreamError | None,
    tokens: usage.Tokens,
    timings: dict[str, Any],
) -> None:
    reply = live.plan.reply
    reply.set_parts(live.parts())
    if status == Message.Status.COMPLETE:
        # Asked for as JSON: the finished reply is checked once and the verdict kept as a part.
        reply.parts = json_replies.with_check(reply.parts, live.plan.payload.get("response_format"))
    reply.status = status
    reply.finish_reason = finish_reason
    reply.stream_seq = live.seq
    reply.lease_expires_at = None
    if error is not None:
        reply.error_code, reply.error_detail = error.code, error.user_message()
    elif status == Message.Status.INTERRUPTED:
        reply.error_code, reply.error_detail = "interrupted", INTERRUPTED
    usage_status = {
        Message.Status.COMPLETE: UsageRecord.Status.COMPLETE,
        Message.Status.CANCELLED: UsageRecord.Status.CANCELLED,
        Message.Status.INTERRUPTED: UsageRecord.Status.INTERRUPTED,
    }.get(status, UsageRecord.Status.ERROR)
    with transaction.atomic():
        reply.save(
            update_fields=[
                "parts",
                "text",
                "status",
                "finish_reason",
                "stream_seq",
                "lease_expires_at",
                "error_code",
                "error_detail",
            ]
        )
        usage.finish(
            live.plan.record,
            status=usage_status,
            tokens=tokens,
            error_code=error.code if error else "",
            **timings,
        )
        if not tokens.estimated:
            context_budget.calibrate(live.plan.model, live.plan.payload, tokens.prompt)
        _save_versions(live, reply)


def _save_versions(live: LiveReply, reply: Message) -> None:
    """The other choices of an n > 1 request, as siblings of the reply in the order of their index;
    the reply stays the selected one. Choices that wrote nothing are left out."""
    for index in sorted(live.versions):
        version = live.versions[index]
        if not "".join(version.content) and not version.reasoning:
            continue
        sibling = Message(
            conversation_id=reply.conversation_id,
            parent_id=reply.parent_id,
            role=Message.Role.ASSISTANT,
            status=reply.status,
            finish_reason=version.finish_reason or reply.finish_reason,
            error_code=reply.error_code,
            error_detail=reply.error_detail,
            model_id=reply.model_id,
        )
        parts = version.parts()
        if reply.status == Message.Status.COMPLETE:
            parts = json_replies.with_check(parts, live.plan.payload.get("response_format"))
        sibling.set_parts(parts)
        sibling.save()
        live.plan.siblings.append(sibling.pk)


def _checkpoint_soon(live: LiveReply, now: float) -> None:
    """Save the text so far in the background; at most one checkpoint of a reply in flight."""
    live.next_checkpoint = now + CHECKPOINT_SECONDS
    if live.checkpointing:
        return
    live.checkpointing = True

    async def checkpoint(parts: list[dict[str, Any]], seq: int) -> None:
        try:
            await database_sync_to_async(_save_checkpoint)(live.plan.reply.pk, parts, seq)
        except Exception:
            logger.exception("checkpoint of reply %s failed", live.plan.reply.pk)
        finally:
            live.checkpointing = False

    _keep(asyncio.get_running_loop().create_task(checkpoint(live.parts(), live.seq)))


def _save_checkpoint(message_id: int, parts: list[dict[str, Any]], seq: int) -> None:
    # Only while still live: a checkpoint landing after the final save must not undo it.
    Message.objects.filter(pk=message_id, status__in=Message.LIVE_STATUSES).update(
        status=Message.Status.STREAMING,
        parts=parts,
        text=text_of(parts),
        stream_seq=seq,
        lease_expires_at=timezone.now() + lease(),
    )


# --- Tool steps ------------------------------------------------------------------------------------


async def run_tools(
    live: LiveReply,
    publisher: asyncio.Task,
    calls: list[dict[str, str]],
    step: int,
    reported: dict[str, Any] | None,
    timings: dict[str, Any],
) -> None:
    """The model's reply ended in tool calls: save them, run them side by side, save their results, and
    make the next request ready (plan.payload, plan.record: one usage record per request, of source
    tool_step after the first). The steps accumulate in the one reply message (context.tool_turns
    spreads them out again for the upstream). A call's error is its result; Stop cancels the calls."""
    plan = live.plan
    call_parts = [
        {
            "type": "tool_call",
            "id": call["id"] or f"call_{step}_{n}",
            "name": call["name"],
            "arguments": call["arguments"],
        }
        for n, call in enumerate(calls)
    ]
    if step > MAX_TOOL_STEPS:
        await _send_parts(live, publisher, call_parts + _results(call_parts, [NOT_RUN] * len(call_parts)))
        raise upstream.UpstreamError("tool_step_limit", None, TOOL_STEP_LIMIT)
    tokens = (
        usage.Tokens.from_upstream(reported)
        if reported
        else usage.Tokens.estimate(plan.model, plan.prompt_chars, sum(len(c["arguments"]) for c in calls))
    )
    await _send_parts(live, publisher, call_parts)
    await _landed(database_sync_to_async(_save_step)(live, live.parts(), live.seq, tokens, timings))
    enabled = {tool["function"]["name"] for tool in plan.payload.get("tools") or ()}
    runs = [tools.run(call, enabled) for call in call_parts[:MAX_CALLS_PER_STEP]]
    outputs = [*await asyncio.gather(*runs), *[TOO_MANY_CALLS] * (len(call_parts) - len(runs))]
    await _send_parts(live, publisher, _results(call_parts, outputs))
    if live.prompt is None:
        live.prompt = plan.payload["messages"]
    payload = {
        **plan.payload,
        "messages": live.prompt + context.tool_turns(live.parts(), with_reasoning=True),
    }
    try:  # tool results can be long: the next request must fit the window as the first one did
        fitted = context_budget.fit(payload, plan.model)
    except context_budget.ContextTooLongError as error:
        # Before the next record is started: a request never sent has no usage record.
        raise upstream.UpstreamError(error.code, None, str(error)) from None
    plan.payload, plan.prompt_chars = payload, fitted.prompt_chars
    await _landed(database_sync_to_async(_save_step)(live, live.parts(), live.seq, None, None))


def _results(call_parts: list[dict[str, Any]], outputs: list[str]) -> list[dict[str, Any]]:
    return [
        {"type": "tool_result", "tool_call_id": call["id"], "name": call["name"], "content": output}
        for call, output in zip(call_parts, outputs, strict=True)
    ]


async def _send_parts(live: LiveReply, publisher: asyncio.Task, parts: list[dict[str, Any]]) -> None:
    """Hand tool parts to the publisher and wait until it has taken them: the next step's text must
    get a later seq, and a checkpoint must hold only what seq counts."""
    live.unsent_parts += parts
    live.wakeup.set()
    while live.unsent_parts:
        if publisher.done():
            raise RuntimeError("the reply's deltas can no longer be sent")
        live.parts_sent.clear()
        taken = asyncio.ensure_future(live.parts_sent.wait())
        try:
            await asyncio.wait({taken, publisher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            taken.cancel()


async def _landed(write: Any) -> None:
    """Await a database write to its end even if Stop comes meanwhile: the usage record a step
    starts must be the one the final save finishes."""
    task = _keep(asyncio.ensure_future(write))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _save_step(
    live: LiveReply,
    parts: list[dict[str, Any]],
    seq: int,
    tokens: usage.Tokens | None,
    timings: dict[str, Any] | None,
) -> None:
    """With tokens: the step's request is done, its record finished. Without: the results are in, and
    the next request (plan.payload) is admitted against the member's budgets and its record started;
    over a budget, the reply ends there with the refusal. Either way the parts so far are checkpointed."""
    plan = live.plan
    refused = None
    with transaction.atomic():
        _save_checkpoint(plan.reply.pk, parts, seq)
        if tokens is not None:
            usage.finish(plan.record, status=UsageRecord.Status.COMPLETE, tokens=tokens, **(timings or {}))
            return
        try:
            with transaction.atomic():  # a savepoint: a refusal leaves no reservation behind
                reservations = budgets.admit(
                    plan.user_id, plan.model, plan.payload, plan.prompt_chars, rates=False
                )
        except budgets.LimitReached as limit:
            refused = limit
        else:
            plan.record = usage.start(
                user_id=plan.user_id,
                model=plan.model,
                source=UsageRecord.Source.TOOL_STEP,
                conversation_id=plan.conversation_id,
                message=plan.reply,
                reservations=reservations,
            )
    if refused is not None:  # after the checkpoint's commit: the steps so far are kept
        raise upstream.UpstreamError(refused.code, None, refused.detail)


def _timings(started: float, first_token_at: float | None, ended: float) -> dict[str, Any]:
    return {
        "time_to_first_token_ms": round((first_token_at - started) * 1000) if first_token_at else None,
        "duration_ms": round((ended - started) * 1000),
    }


async def stop(message_id: int) -> None:
    """Stop a reply wherever it is being written; its text is kept."""
    live = _live.get(message_id)
    if live is not None:
        _cancel(live, "stopped")
        return
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        await layer.group_send(GENERATIONS_GROUP, {"type": "generation.stop", "message": message_id})


def _cancel(live: LiveReply, reason: str) -> None:
    # Once the upstream is done (closed) the reply is being saved: a cancel then would lose it.
    if not live.stop_reason and not live.closed:
        live.stop_reason = reason
        if live.task is not None:  # else claimed, not launched yet: launch() cancels it
            live.task.cancel()


async def live_state(message_id: int) -> dict[str, Any] | None:
    """The text and seq of a reply being written: from this process, another one, or the cache copy."""
    live = _live.get(message_id)
    if live is not None:
        return live.state()
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return None  # one process: nobody else is writing it
    reply_to = await layer.new_channel()
    request = {"type": "generation.state", "message": message_id, "reply_to": reply_to}
    await layer.group_send(GENERATIONS_GROUP, request)
    try:
        async with asyncio.timeout(STATE_TIMEOUT):
            answer = await layer.receive(reply_to)
        return answer["state"]
    except TimeoutError:
        return await cache.aget(f"{CACHE_PREFIX}{message_id}")


# --- The process's maintenance: copies, leases, the sweeper, requests from other processes --------


def ensure_maintenance() -> None:
    loop = asyncio.get_running_loop()
    task = _maintenance.get(loop)
    if task is None or task.done():
        _maintenance[loop] = _keep(loop.create_task(_maintain(), name="reply-maintenance"))
        _handle_sigterm(loop)


async def _maintain() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(GENERATIONS_GROUP, channel)
    listener = _keep(asyncio.get_running_loop().create_task(_listen(layer, channel)))
    # Leases are renewed three times and swept twice per lease period (30 s by default).
    renew_every = max(1, round(settings.REPLY_LEASE_SECONDS / 3 / COPY_SECONDS))
    sweep_every = max(1, round(settings.REPLY_LEASE_SECONDS / 2 / COPY_SECONDS))
    tick = 0
    try:
        while True:
            await asyncio.sleep(COPY_SECONDS)
            tick += 1
            try:
                await _copy_live_replies()
                if tick % renew_every == 0 and _live:
                    await database_sync_to_async(_renew_leases)(list(_live))
                if tick % sweep_every == 0:
                    for group, done in await database_sync_to_async(sweep)():
                        await events.publish(group, done)
                if tick % REJOIN_EVERY_TICKS == 0:
                    await layer.group_add(GENERATIONS_GROUP, channel)
                if tick % PURGE_EVERY_TICKS == 0:
                    await database_sync_to_async(retention.purge_deleted_conversations)()
                    await database_sync_to_async(retention.purge_ended_sessions)()
            except Exception:
                logger.exception("reply maintenance failed; trying again")
    finally:
        listener.cancel()
        await layer.group_discard(GENERATIONS_GROUP, channel)


async def _copy_live_replies() -> None:
    """One cache write for all replies that changed since the last copy (at most every 250 ms), for
    other processes; with the in-memory layer there are none."""
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        return
    changed = {
        f"{CACHE_PREFIX}{message_id}": live.state()
        for message_id, live in _live.items()
        if live.seq != live.copied_seq
    }
    if not changed:
        return
    copied = {message_id: live.seq for message_id, live in _live.items()}
    await cache.aset_many(changed, timeout=60)
    for message_id, seq in copied.items():
        if message_id in _live:
            _live[message_id].copied_seq = seq


async def _listen(layer: Any, channel: str) -> None:
    while True:
        try:
            request = await layer.receive(channel)
            live = _live.get(request.get("message"))
            if live is None:
                continue
            if request["type"] == "generation.stop":
                _cancel(live, "stopped")
            elif request["type"] == "generation.state":
                await layer.send(request["reply_to"], {"type": "generation.state", "state": live.state()})
        except Exception:
            # Being cancelled can surface as another error from inside the layer: then stop.
            if asyncio.current_task().cancelling():
                raise
            # A full reply channel or a Redis hiccup must not stop this process hearing Stop.
            logger.exception("a request from another process failed; listening on")
            await asyncio.sleep(COPY_SECONDS)


def _renew_leases(message_ids: list[int]) -> None:
    Message.objects.filter(pk__in=message_ids, status__in=Message.LIVE_STATUSES).update(
        lease_expires_at=timezone.now() + lease()
    )


def sweep() -> list[tuple[str, dict[str, Any]]]:
    """Mark replies whose process died (lease lapsed) interrupted, keeping their checkpointed text;
    return the reply.done events that tell open tabs."""
    now = timezone.now()
    lapsed = list(
        Message.objects.filter(status__in=Message.LIVE_STATUSES, lease_expires_at__lt=now)
        .exclude(pk__in=list(_live))  # written here and alive, only late renewing its lease
        .select_related("conversation")
    )
    if not lapsed:
        return []
    with transaction.atomic():
        Message.objects.filter(pk__in=[m.pk for m in lapsed], status__in=Message.LIVE_STATUSES).update(
            status=Message.Status.INTERRUPTED,
            error_code="interrupted",
            error_detail=INTERRUPTED,
            lease_expires_at=None,
        )
        unfinished = list(UsageRecord.objects.filter(message__in=lapsed, status=UsageRecord.Status.STARTED))
        UsageRecord.objects.filter(
            pk__in=[r.pk for r in unfinished], status=UsageRecord.Status.STARTED
        ).update(status=UsageRecord.Status.INTERRUPTED, estimated=True, finished_at=now)
        budgets.settle_lapsed(unfinished)
    logger.warning("marked %s lapsed replies interrupted", len(lapsed))
    announcements = []
    for message in lapsed:
        message.status, message.error_code, message.error_detail = (
            Message.Status.INTERRUPTED,
            "interrupted",
            INTERRUPTED,
        )
        conversation = message.conversation
        siblings = list(
            Message.objects.filter(conversation=conversation, parent_id=message.parent_id).values_list(
                "pk", flat=True
            )
        )
        done = events.envelope(
            "reply.done",
            conversation=str(conversation.public_id),
            message=message.pk,
            seq=message.stream_seq,
            data=events.message_data(message, siblings, message.stream_seq),
        )
        announcements.append((events.conversation_group(conversation.public_id.hex), done))
    return announcements


async def shutdown() -> None:
    """Save every live reply as interrupted (text kept) before the process exits; let titles being
    written finish, so that their usage records are closed too."""
    tasks = [live.task for live in list(_live.values()) if live.task is not None]
    for live in list(_live.values()):
        _cancel(live, "shutdown")
    tasks += titles.pending()
    if tasks:
        await asyncio.wait(tasks, timeout=10)


def _handle_sigterm(loop: asyncio.AbstractEventLoop) -> None:
    """daphne has no lifespan hook: on SIGTERM, save live replies, then let the server stop as before."""
    previous = signal.getsignal(signal.SIGTERM)

    async def on_sigterm() -> None:
        started = time.monotonic()
        await shutdown()
        logger.info("saved live replies in %.0f ms before exit", (time.monotonic() - started) * 1000)
        loop.remove_signal_handler(signal.SIGTERM)
        if callable(previous):
            previous(signal.SIGTERM, None)
        else:
            signal.raise_signal(signal.SIGTERM)

    # Outside the main thread the host process handles signals itself.
    with contextlib.suppress(RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, lambda: _keep(loop.create_task(on_sigterm())))
