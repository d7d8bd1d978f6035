"""The floor of the fixed stack under chatsite: daphne, Channels' middleware and channel layer, and the
chat socket's protocol for one reply, with none of chatsite's own work (no database, no upstream, no
generation). bench/instructions.py --floor runs it in chatsite's place: what a request costs there is
what no change inside chatsite can take away.

Per `send` it sends what chatsite sends for a two-delta reply, through the same groups: two
`message.created` and a `conversation.updated`, then the two deltas (a second apart, as the bench's
upstream paces them) and `reply.done`, each frame through the channel layer; and two hops to the
database thread that do nothing, as chatsite makes one to save the send and one to save the reply.
"""

import asyncio
import json
import time
import uuid
from typing import Any

import django

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (after django.setup())
from channels.consumer import get_handler_name  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from conversations import events  # noqa: E402

PAUSE_AFTER_FIRST_DELTA = 1.0


def _nothing() -> None:
    return None


class FloorConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message: dict[str, Any]) -> None:
        # As in chatsite's consumer: no hop to the database thread before every handler.
        await getattr(self, get_handler_name(message))(message)

    async def connect(self) -> None:
        self.user_group = events.user_group(self.scope["user"].pk)
        self.group = ""
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        await self.send(text_data=json.dumps(events.envelope("hello")))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        content = json.loads(text_data or "{}")
        conversation = content.get("conversation")
        if content.get("type") == "subscribe":
            self.group = events.conversation_group(uuid.UUID(conversation).hex)
            await self.channel_layer.group_add(self.group, self.channel_name)
            await self.send(text_data=json.dumps(events.envelope("snapshot", conversation=conversation)))
        elif content.get("type") == "send":
            await database_sync_to_async(_nothing)()
            created = events.envelope(
                "message.created", conversation=conversation, data={"status": "pending"}
            )
            for group in (self.group, self.group, self.user_group):
                await self.forward_to(group, created)
            asyncio.get_running_loop().create_task(self.reply(conversation))

    async def reply(self, conversation: str) -> None:
        for seq in (1, 2):
            delta = {"v": events.PROTOCOL_VERSION, "type": "reply.delta", "conversation": conversation}
            await self.forward_to(self.group, delta | {"seq": seq, "content": f"{time.time_ns()} "})
            if seq == 1:
                await asyncio.sleep(PAUSE_AFTER_FIRST_DELTA)
        await database_sync_to_async(_nothing)()
        done = events.envelope("reply.done", conversation=conversation, seq=2, data={"status": "complete"})
        await self.forward_to(self.group, done)

    async def forward_to(self, group: str, event: dict[str, Any]) -> None:
        await self.channel_layer.group_send(group, events.frame(event))

    async def reply_delta(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["frame"])

    reply_done = message_created = reply_delta


application = ProtocolTypeRouter(
    {
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("ws/chat/", FloorConsumer.as_asgi())]))
        )
    }
)
