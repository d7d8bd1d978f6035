"""A small client of docs/websocket.md for tests: it applies deltas by seq exactly as the browser does."""

import json
from typing import Any

from channels.testing import WebsocketCommunicator

from chatsite.asgi import application


def offline(**directive: Any) -> str:
    """A message that makes the offline upstream answer as told."""
    return "!offline " + json.dumps(directive, ensure_ascii=False)


class Socket:
    def __init__(self, cookie: bytes | None, origin: bytes = b"http://localhost") -> None:
        headers = [(b"origin", origin)]
        if cookie:
            headers.append((b"cookie", cookie))
        self.communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
        self.hello: dict[str, Any] = {}
        # What the browser keeps per reply: its text and the last seq applied.
        self.texts: dict[int, str] = {}
        self.last_seq: dict[int, int] = {}
        self.gaps = 0

    async def open(self) -> bool:
        connected, _ = await self.communicator.connect(timeout=10)
        if connected:
            self.hello = await self.receive()
        return connected

    async def close(self) -> None:
        await self.communicator.disconnect()

    async def send(self, **frame: Any) -> None:
        await self.communicator.send_json_to(frame)

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        event = await self.communicator.receive_json_from(timeout)
        self.apply(event)
        return event

    async def until(self, type: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        while True:
            event = await self.receive(timeout)
            if event["type"] == type and all(event.get(k) == v for k, v in match.items()):
                return event

    def apply(self, event: dict[str, Any]) -> None:
        if event["type"] == "snapshot":
            for message in event["data"]["messages"]:
                if message["role"] == "assistant":
                    self.texts[message["id"]] = text_of(message)
                    self.last_seq[message["id"]] = message["seq"]
        elif event["type"] == "reply.delta":
            message_id, seq = event["message"], event["seq"]
            last = self.last_seq.get(message_id, 0)
            if seq == last + 1:
                self.texts[message_id] = self.texts.get(message_id, "") + event.get("content", "")
                self.last_seq[message_id] = seq
            elif seq > last + 1:
                self.gaps += 1
        elif event["type"] == "reply.done":
            self.texts[event["message"]] = text_of(event["data"])
            self.last_seq[event["message"]] = event["seq"]


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")
