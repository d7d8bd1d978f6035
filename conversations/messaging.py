"""Changes to the message tree: send, regenerate, edit, select; and the snapshot of a conversation.

Each change is one transaction that saves the user's message and a pending reply, starts its usage
record and prepares the upstream request, so the generation needs no query before it calls upstream.
Events go out after commit: no tab hears of a row it cannot read yet.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations import budgets, catalog, context, context_budget, events, parameters, usage
from conversations.models import (
    Assistant,
    Attachment,
    ChatModel,
    Conversation,
    Message,
    Profile,
    UsageRecord,
)

MAX_TEXT_CHARS = 32_000
TITLE_CHARS = 60
# A snapshot carries the newest messages of the path; older ones come in pages of `history`.
SNAPSHOT_MESSAGES = 50
HISTORY_MESSAGES = 50


def lease() -> timedelta:
    """How long a reply's process may go silent before the sweeper calls the reply interrupted."""
    return timedelta(seconds=settings.REPLY_LEASE_SECONDS)


class RefusedError(Exception):
    """The request cannot be carried out; code and detail go back to the client."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class ReplyPlan:
    """Everything a generation needs, prepared in the transaction that created the reply."""

    reply: Message
    siblings: list[int]  # the reply's and its versions' ids, for "< 2/3 >"
    conversation_id: int
    conversation_hex: str
    user_id: int
    model: ChatModel
    record: UsageRecord
    payload: dict[str, Any]
    prompt_chars: int
    # (group, event) pairs to publish once the transaction has committed: the caller sends them, so
    # the database thread never waits for the event loop.
    events: list[tuple[str, dict[str, Any]]]
    # Set when this send created the conversation: the title taken from the first message, which a
    # title written by the model replaces after the first reply (titles.py) unless renamed meanwhile.
    provisional_title: str = ""


def _model_for(user: Any, conversation: Conversation) -> ChatModel:
    """The conversation's model if the member may use it; for a conversation without one, their
    default model, else the first they may use."""
    if conversation.model_id:
        model = catalog.usable_model(user, conversation.model_id)
    else:
        default_id = Profile.objects.filter(user=user).values_list("default_model_id", flat=True).first()
        model = catalog.usable_model(user, default_id) or min(
            catalog.usable_models(user), key=lambda usable: usable.pk, default=None
        )
    if model is None:
        raise RefusedError("unknown_model", _("This conversation's model is not available to you."))
    return model


def _message_of(tree: "Tree", message_id: Any, role: str | None = None) -> "Node":
    if not isinstance(message_id, int):
        raise RefusedError("bad_request", _("A message id is required."))
    node = tree.by_id.get(message_id)
    if node is None or (role and node.role != role):
        raise RefusedError("not_found", _("No such message in this conversation."))
    return node


def _add_reply(
    user: Any,
    conversation: Conversation,
    tree: "Tree",
    prompt_id: int,
    created: list[Message],
    outbox: list,
) -> ReplyPlan:
    # Checked when saved; checked again here, as an import or an older rule may have let one through.
    try:
        parameters.validate(conversation.parameters, conversation.tools)
    except parameters.ParameterError as error:
        raise RefusedError(error.code, error.detail) from None
    model = _model_for(user, conversation)
    reply = Message.objects.create(
        conversation=conversation,
        parent_id=prompt_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        model=model,
        lease_expires_at=timezone.now() + lease(),
    )
    created.append(reply)
    for message in created:
        tree.add(message)
    conversation.current_leaf = reply
    conversation.model = model
    conversation.updated_at = timezone.now()
    conversation.save(update_fields=["current_leaf", "model", "updated_at"])
    record = usage.start(
        user_id=user.pk,
        model=model,
        source=UsageRecord.Source.CHAT,
        conversation=conversation,
        message=reply,
    )
    path = messages_by_id(tree.path(prompt_id), known=created)
    payload, prompt_chars = context.build_request(conversation, path, model)
    try:
        fitted = context_budget.fit(payload, model)
    except context_budget.ContextTooLongError as error:
        raise RefusedError(error.code, str(error)) from None
    prompt_chars = fitted.prompt_chars
    if fitted.omitted:  # shown above the reply; generation.LiveReply.parts() keeps it when saving
        reply.parts = [context_budget.note(fitted.omitted)]
    try:
        reservations = budgets.admit(user.pk, model, payload, prompt_chars)
    except budgets.LimitReached as refused:
        raise RefusedError(refused.code, refused.detail) from None
    if reservations:  # with no limits for this member, no query
        record.reservations = reservations
        record.save(update_fields=["reservations"])
    hex_id = conversation.public_id.hex
    for message in created:
        event = events.envelope(
            "message.created",
            conversation=str(conversation.public_id),
            message=message.pk,
            data=events.message_data(message, tree.siblings(message)),
        )
        outbox.append((events.conversation_group(hex_id), event))
    return ReplyPlan(
        reply=reply,
        siblings=tree.siblings(reply),
        conversation_id=conversation.pk,
        conversation_hex=hex_id,
        user_id=user.pk,
        model=model,
        record=record,
        payload=payload,
        prompt_chars=prompt_chars,
        events=outbox,
    )


def _clean_text(text: Any, images: bool = False) -> str:
    """The message's text; with images attached it may be empty."""
    if images and text is None:
        text = ""
    if not isinstance(text, str) or not (text.strip() or images):
        raise RefusedError("bad_request", _("The message is empty."))
    if len(text) > MAX_TEXT_CHARS:
        raise RefusedError(
            "too_large", _("The message is longer than %(limit)s characters.") % {"limit": MAX_TEXT_CHARS}
        )
    return text


