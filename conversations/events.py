"""The one event format (docs/websocket.md) and where events go.

A group message's "type" is also the consumer handler's name ("reply.delta" -> reply_delta), so an
event is built once and forwarded to the browser unchanged.
"""

import json
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils.translation import gettext

from conversations.models import Conversation, Folder, Message

PROTOCOL_VERSION = 1


def conversation_group(public_id_hex: str) -> str:
    return f"conversation.{public_id_hex}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def envelope(
    type: str,
    *,
    conversation: str | None = None,
    message: int | None = None,
    seq: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "v": PROTOCOL_VERSION,
        "type": type,
        "conversation": conversation,
        "message": message,
        "seq": seq,
        **fields,
    }


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.public_id),
        "title": conversation.title,
        "pinned": conversation.pinned,
        "folder": conversation.folder_id,
        "updated_at": conversation.updated_at.isoformat(),
    }


def folder_summary(folder: Folder) -> dict[str, Any]:
    return {"id": folder.pk, "name": folder.name}


def message_data(message: Message, siblings: list[int] | None = None, seq: int = 0) -> dict[str, Any]:
    """A message as the browser sees it (one entry of snapshot.data.messages)."""
    return {
        "id": message.pk,
        "parent": message.parent_id,
        "role": message.role,
        "status": message.status,
        "parts": message.parts,
        "siblings": siblings if siblings is not None else [message.pk],
        "model": message.model_id,
        "finish_reason": message.finish_reason,
        # Details saved in English (gettext_noop) read in the member's language; others are as saved.
        "error": {"code": message.error_code, "detail": gettext(message.error_detail)}
        if message.error_code
        else None,
        "created_at": message.created_at.isoformat(),
        "seq": seq,
    }


def frame(event: dict[str, Any]) -> dict[str, Any]:
    """The group message for an event: encoded once here, not once per receiving socket."""
    return {"type": event["type"], "frame": json.dumps(event, separators=(",", ":"), ensure_ascii=False)}


async def publish(group: str, event: dict[str, Any]) -> None:
    await get_channel_layer().group_send(group, frame(event))


def publish_on_commit(group: str, event: dict[str, Any]) -> None:
    """Send once the surrounding transaction commits: no tab hears of a row it cannot read yet."""
    transaction.on_commit(partial(async_to_sync(publish), group, event))


def conversation_announcement(kind: str, conversation: Conversation) -> tuple[str, dict[str, Any]]:
    """For every tab of the owner: a conversation was created, updated or deleted."""
    event = envelope(
        f"conversation.{kind}",
        conversation=str(conversation.public_id),
        data=conversation_summary(conversation),
    )
    return user_group(conversation.owner_id), event


def announce_conversation(kind: str, conversation: Conversation) -> None:
    publish_on_commit(*conversation_announcement(kind, conversation))


def announce_folder(kind: str, folder: Folder) -> None:
    """For every tab of the owner: a folder was created, renamed or deleted."""
    publish_on_commit(user_group(folder.owner_id), envelope(f"folder.{kind}", data=folder_summary(folder)))
