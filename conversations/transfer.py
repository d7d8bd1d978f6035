"""Export a conversation (Markdown, chatsite JSON) and import conversations from a file.

docs/transfer.md describes the endpoints and the chatsite JSON format. An import reads the file whole
into drafts (transfer_formats.py knows the formats), checks every tree, and only then writes, in
one transaction with bulk inserts: a file is imported whole or not at all, and never calls upstream.
"""

import json
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from conversations import catalog, events
from conversations.messaging import Tree
from conversations.models import Conversation, Message, text_of
from conversations.transfer_formats import (
    FORMAT,
    VERSION,
    ConversationDraft,
    ImportRefused,
    MessageDraft,
    read_drafts,
)

__all__ = ["ImportRefused", "export_json", "export_markdown", "file_name", "import_file"]

FILE_NAME_CHARS = 80
# Rows per UPDATE when linking parents: a CASE over thousands of rows costs more than a few statements.
UPDATE_BATCH = 500


# --- Export ---------------------------------------------------------------------------------------


def file_name(conversation: Conversation, extension: str) -> str:
    """A file name safe on every system, from the title; "conversation" when the title gives none."""
    stem = slugify(conversation.title, allow_unicode=True)[:FILE_NAME_CHARS].strip("-_") or "conversation"
    return f"{stem}.{extension}"


def _messages(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.select_related("model").order_by("pk"))


