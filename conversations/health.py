"""GET /health/: can this process reach its database, cache, channel layer and upstream?

Public and cheap: no login and no session, and each check answers with a word ("ok", "timeout",
"error" or an upstream error code), never with addresses or keys; the details go to the log.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from conversations import registry, upstream

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 3.0
# Load balancers poll often; the provider hears from each process at most this often.
UPSTREAM_CACHE_SECONDS = 10.0

# The last upstream answer: (endpoint, monotonic time, result); a changed provider is checked afresh.
_last_upstream: tuple[upstream.Endpoint, float, str] | None = None


@never_cache
@require_GET
async def health(request: HttpRequest) -> JsonResponse:
    names = ["database", "cache", "channel_layer", "upstream"]
    results = await asyncio.gather(
        _run("database", sync_to_async(_check_database)()),
        _run("cache", _check_cache()),
        _run("channel_layer", _check_channel_layer()),
        _run("upstream", _check_upstream()),
    )
    checks = dict(zip(names, results, strict=True))
    healthy = all(result == "ok" for result in results)
    return JsonResponse(
        {"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503
    )


async def _run(name: str, check: Awaitable[str]) -> str:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        logger.warning("Health check %s timed out", name)
        return "timeout"
    except Exception:
        logger.exception("Health check %s failed", name)
        return "error"


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


async def _check_cache() -> str:
    key = f"health:{uuid.uuid4().hex}"
    await cache.aset(key, "ok", 10)
    value = await cache.aget(key)
    await cache.adelete(key)
    return "ok" if value == "ok" else "error"


async def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "error"
    channel = await layer.new_channel()
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "health.ping", "token": token})
    message = await layer.receive(channel)
    return "ok" if message.get("token") == token else "error"


async def _check_upstream() -> str:
    global _last_upstream
    provider = await sync_to_async(registry.default_provider)()
    if provider is None:
        return "no_provider"
    endpoint = await sync_to_async(registry.endpoint_for)(provider)
    if _last_upstream and _last_upstream[0] == endpoint:
        _endpoint, checked_at, result = _last_upstream
        if time.monotonic() - checked_at < UPSTREAM_CACHE_SECONDS:
            return result
    try:
        await asyncio.wait_for(upstream.list_models(endpoint), CHECK_TIMEOUT - 0.5)
        result = "ok"
    except TimeoutError:
        result = "timeout"
    except upstream.UpstreamError as error:
        logger.warning("Health check upstream failed: %s %s", error.code, error.status or "")
        result = error.code
    _last_upstream = (endpoint, time.monotonic(), result)
    return result
