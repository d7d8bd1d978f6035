"""A conversation's title, written by its model after the first reply.

A new conversation starts with the first line of its first message as a provisional title
(messaging.do_send_message). Once that conversation's first reply has been saved complete, the same
model is asked for a short title on a task of its own: the reply, its reply.done and the next send
never wait for it. The request is one usage record of source "title". The title is saved only if the
member has not renamed the conversation meanwhile, then announced to the member's tabs. A failure is
logged and recorded on the usage record, never shown: the provisional title simply stays.
"""

import asyncio
import logging
import re
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from conversations import events, parameters, upstream, usage
from conversations.messaging import ReplyPlan
from conversations.models import Conversation, Message, UsageRecord
from conversations.registry import endpoint_for

logger = logging.getLogger(__name__)

# The offline upstream recognises a title request by this opening (conversations/offline_upstream.py).
INSTRUCTION = (
    "Write a short title for the conversation above: at most six words, in the language the user "
    "wrote in, no quotes, no final punctuation. Reply with the title only."
)
EXCERPT_CHARS = 2000  # of the first message and of the reply each: enough to tell what it is about
MAX_TOKENS = 40
MAX_TITLE_CHARS = 200  # Conversation.title's max_length
_THINKING = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_LABEL = re.compile("^(title|\u6807\u9898)\\s*[:\uff1a]\\s*", re.IGNORECASE)  # "Title:", also in Chinese
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u300a\u300b\u300c\u300d\u300e\u300f"  # straight, curly, «», 《》「」『』

# Title tasks that must not be garbage-collected mid-flight (asyncio keeps only weak references).
_tasks: set[asyncio.Task] = set()


def after_reply(plan: ReplyPlan, status: str, reply_text: str) -> asyncio.Task | None:
    """Start writing a title if this reply is the complete first one of a conversation that still
    has its provisional title; return the task (tests await it), or None."""
    if not plan.provisional_title or status != Message.Status.COMPLETE or not reply_text.strip():
        return None
    task = asyncio.get_running_loop().create_task(
        write_title(plan, reply_text), name=f"title-{plan.conversation_id}"
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def pending() -> list[asyncio.Task]:
    """The title tasks still running in this process (tests wait for them)."""
    return [task for task in _tasks if not task.done()]


def build_request(plan: ReplyPlan, reply_text: str) -> dict[str, Any]:
    """The first message and the reply, then the instruction: the model answers with a title."""
    prompt = next((m for m in reversed(plan.payload["messages"]) if m.get("role") == Message.Role.USER), {})
    content = prompt.get("content")
    if isinstance(content, list):  # text and image parts: the text is what a title can use
        content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    payload: dict[str, Any] = {
        "model": plan.model.upstream_id,
        "messages": [
            {"role": "user", "content": str(content or "")[:EXCERPT_CHARS]},
            {"role": "assistant", "content": reply_text[:EXCERPT_CHARS]},
            {"role": "user", "content": INSTRUCTION},
        ],
    }
    # Reasoning models spend tokens thinking first, and some refuse max_tokens altogether.
    if "max_tokens" in parameters.supported_names(plan.model) and not plan.model.supports_reasoning:
        payload["max_tokens"] = MAX_TOKENS
    return payload


def clean(text: str) -> str:
    """One line, no thinking, label, quotes or emphasis around it, at most 200 characters."""
    text = _THINKING.sub("", text)
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = _LABEL.sub("", line.strip("#*_ \t"))
    line = line.strip(_QUOTES + "*_ \t").rstrip(".。").strip(_QUOTES + " ")
    return " ".join(line.split())[:MAX_TITLE_CHARS].strip()


async def write_title(plan: ReplyPlan, reply_text: str) -> None:
    """Ask for the title, record the request, save and announce the title; log what fails."""
    try:
        await _write_title(plan, reply_text)
    except Exception:  # the database, say: the provisional title stays, and nobody is waiting
        logger.exception("the title of conversation %s was not written", plan.conversation_id)


async def _write_title(plan: ReplyPlan, reply_text: str) -> None:
    payload = build_request(plan, reply_text)
    prompt_chars = sum(len(m["content"]) for m in payload["messages"])
    record = await database_sync_to_async(usage.start)(
        user_id=plan.user_id,
        model=plan.model,
        source=UsageRecord.Source.TITLE,
        conversation_id=plan.conversation_id,
        message_id=plan.reply.pk,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    title, reported, error = "", None, None
    try:
        data = await upstream.complete_chat(
            endpoint_for(plan.model.provider), payload, request_id=str(record.request_id)
        )
        reported = data.get("usage")
        choice = (data.get("choices") or [{}])[0]
        title = clean(str((choice.get("message") or {}).get("content") or ""))
    except upstream.UpstreamError as upstream_error:
        logger.warning(
            "title of conversation %s failed: %s (request %s)",
            plan.conversation_id,
            upstream_error.code,
            record.request_id,
        )
        error = upstream_error
    except Exception:  # an unreadable key, a malformed answer: recorded, and the provisional title stays
        logger.exception("title request %s failed", record.request_id)
        error = upstream.UpstreamError("internal")
    tokens = (
        usage.Tokens.from_upstream(reported)
        if isinstance(reported, dict)
        else usage.Tokens.estimate(plan.model, prompt_chars, len(title))
    )
    conversation = await database_sync_to_async(_save)(
        plan, record, title, tokens, error, round((loop.time() - started) * 1000)
    )
    if conversation is not None:
        await events.publish(*events.conversation_announcement("updated", conversation))


def _save(
    plan: ReplyPlan,
    record: UsageRecord,
    title: str,
    tokens: usage.Tokens,
    error: upstream.UpstreamError | None,
    duration_ms: int,
) -> Conversation | None:
    """Finish the usage record and set the title in one transaction; the conversation if retitled."""
    with transaction.atomic():
        usage.finish(
            record,
            status=UsageRecord.Status.ERROR if error else UsageRecord.Status.COMPLETE,
            tokens=tokens,
            time_to_first_token_ms=None,
            duration_ms=duration_ms,
            error_code=error.code if error else "",
        )
        if not title or title == plan.provisional_title:
            return None
        # Only over the provisional title: a rename by the member meanwhile wins.
        retitled = Conversation.objects.filter(
            pk=plan.conversation_id, title=plan.provisional_title, deleted_at__isnull=True
        ).update(title=title)
        if not retitled:
            return None
        return Conversation.objects.get(pk=plan.conversation_id)
