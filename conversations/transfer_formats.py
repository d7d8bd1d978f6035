"""The files an import reads, turned into drafts: chatsite's own export, an OpenAI messages list and
ChatGPT's data export (conversations.json). docs/transfer.md describes each.

Nothing here touches the database; transfer.save_drafts() writes what these functions return. Every
value comes from an uploaded file, so each is checked for its type before it is used. Over 400 lines:
three readers that share those checks, each short.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from conversations.messaging import TITLE_CHARS
from conversations.models import Conversation, Message
from conversations.parameters import valid_subset

FORMAT = "chatsite.conversation"
VERSION = 1
# A 5 MB file of tiny messages would still be a hundred thousand rows; past this it is refused.
MAX_MESSAGES = 50_000
TITLE_MAX_CHARS = Conversation._meta.get_field("title").max_length
SYSTEM_PROMPT_MAX_CHARS = 32_000
ROLES = frozenset(Message.Role.values)
# Kept as exported; a reply that was live at export time cannot continue here, so it is complete.
KEPT_STATUSES = frozenset({Message.Status.CANCELLED, Message.Status.ERROR, Message.Status.INTERRUPTED})


class ImportRefused(Exception):
    """The file cannot be imported; code and detail go back to the member."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


def broken(reason: str) -> ImportRefused:
    return ImportRefused("bad_file", _("The file cannot be imported: %(reason)s") % {"reason": reason})


@dataclass
class MessageDraft:
    key: Any  # the message's id in the file (text or number), unique within its conversation
    parent: Any  # the parent's key, or None for a first message
    role: str
    parts: list[dict[str, Any]]
    status: str = Message.Status.COMPLETE
    model_name: str = ""
    finish_reason: str = ""
    error_code: str = ""
    error_detail: str = ""
    created_at: datetime | None = None


@dataclass
class ConversationDraft:
    title: str
    messages: list[MessageDraft]
    current: Any = None  # the key of the selected branch's last message
    system_prompt: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    created_at: datetime | None = None

    def order_messages(self) -> None:
        """Check that the messages form trees, and put every parent before its children.

        Otherwise the file's order is kept: it decides which of two versions is the older one.
        """
        by_key: dict[Any, MessageDraft] = {}
        for message in self.messages:
            if message.key in by_key:
                raise broken(_("two messages have the id %(id)s.") % {"id": message.key})
            by_key[message.key] = message
        ordered: list[MessageDraft] = []
        placed: set[Any] = set()
        for message in self.messages:
            # Climb to the nearest placed ancestor, then place the climb top down; no recursion, as
            # a long conversation is one chain thousands of messages deep.
            climb: list[MessageDraft] = []
            on_climb: set[Any] = set()
            node: MessageDraft | None = message
            while node is not None and node.key not in placed:
                if node.key in on_climb:
                    raise broken(_("its messages refer to each other in a circle."))
                on_climb.add(node.key)
                climb.append(node)
                if node.parent is None:
                    node = None
                elif node.parent in by_key:
                    node = by_key[node.parent]
                else:
                    raise broken(_("a message names a parent that is not in the file."))
            for node in reversed(climb):
                placed.add(node.key)
                ordered.append(node)
        self.messages = ordered
        if self.current not in by_key:
            # No selected branch named: the last message placed, which has no children after it.
            self.current = ordered[-1].key if ordered else None


def read_drafts(document: Any) -> list[ConversationDraft]:
    """Recognise the file's format and read its conversations."""
    if isinstance(document, dict) and document.get("format") == FORMAT:
        drafts = [_read_chatsite(document)]
    elif isinstance(document, dict) and isinstance(document.get("mapping"), dict):
        drafts = [_read_chatgpt(document)]
    elif isinstance(document, dict) and isinstance(document.get("messages"), list):
        title, model = document.get("title"), document.get("model")
        drafts = [
            _read_openai(
                document["messages"],
                title if isinstance(title, str) else "",
                model if isinstance(model, str) else "",
            )
        ]
    elif isinstance(document, list) and document and all(_is_chatgpt(item) for item in document):
        drafts = [_read_chatgpt(item) for item in document]
    elif isinstance(document, list) and document and all(_is_openai(item) for item in document):
        drafts = [_read_openai(document)]
    else:
        raise ImportRefused(
            "unknown_format",
            _("The file is not a chatsite, OpenAI messages or ChatGPT export file."),
        )
    drafts = [draft for draft in drafts if draft.messages or draft.title]
    if not drafts:
        raise ImportRefused("empty", _("The file holds no messages."))
    if sum(len(draft.messages) for draft in drafts) > MAX_MESSAGES:
        raise ImportRefused(
            "too_large",
            _("The file holds more than %(count)s messages.") % {"count": MAX_MESSAGES},
            status=413,
        )
    return drafts


def parse_time(value: Any) -> datetime | None:
    """An aware datetime from ISO 8601 text or a Unix timestamp; None for anything else."""
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            return None
        if parsed is not None and timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, UTC)
        return parsed
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _text(value: Any, limit: int | None = None) -> str:
    text = value if isinstance(value, str) else ""
    return text[:limit] if limit else text


