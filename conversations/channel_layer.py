"""The in-memory channel layer (one process, the embedded default), made cheap per message.

Channels' InMemoryChannelLayer scans every channel and group member for expired entries on each send
and receive, and starts a task and deep-copies the message for each group member, so one delta to one
conversation costs time in proportion to all open sockets. Here expiry is cleaned at most once a
second, and group members get a shallow copy queued directly: every message chatsite sends is a flat
dict of strings and numbers.
"""

import asyncio
import contextlib
import time
from typing import Any

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