@transaction.atomic
def do_send_message(
    user: Any,
    public_id: str | None,
    text: Any,
    parent_id: Any = None,
    model_id: Any = None,
    assistant_id: Any = None,
    attachments: Any = None,
    conversation_settings: Any = None,
) -> ReplyPlan:
    """Save the user's message and a pending reply. public_id None starts a conversation, with the
    model chosen in the picker when given, an assistant's settings when one is named, and over both
    the settings chosen before the first message (system prompt, parameters, tools).
    `attachments` names uploaded images (attachment_views.py) that go with the text."""
    image_ids = _clean_attachment_ids(attachments)
    text = _clean_text(text, images=bool(image_ids))
    outbox: list[tuple[str, dict[str, Any]]] = []
    if public_id is None:
        preset = assistant_settings(assistant_id)
        if isinstance(model_id, int):
            preset["model_id"] = model_id
        if conversation_settings is not None:
            try:
                preset.update(parameters.clean_settings(conversation_settings))
            except parameters.ParameterError as error:
                raise RefusedError(error.code, error.detail) from None
        conversation = Conversation.objects.create(
            owner=user, title=_first_line(text) or _("Image"), **preset
        )
        outbox.append(events.conversation_announcement("created", conversation))
        tree = Tree([])
    else:
        conversation = conversation_for_update(user, public_id)
        tree = Tree.of(conversation)
    parent = (
        _message_of(tree, parent_id)
        if parent_id is not None
        else tree.by_id.get(conversation.current_leaf_id)
    )
    if parent is not None and parent.status in Message.LIVE_STATUSES:
        # A prompt must answer a finished reply: the upstream would see half of one otherwise.
        raise RefusedError("busy", _("Wait for the reply to finish, or stop it, before sending."))
    prompt = Message(
        conversation=conversation, parent_id=parent.pk if parent else None, role=Message.Role.USER
    )
    image_parts = _attach_images(user, conversation, image_ids)
    prompt.set_parts(image_parts + ([{"type": "text", "text": text}] if text.strip() else []))
    prompt.save()
    plan = _add_reply(user, conversation, tree, prompt.pk, [prompt], outbox)
    if public_id is None:
        plan.provisional_title = conversation.title
    else:  # other tabs move it to the top of their sidebar
        outbox.append(events.conversation_announcement("updated", conversation))
    return plan


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:TITLE_CHARS] if lines else ""