def export_json(conversation: Conversation) -> dict[str, Any]:
    """Every message of the tree, so that branches and the selected one survive a round trip."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": timezone.now().isoformat(),
        "conversation": {
            "id": str(conversation.public_id),
            "title": conversation.title,
            "model": conversation.model.upstream_id if conversation.model else None,
            "system_prompt": conversation.system_prompt,
            "parameters": conversation.parameters,
            "created_at": conversation.created_at.isoformat(),
            "updated_at": conversation.updated_at.isoformat(),
            "current_leaf": conversation.current_leaf_id,
            "messages": [
                {
                    "id": message.pk,
                    "parent": message.parent_id,
                    "role": message.role,
                    "status": message.status,
                    "parts": message.parts,
                    "model": message.model.upstream_id if message.model else None,
                    "finish_reason": message.finish_reason,
                    "error": {"code": message.error_code, "detail": message.error_detail}
                    if message.error_code
                    else None,
                    "created_at": message.created_at.isoformat(),
                }
                for message in _messages(conversation)
            ],
        },
    }


def export_markdown(conversation: Conversation) -> str:
    """The title, then each message of the selected path under a heading naming who wrote it."""
    headings = {
        Message.Role.USER: _("You"),
        Message.Role.ASSISTANT: _("Assistant"),
        Message.Role.SYSTEM: _("System"),
        Message.Role.TOOL: _("Tool"),
    }
    blocks = [f"# {conversation.title or _('New conversation')}"]
    messages = _messages(conversation)
    by_id = {message.pk: message for message in messages}
    for pk in Tree(messages).path(conversation.current_leaf_id):
        message = by_id[pk]
        blocks.append(f"## {headings.get(message.role, message.role)}")
        blocks.extend(_markdown_part(part) for part in message.parts)
        note = _status_note(message)
        if note:
            blocks.append(note)
    return "\n\n".join(block for block in blocks if block) + "\n"


def _markdown_part(part: dict[str, Any]) -> str:
    kind = part.get("type")
    if kind == "text":
        return part.get("text", "")
    if kind == "refusal":
        return _quote(part.get("text", ""))
    if kind == "reasoning":
        return _quote(f"**{_('Reasoning')}**\n\n{part.get('text', '')}")
    if kind == "tool_call":
        title = _("Tool call: %(name)s") % {"name": part.get("name", "")}
        return f"**{title}**\n\n{_fenced(str(part.get('arguments', '')))}"
    if kind == "tool_result":
        content = part.get("content", "")
        content = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        return f"**{_('Tool result')}**\n\n{_fenced(content)}"
    if kind == "image":
        return _("[image]")
    return ""


def _status_note(message: Message) -> str:
    if message.status == Message.Status.CANCELLED:
        return f"*{_('Stopped')}*"
    if message.status == Message.Status.INTERRUPTED:
        return f"*{_('Interrupted')}*"
    if message.status == Message.Status.ERROR:
        return f"*{_('The reply failed.')}* {_(message.error_detail)}".strip()
    return ""


def _quote(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.splitlines())


def _fenced(text: str) -> str:
    # The fence must be longer than any run of backticks inside, or the content would close it.
    longest = run = 0
    for character in text:
        run = run + 1 if character == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


# --- Import ---------------------------------------------------------------------------------------


def import_file(user: Any, data: bytes) -> list[Conversation]:
    """Read a chatsite, OpenAI or ChatGPT file and save its conversations as the member's own.

    Raises ImportRefused, before anything is written, for a file that is too large, not JSON, of an
    unknown shape or with a broken tree.
    """
    if len(data) > settings.IMPORT_MAX_BYTES:
        raise too_large()
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ImportRefused("bad_json", _("The file is not valid JSON.")) from error
    drafts = read_drafts(document)
    for draft in drafts:
        draft.order_messages()
    return save_drafts(user, drafts)


def too_large() -> ImportRefused:
    limit = filesizeformat(settings.IMPORT_MAX_BYTES)
    return ImportRefused("too_large", _("The file is larger than %(size)s.") % {"size": limit}, status=413)


@transaction.atomic
def save_drafts(user: Any, drafts: list[ConversationDraft]) -> list[Conversation]:
    """Write checked drafts: a few statements per batch of rows, not one per message."""
    models = {model.upstream_id: model for model in catalog.usable_models(user)}
    now = timezone.now()
    conversations = _insert(
        [
            Conversation(
                owner=user,
                title=draft.title,
                system_prompt=draft.system_prompt,
                parameters=draft.parameters,
                model=models.get(draft.model_name),
                created_at=draft.created_at or now,
                updated_at=now,
            )
            for draft in drafts
        ]
    )
    rows: list[tuple[MessageDraft, Message]] = []
    for conversation, draft in zip(conversations, drafts, strict=True):
        for item in draft.messages:
            message = Message(
                conversation=conversation,
                role=item.role,
                status=item.status,
                parts=item.parts,
                text=text_of(item.parts),
                model=models.get(item.model_name),
                finish_reason=item.finish_reason,
                error_code=item.error_code,
                error_detail=item.error_detail,
                created_at=item.created_at or now,
            )
            rows.append((item, message))
    _insert([message for _item, message in rows])

    # Parents are linked once every row has its id: drafts are in parent-first order, so one pass does.
    saved: dict[tuple[int, Any], Message] = {}
    children = []
    for item, message in rows:
        saved[(message.conversation_id, item.key)] = message
        if item.parent is not None:
            message.parent_id = saved[(message.conversation_id, item.parent)].pk
            children.append(message)
    Message.objects.bulk_update(children, ["parent"], batch_size=UPDATE_BATCH)
    for conversation, draft in zip(conversations, drafts, strict=True):
        leaf = saved.get((conversation.pk, draft.current))
        conversation.current_leaf_id = leaf.pk if leaf else None
        events.announce_conversation("created", conversation)
    Conversation.objects.bulk_update(conversations, ["current_leaf"], batch_size=UPDATE_BATCH)
    return conversations


def _insert(rows: list[Any]) -> list[Any]:
    """Insert new rows of one model in bulk; each row has its id afterwards."""
    if not rows:
        return rows
    if connection.features.can_return_rows_from_bulk_insert:  # SQLite 3.35+, PostgreSQL
        return type(rows[0]).objects.bulk_create(rows)
    for row in rows:  # an engine that cannot say which ids it gave: one row at a time
        row.save()
    return rows
