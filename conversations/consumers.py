"""The chat socket: authenticate, check access, subscribe, call one function, forward. Nothing else.

docs/websocket.md describes every message. The socket never awaits the upstream: replies run in
conversations/generation.py and reach every subscribed socket through the channel layer.
"""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from django.utils import translation
from django.utils.translation import get_supported_language_variant
from django.utils.translation import gettext as _
from django.utils.translation.trans_real import parse_accept_lang_header

from conversations import events, generation, messaging, sessions
from conversations.messaging import RefusedError
from conversations.models import Conversation, Message, Profile

logger = logging.getLogger(__name__)

SESSION_CHECK_SECONDS = 15
FORWARDED = frozenset(
    {
        "reply.delta",
        "reply.done",
        "message.created",
        "conversation.created",
        "conversation.updated",
        "conversation.deleted",
        "folder.created",
        "folder.updated",
        "folder.deleted",
    }
)
CLOSE_UNAUTHENTICATED = 4401


class ChatConsumer(AsyncJsonWebsocketConsumer):
    user_group = ""
    conversation: Conversation | None = None
    watchdog: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close()
            return
        self.user = user
        self.language = await database_sync_to_async(member_language)(user, self.scope)
        self.user_group = events.user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        generation.ensure_maintenance()
        self.watchdog = asyncio.get_running_loop().create_task(self.follow_session())
        await self.send_event(
            "hello", user={"id": user.pk, "name": user.get_username()}, limits=messaging.limits()
        )

    async def disconnect(self, code: int) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.user_group:
            await self.channel_layer.group_discard(self.user_group, self.channel_name)
        await self.unsubscribe()

    async def follow_session(self) -> None:
        """Close the socket once its session ends: logout elsewhere, deactivation, expiry."""
        session_key = self.scope["session"].session_key
        while True:
            await asyncio.sleep(SESSION_CHECK_SECONDS)
            if not await database_sync_to_async(sessions.is_current)(session_key, self.user):
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return

    # --- Frames in ------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Errors read in the member's language; a reply started here inherits it (tasks copy the context).
        with translation.override(self.language):
            await self.receive_frame(text_data)

    async def receive_frame(self, text_data: str | None) -> None:
        if text_data is None:
            await self.send_error("binary_frame", _("Binary frames are not accepted."))
            return
        if len(text_data) > settings.WEBSOCKET_MAX_FRAME_BYTES:
            await self.send_error("too_large", _("The frame is larger than the limit."))
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            content = None
        if not isinstance(content, dict):
            await self.send_error("bad_json", _("The frame is not a JSON object."))
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        ref = content.get("ref") if isinstance(content.get("ref"), str) else None
        if content.get("v", events.PROTOCOL_VERSION) != events.PROTOCOL_VERSION:
            await self.send_error("bad_version", _("Protocol version 1 is the one spoken here."), ref)
            return
        kind = content.get("type")
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return  # unknown types are ignored, so that either side can be newer
        try:
            await handler(self, content, ref)
        except RefusedError as refused:
            await self.send_error(refused.code, refused.detail, ref)
        except DatabaseError:
            # A locked or unreachable database fails this request, not the socket.
            logger.exception("a %s request failed in the database", content.get("type"))
            await self.send_error("unavailable", _("The server is busy. Please try again."), ref)

    async def handle_subscribe(self, content: dict[str, Any], ref: str | None) -> None:
        conversation = await self.conversation_from(content)
        await self.subscribe(conversation)
        await self.send_snapshot()

    async def handle_send(self, content: dict[str, Any], ref: str | None) -> None:
        plan = await database_sync_to_async(messaging.do_send_message)(
            self.user,
            content.get("conversation"),
            content.get("text"),
            content.get("parent"),
            content.get("model"),
            content.get("assistant"),
            attachments=content.get("attachments"),
            conversation_settings=content.get("settings"),
        )
        await self.start(plan)

    async def handle_regenerate(self, content: dict[str, Any], ref: str | None) -> None:
        plan = await database_sync_to_async(messaging.do_regenerate)(
            self.user, content.get("conversation"), content.get("message")
        )
        await self.start(plan)

    async def handle_edit(self, content: dict[str, Any], ref: str | None) -> None:
        plan = await database_sync_to_async(messaging.do_edit)(
            self.user, content.get("conversation"), content.get("message"), content.get("text")
        )
        await self.start(plan)

    async def handle_select(self, content: dict[str, Any], ref: str | None) -> None:
        conversation = await self.conversation_from(content)
        await database_sync_to_async(messaging.do_select)(
            self.user, conversation.public_id, content.get("message")
        )
        # Every socket on the conversation sends itself a fresh snapshot (live text included).
        await events.publish(
            events.conversation_group(conversation.public_id.hex),
            events.envelope("conversation.resync", conversation=str(conversation.public_id)),
        )

    async def handle_stop(self, content: dict[str, Any], ref: str | None) -> None:
        conversation = await self.conversation_from(content)
        message_id = content.get("message")
        if not await database_sync_to_async(_is_reply_of)(conversation, message_id):
            raise RefusedError("not_found", _("No such reply in this conversation."))
        await generation.stop(message_id)

    async def handle_resync(self, content: dict[str, Any], ref: str | None) -> None:
        conversation = await self.conversation_from(content)
        if not self.follows(conversation.pk):
            await self.subscribe(conversation)
        await self.send_snapshot()

    async def handle_history(self, content: dict[str, Any], ref: str | None) -> None:
        conversation = await self.conversation_from(content)
        data = await database_sync_to_async(messaging.load_history)(conversation, content.get("before"))
        await self.send_event("history", conversation=str(conversation.public_id), data=data, ref=ref)

    async def handle_ping(self, content: dict[str, Any], ref: str | None) -> None:
        await self.send_event("pong")

    handlers: dict[str, Callable[..., Awaitable[None]]] = {
        "subscribe": handle_subscribe,
        "send": handle_send,
        "regenerate": handle_regenerate,
        "edit": handle_edit,
        "select": handle_select,
        "stop": handle_stop,
        "resync": handle_resync,
        "history": handle_history,
        "ping": handle_ping,
    }

    # --- Helpers --------------------------------------------------------------------------------

    async def conversation_from(self, content: dict[str, Any]) -> Conversation:
        """Access is checked on every message, not only on subscribe."""
        conversation = await database_sync_to_async(messaging.conversation_for_user)(
            self.user, content.get("conversation")
        )
        if conversation is None:
            raise RefusedError("not_found", _("No such conversation."))
        return conversation

    def follows(self, conversation_id: int) -> bool:
        return self.conversation is not None and self.conversation.pk == conversation_id

    async def follow(self, conversation: Conversation) -> None:
        """Subscribe before a change is made, so that this socket hears of it like every other."""
        if not self.follows(conversation.pk):
            await self.subscribe(conversation)
            await self.send_snapshot()

    async def start(self, plan: messaging.ReplyPlan) -> None:
        """Follow the reply's conversation, announce the new messages (committed by now), then let
        the reply run on its own."""
        if not self.follows(plan.conversation_id):
            await self.follow(await database_sync_to_async(Conversation.objects.get)(pk=plan.conversation_id))
        generation.claim(plan)
        for group, event in plan.events:
            await events.publish(group, event)
        generation.launch(plan)

    async def subscribe(self, conversation: Conversation) -> None:
        await self.unsubscribe()
        self.conversation = conversation
        await self.channel_layer.group_add(
            events.conversation_group(conversation.public_id.hex), self.channel_name
        )

    async def unsubscribe(self) -> None:
        if self.conversation is not None:
            group = events.conversation_group(self.conversation.public_id.hex)
            await self.channel_layer.group_discard(group, self.channel_name)
            self.conversation = None

    async def send_snapshot(self) -> None:
        """Subscribed first, then read: deltas that arrive meanwhile carry seqs the client can skip."""
        conversation = self.conversation
        data = await database_sync_to_async(messaging.load_snapshot)(conversation)
        for message in data["messages"]:
            if message["status"] in Message.LIVE_STATUSES:
                state = await generation.live_state(message["id"])
                if state is not None:
                    message.update(state)
        await self.send_event("snapshot", conversation=str(conversation.public_id), data=data)

    async def send_event(self, type: str, **fields: Any) -> None:
        await self.send(text_data=json.dumps(events.envelope(type, **fields), ensure_ascii=False))

    async def send_error(self, code: str, detail: str, ref: str | None = None) -> None:
        await self.send_event("error", ref=ref, code=code, detail=detail)

    # --- Events from the channel layer: already encoded, forwarded as they are ------------------

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale database connections before every handler, a hop to the database
        # thread. Every query here goes through database_sync_to_async, which does that itself in
        # the thread, so frames and deltas skip the extra hop; encoded events go straight out.
        if message["type"] in FORWARDED:
            await self.forward(message)
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def forward(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["frame"])

    async def conversation_resync(self, event: dict[str, Any]) -> None:
        if self.conversation is not None:
            await self.send_snapshot()


def member_language(user: Any, scope: dict[str, Any]) -> str:
    """The member's chosen language, else the language cookie, else the browser's, as for pages."""
    chosen = Profile.objects.filter(user=user).values_list("language", flat=True).first()
    cookie = scope.get("cookies", {}).get(settings.LANGUAGE_COOKIE_NAME, "")
    accepted = dict(scope.get("headers", [])).get(b"accept-language", b"").decode("latin-1")
    candidates = [chosen, cookie] + [code for code, _ in parse_accept_lang_header(accepted)]
    for code in filter(None, candidates):
        try:
            return get_supported_language_variant(code)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE


def _is_reply_of(conversation: Conversation, message_id: Any) -> bool:
    return (
        isinstance(message_id, int)
        and conversation.messages.filter(pk=message_id, role=Message.Role.ASSISTANT).exists()
    )