def _clean_attachment_ids(value: Any) -> list[uuid.UUID]:
    """The image ids a send names, in order, each once; none when the field is absent."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RefusedError("bad_request", _("“attachments” must be a list of image ids."))
    if len(value) > settings.IMAGES_PER_MESSAGE:
        raise RefusedError(
            "too_many_images",
            _("At most %(count)s images can go with one message.") % {"count": settings.IMAGES_PER_MESSAGE},
        )
    try:
        return list(dict.fromkeys(uuid.UUID(item) for item in value))
    except ValueError:
        raise RefusedError("attachment_not_found", _("An attached image is not available.")) from None


def _attach_images(user: Any, conversation: Conversation, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Image parts for the attachments of a send, which join the conversation. Each must be the
    sender's and in no other conversation, and the model must take images: refused otherwise, before
    anything is saved (the transaction rolls back) or sent upstream."""
    if not ids:
        return []
    model = _model_for(user, conversation)
    if not model.supports_vision:
        raise RefusedError(
            "vision_not_supported",
            _("%(model)s does not accept images. Choose a model that does, or send text only.")
            % {"model": model.display_name},
        )
    found = {
        attachment.public_id: attachment
        for attachment in Attachment.objects.select_for_update().filter(
            Q(conversation__isnull=True) | Q(conversation=conversation), owner=user, public_id__in=ids
        )
    }
    if len(found) != len(ids):
        raise RefusedError("attachment_not_found", _("An attached image is not available."))
    unattached = [attachment.pk for attachment in found.values() if attachment.conversation_id is None]
    if unattached:
        Attachment.objects.filter(pk__in=unattached).update(conversation=conversation)
    return [
        {"type": "image", "attachment": str(pk), "width": found[pk].width, "height": found[pk].height}
        for pk in ids
    ]


def assistant_settings(assistant_id: Any) -> dict[str, Any]:
    """The Conversation fields a new conversation takes from an assistant (shared with the whole
    team); none for no assistant."""
    if assistant_id is None:
        return {}
    assistant = Assistant.objects.filter(pk=assistant_id).first() if type(assistant_id) is int else None
    if assistant is None:
        raise RefusedError("not_found", _("No such assistant."))
    return {
        "model_id": assistant.model_id,
        "system_prompt": assistant.system_prompt,
        "parameters": assistant.parameters,
        "tools": assistant.tools,
    }


@transaction.atomic
def do_regenerate(user: Any, public_id: str, message_id: Any) -> ReplyPlan:
    """A new reply beside an existing one; the old one stays as a version."""
    conversation = conversation_for_update(user, public_id)
    tree = Tree.of(conversation)
    old_reply = _message_of(tree, message_id, Message.Role.ASSISTANT)
    if old_reply.parent_id not in tree.by_id:
        raise RefusedError("bad_request", _("This reply has no prompt to answer."))
    plan = _add_reply(user, conversation, tree, old_reply.parent_id, [], [])
    plan.events.append(events.conversation_announcement("updated", conversation))  # to the top of sidebars
    return plan


@transaction.atomic
def do_edit(user: Any, public_id: str, message_id: Any, text: Any) -> ReplyPlan:
    """A new user message beside an earlier one: a new branch."""
    text = _clean_text(text)
    conversation = conversation_for_update(user, public_id)
    tree = Tree.of(conversation)
    original = _message_of(tree, message_id, Message.Role.USER)
    prompt = Message(conversation=conversation, parent_id=original.parent_id, role=Message.Role.USER)
    prompt.set_parts([{"type": "text", "text": text}])
    prompt.save()
    plan = _add_reply(user, conversation, tree, prompt.pk, [prompt], [])
    plan.events.append(events.conversation_announcement("updated", conversation))  # to the top of sidebars
    return plan


@transaction.atomic
def do_select(user: Any, public_id: str, message_id: Any) -> Conversation:
    """Select the branch through a message: follow its newest children down to a leaf."""
    conversation = conversation_for_update(user, public_id)
    tree = Tree.of(conversation)
    message = _message_of(tree, message_id)
    leaf_id = tree.newest_leaf_under(message.pk)
    conversation.current_leaf_id = leaf_id
    conversation.save(update_fields=["current_leaf"])
    return conversation


def conversation_for_user(user: Any, public_id: Any) -> Conversation | None:
    """The user's conversation, or None for anyone else's, a deleted one or a malformed id."""
    try:
        parsed = uuid.UUID(str(public_id))
    except ValueError:
        return None
    # get(), not first(): first() orders by pk, and compiling that ordering costs a quarter of the query.
    try:
        return Conversation.objects.for_user(user).get(public_id=parsed)
    except Conversation.DoesNotExist:
        return None