def _title_from(messages: list[MessageDraft]) -> str:
    for message in messages:
        for part in message.parts:
            if message.role == Message.Role.USER and part["type"] == "text" and part["text"].strip():
                return part["text"].strip().splitlines()[0][:TITLE_CHARS]
    return ""


# --- chatsite's own export ------------------------------------------------------------------------


def _read_chatsite(document: dict[str, Any]) -> ConversationDraft:
    if document.get("version") != VERSION:
        raise broken(_("it was written by another version of chatsite."))
    conversation = document.get("conversation")
    if not isinstance(conversation, dict) or not isinstance(conversation.get("messages"), list):
        raise broken(_("it has no conversation."))
    messages = []
    for item in conversation["messages"]:
        if not isinstance(item, dict):
            raise broken(_("a message is not an object."))
        error = item.get("error") if isinstance(item.get("error"), dict) else {}
        status = item.get("status")
        messages.append(
            MessageDraft(
                key=_key(item.get("id")),
                parent=None if item.get("parent") is None else _key(item.get("parent")),
                role=_role(item.get("role")),
                parts=_chatsite_parts(item.get("parts")),
                status=status if isinstance(status, str) and status in KEPT_STATUSES else "complete",
                model_name=_text(item.get("model")),
                finish_reason=_text(item.get("finish_reason"), 32),
                error_code=_text(error.get("code"), 64),
                error_detail=_text(error.get("detail")),
                created_at=parse_time(item.get("created_at")),
            )
        )
    current = conversation.get("current_leaf")
    parameters = conversation.get("parameters")
    return ConversationDraft(
        title=_text(conversation.get("title"), TITLE_MAX_CHARS),
        messages=messages,
        current=None if current is None else _key(current),
        system_prompt=_text(conversation.get("system_prompt"), SYSTEM_PROMPT_MAX_CHARS),
        # Only what a member could have set: an edited file must not smuggle other request fields.
        parameters=valid_subset(parameters),
        model_name=_text(conversation.get("model")),
        created_at=parse_time(conversation.get("created_at")),
    )


def _key(value: Any) -> Any:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise broken(_("a message has no valid id."))


def _role(value: Any) -> str:
    if not isinstance(value, str) or value not in ROLES:
        raise broken(_("a message has an unknown role."))
    return value


def _chatsite_parts(parts: Any) -> list[dict[str, Any]]:
    if not isinstance(parts, list):
        raise broken(_("a message has no list of parts."))
    clean = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        kind = kind if isinstance(kind, str) else None
        if kind in {"text", "reasoning", "refusal"} and isinstance(part.get("text"), str):
            clean.append({"type": kind, "text": part["text"]})
        elif kind == "tool_call":
            arguments = part.get("arguments")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            clean.append(
                {
                    "type": kind,
                    "id": _text(part.get("id")),
                    "name": _text(part.get("name")),
                    "arguments": arguments,
                }
            )
        elif kind == "tool_result":
            content = part.get("content")
            if not isinstance(content, str):
                content = json.dumps(content, ensure_ascii=False)
            clean.append({"type": kind, "tool_call_id": _text(part.get("tool_call_id")), "content": content})
        elif kind == "image":
            # The image file is not in the export, and the attachment it names is not the importer's.
            continue
        elif kind == "context_note":
            continue  # about one request that was sent (context_budget.py), not content
        elif kind == "json_check":
            continue  # a verdict on the reply against the format its request asked for (json_replies.py)
        else:
            raise broken(_("a message has a part of an unknown type."))
    return clean


# --- OpenAI messages ------------------------------------------------------------------------------

OPENAI_ROLES = {"developer": Message.Role.SYSTEM, "function": Message.Role.TOOL}


def _is_openai(item: Any) -> bool:
    return isinstance(item, dict) and "role" in item


def _read_openai(items: list[Any], title: str = "", model: str = "") -> ConversationDraft:
    """A list of Chat Completions messages: one branch, the last message selected."""
    messages: list[MessageDraft] = []
    for index, item in enumerate(items):
        if not _is_openai(item):
            raise broken(_("a message has no role."))
        role = _role(OPENAI_ROLES.get(item["role"], item["role"]) if isinstance(item["role"], str) else None)
        messages.append(
            MessageDraft(
                key=index,
                parent=index - 1 if index else None,
                role=role,
                parts=_openai_parts(item, role),
                model_name=model if role == Message.Role.ASSISTANT else "",
            )
        )
    return ConversationDraft(
        title=(title or _title_from(messages))[:TITLE_MAX_CHARS],
        messages=messages,
        current=len(messages) - 1 if messages else None,
        model_name=model,
    )


