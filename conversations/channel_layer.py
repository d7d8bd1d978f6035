"""The channel layers: the in-memory one (one process, the embedded default), made cheap per message,
and channels_redis with its connections bounded (REDIS_URL; at the end of this file).

Channels' InMemoryChannelLayer scans every channel and group member for expired entries on each send
and receive, and starts a task and deep-copies the message for each group member, so one delta to one
conversation costs time in proportion to all open sockets. Here expiry is cleaned at most once a
second, and group members get a shallow copy queued directly: every message chatsite sends is a flat
dict of strings and numbers.
"""

import asyncio
import contextlib
import time
import weakref
from typing import Any

import channels_redis.core
from channels.layers import InMemoryChannelLayer

CLEAN_EVERY_SECONDS = 1.0


class LocalChannelLayer(InMemoryChannelLayer):
    _cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at >= CLEAN_EVERY_SECONDS:
            self._cleaned_at = now
            super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        expires = time.time() + self.expiry
        for channel in list(self.groups.get(group, ())):
            queue = self.channels.get(channel)
            if queue is None:
                queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
            # As in Channels, a full channel drops group messages; the browser sees the gap in seq.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((expires, dict(message)))


class RedisChannelLayer(channels_redis.core.RedisChannelLayer):
    """channels_redis with the number of Redis connections in use per process bounded by waiting.

    Since redis-py 6 a pool beyond its max_connections (100 unless set) raises MaxConnectionsError
    instead of waiting. A burst of sends (200 replies starting at once, each announcing itself and
    streaming) asks for more connections than that in the same instant, and the error closed members'
    sockets. Here a send waits its turn for one of `connections` instead. Receiving is not gated: each
    process blocks on one connection for its sockets' messages.
    """

    # Left to receiving, channel creation and the cache's own pool of the same server.
    RESERVED = 10
    # A socket's receive blocks in Redis this long at a time. channels_redis's 5 s equals redis-py 8's
    # default read timeout, which then cut the read and closed idle members' sockets with an error.
    brpop_timeout = 2

    def __init__(self, *args: Any, connections: int = 100, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = connections
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(max(1, self.connections - self.RESERVED))
        return gate

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        async with self._gate():
            await super().send(channel, message)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        async with self._gate():
            await super().group_send(group, message)

    async def group_add(self, group: str, channel: str) -> None:
        async with self._gate():
            await super().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        async with self._gate():
            await super().group_discard(group, channel)