def conversation_for_update(user: Any, public_id: Any) -> Conversation:
    conversation = conversation_for_user(user, public_id)
    if conversation is None:
        raise RefusedError("not_found", _("No such conversation."))
    return conversation


def load_snapshot(conversation: Conversation) -> dict[str, Any]:
    """The conversation and the newest messages of its selected path, each with its siblings; `older`
    says whether the path goes further back (the client asks for those with `history`)."""
    conversation.refresh_from_db(fields=["title", "pinned", "current_leaf", "model", "updated_at"])
    tree = Tree.of(conversation)
    path = tree.path(conversation.current_leaf_id)
    shown = path[-SNAPSHOT_MESSAGES:]
    return {
        **events.conversation_summary(conversation),
        "model": conversation.model_id,
        "system_prompt": conversation.system_prompt,
        "current_leaf": conversation.current_leaf_id,
        "messages": [events.message_data(m, tree.siblings(m), m.stream_seq) for m in messages_by_id(shown)],
        "older": len(path) > len(shown),
    }


def load_history(conversation: Conversation, before: Any) -> dict[str, Any]:
    """The messages of the selected path just above `before` (a message on it), oldest first."""
    tree = Tree.of(conversation)
    path = tree.path(conversation.current_leaf_id)
    if not isinstance(before, int) or before not in path:
        raise RefusedError("not_found", _("No such message on the selected path."))
    end = path.index(before)
    shown = path[max(0, end - HISTORY_MESSAGES) : end]
    return {
        "before": before,
        "messages": [events.message_data(m, tree.siblings(m), m.stream_seq) for m in messages_by_id(shown)],
        "older": end > len(shown),
    }


def messages_by_id(ids: list[int], known: Iterable[Message] = ()) -> list[Message]:
    """Full rows for these ids, in their order; `known` ones (just created) are not read again."""
    in_memory = {message.pk: message for message in known}
    rows = Message.objects.in_bulk([pk for pk in ids if pk not in in_memory])
    return [in_memory.get(pk) or rows[pk] for pk in ids]


@dataclass(frozen=True, slots=True)
class Node:
    """What the tree keeps of a message: enough to find paths, versions, roles and live replies."""

    pk: int
    parent_id: int | None
    role: str
    status: str


class Tree:
    """A conversation's messages as a skeleton, read in one light query; full rows are read only for
    the messages shown or sent (messages_by_id), so a conversation of thousands stays cheap."""

    def __init__(self, nodes: Any) -> None:
        self.by_id: dict[int, Node] = {}
        self.children: dict[int | None, list[int]] = {}
        for node in nodes:
            self.add(node)

    @classmethod
    def of(cls, conversation: Conversation) -> "Tree":
        # Sorted here rather than by ORDER BY: the same order, without compiling an ordering per send.
        rows = sorted(conversation.messages.values_list("pk", "parent_id", "role", "status"))
        return cls(Node(*row) for row in rows)

    def add(self, message: "Message | Node") -> None:
        node = (
            message
            if isinstance(message, Node)
            else Node(message.pk, message.parent_id, message.role, message.status)
        )
        self.by_id[node.pk] = node
        self.children.setdefault(node.parent_id, []).append(node.pk)

    def siblings(self, message: "Message | Node") -> list[int]:
        return self.children.get(message.parent_id, [message.pk])

    def path(self, leaf_id: int | None) -> list[int]:
        """The ids from the root down to the leaf."""
        path = []
        node = self.by_id.get(leaf_id)
        while node is not None:
            path.append(node.pk)
            node = self.by_id.get(node.parent_id)
        path.reverse()
        return path

    def newest_leaf_under(self, message_id: int) -> int:
        while self.children.get(message_id):
            message_id = self.children[message_id][-1]
        return message_id


def limits() -> dict[str, int]:
    return {"max_frame_bytes": settings.WEBSOCKET_MAX_FRAME_BYTES, "max_text_chars": MAX_TEXT_CHARS}