def _openai_parts(item: dict[str, Any], role: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for name in ("reasoning_content", "reasoning"):
        if isinstance(item.get(name), str) and item[name]:
            parts.append({"type": "reasoning", "text": item[name]})
    content = item.get("content")
    texts: list[str] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for piece in content:
            if isinstance(piece, str):
                texts.append(piece)
            elif not isinstance(piece, dict):
                raise broken(_("a message's content is neither text nor a list of parts."))
            elif piece.get("type") == "refusal" and isinstance(piece.get("refusal"), str):
                parts.append({"type": "refusal", "text": piece["refusal"]})
            elif isinstance(piece.get("text"), str):  # "text", and the Responses API's "input_text"
                texts.append(piece["text"])
            # Images, audio and files: their data is not kept, as for chatsite's own images.
    elif content is not None:
        raise broken(_("a message's content is neither text nor a list of parts."))
    text = "".join(texts)
    if role == Message.Role.TOOL:
        call_id = item.get("tool_call_id") or item.get("name")
        parts.append({"type": "tool_result", "tool_call_id": _text(call_id), "content": text})
    elif text:
        parts.append({"type": "text", "text": text})
    if isinstance(item.get("refusal"), str) and item["refusal"]:
        parts.append({"type": "refusal", "text": item["refusal"]})
    calls = item.get("tool_calls") or []
    if not isinstance(calls, list):
        raise broken(_("a tool call has no function."))
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise broken(_("a tool call has no function."))
        arguments = function.get("arguments")
        parts.append(
            {
                "type": "tool_call",
                "id": _text(call.get("id")),
                "name": _text(function.get("name")),
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            }
        )
    return parts


# --- ChatGPT's data export ------------------------------------------------------------------------


def _is_chatgpt(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("mapping"), dict)


def _read_chatgpt(item: dict[str, Any]) -> ConversationDraft:
    """One conversation of conversations.json: every node with a message, branches and all.

    Left out, as ChatGPT's own page leaves them out: the root node without a message, nodes marked
    hidden (custom instructions, context) and empty system messages. Their children hang from the
    nearest node kept.
    """
    mapping: dict[str, Any] = item["mapping"]
    drafts: dict[str, MessageDraft | None] = {}
    for key, node in mapping.items():
        if not isinstance(node, dict):
            raise broken(_("a conversation node is not an object."))
        drafts[key] = _chatgpt_message(key, node.get("message"))

    def kept(key: Any) -> str | None:
        """The key itself if kept, else its nearest kept ancestor."""
        seen: set[Any] = set()
        while key is not None:
            if not isinstance(key, str) or key not in mapping or key in seen:
                raise broken(_("a message names a parent that is not in the file."))
            seen.add(key)
            if drafts[key] is not None:
                return key
            key = mapping[key].get("parent")
        return None

    messages = []
    for key, draft in drafts.items():
        if draft is not None:
            draft.parent = kept(mapping[key].get("parent"))
            messages.append(draft)
    current = item.get("current_node")
    return ConversationDraft(
        title=_text(item.get("title"), TITLE_MAX_CHARS) or _title_from(messages),
        messages=messages,
        current=kept(current) if isinstance(current, str) and current in mapping else None,
        model_name=_text(item.get("default_model_slug")),
        created_at=parse_time(item.get("create_time")),
    )


def _chatgpt_message(key: str, message: Any) -> MessageDraft | None:
    if message is None:
        return None
    if not isinstance(message, dict):
        raise broken(_("a conversation node's message is not an object."))
    author = message.get("author") if isinstance(message.get("author"), dict) else {}
    metadata = message.get("metadata") if isinstance(message.get("metadata"), dict) else {}
    content = message.get("content") if isinstance(message.get("content"), dict) else {}
    role = author.get("role")
    role = role if isinstance(role, str) and role in ROLES else Message.Role.ASSISTANT
    if metadata.get("is_visually_hidden_from_conversation"):
        return None
    parts = _chatgpt_parts(content, role)
    if role == Message.Role.SYSTEM and not parts:
        return None
    return MessageDraft(
        key=key,
        parent=None,
        role=role,
        parts=parts,
        model_name=_text(metadata.get("model_slug")),
        created_at=parse_time(message.get("create_time")),
    )


def _chatgpt_parts(content: dict[str, Any], role: str) -> list[dict[str, Any]]:
    kind = content.get("content_type")
    if kind == "thoughts":
        thoughts = [t for t in content.get("thoughts") or [] if isinstance(t, dict)]
        text = "\n\n".join(
            "\n\n".join(_text(t.get(name)) for name in ("summary", "content") if t.get(name))
            for t in thoughts
        )
        return [{"type": "reasoning", "text": text}] if text else []
    if kind == "reasoning_recap":
        return [{"type": "reasoning", "text": content["content"]}] if _text(content.get("content")) else []
    if kind == "code":
        language = _text(content.get("language"))
        text = f"```{'' if language == 'unknown' else language}\n{_text(content.get('text'))}\n```"
    elif kind == "tether_browsing_display":
        text = _text(content.get("result"))
    elif isinstance(content.get("parts"), list):  # text, multimodal_text; images are not in the file
        text = "\n\n".join(part for part in content["parts"] if isinstance(part, str) and part)
    else:  # execution_output, tether_quote, system_error and whatever comes next
        text = _text(content.get("text"))
    if role == Message.Role.TOOL:
        return [{"type": "tool_result", "tool_call_id": "", "content": text}]
    return [{"type": "text", "text": text}] if text else []
