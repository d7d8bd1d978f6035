"""The one client for OpenAI-compatible Chat Completions providers: chat, titles, tools, gateway, benchmark.

Every failure becomes an UpstreamError with a stable code. Retries (exponential backoff with full
jitter, Retry-After honoured) happen only before the first chunk reaches the caller, never after.

Timeouts, from settings at call time: UPSTREAM_CONNECT_TIMEOUT (TCP connect), UPSTREAM_FIRST_BYTE_TIMEOUT
(until the response headers and the first event), UPSTREAM_IDLE_TIMEOUT (silence between chunks) and
UPSTREAM_TOTAL_TIMEOUT (the whole call, retries included).

A little over 400 lines: the error mapping and the timeouts belong with the one client they govern.
"""

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from django.conf import settings
from django.utils.translation import gettext as _
from httpx_sse import ServerSentEvent, aconnect_sse

from . import upstream_transport

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_BASE_DELAY = 0.5
RETRY_MAX_DELAY = 8.0
RETRY_AFTER_CAP = 30.0
ERROR_BODY_LIMIT = 64 * 1024
RETRYABLE = {"rate_limited", "server_error", "connect_timeout", "first_byte_timeout", "connection"}
# After [DONE] a body has only its end left, which comes with it or just after. Read that far, briefly,
# so that the connection goes back to the pool: httpx drops a connection closed mid-body.
END_OF_BODY_SECONDS = 0.1
EVENTS_AFTER_DONE = 4


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # e.g. http://127.0.0.1:8001/v1
    api_key: str = field(default="", repr=False)

    def url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path}"


class UpstreamError(Exception):
    """A provider call that failed; `code` is stable, `detail` is the provider's own words."""

    def __init__(
        self,
        code: str,
        status: int | None = None,
        detail: str = "",
        *,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"{code} {status or ''} {detail}".strip())
        self.code = code
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.retryable = code in RETRYABLE if retryable is None else retryable

    def user_message(self) -> str:
        detail = self.detail[:300]
        messages = {
            "auth": _("The provider rejected the API key (%(status)s)."),
            "not_found": _("The provider does not know this model or address (%(status)s)."),
            "too_large": _(
                "The request is too large for the provider (%(status)s). "
                "Try a shorter conversation or smaller images."
            ),
            "rate_limited": _("The provider is limiting requests (%(status)s). Try again in a moment.")
            if (self.retry_after or 0) < 1
            else _("The provider is limiting requests (%(status)s). Try again in %(seconds)s s."),
            "bad_request": _("The provider refused the request (%(status)s): %(detail)s"),
            "server_error": _("The provider had an internal error (%(status)s)."),
            "connect_timeout": _("Could not connect to the provider in time."),
            "first_byte_timeout": _("The provider did not start answering in time."),
            "idle_timeout": _("The provider stopped sending in the middle of the reply."),
            "total_timeout": _("The reply took longer than the time limit."),
            "connection": _("Could not reach the provider."),
            "truncated": _("The provider's reply was cut off."),
            "malformed": _("The provider sent a response that could not be read."),
            "stream_error": _("The provider reported an error: %(detail)s"),
        }
        message = messages.get(self.code)
        if message is None:
            return detail or _("The request to the provider failed.")
        seconds = round(self.retry_after or 0)
        return message % {"status": self.status or "-", "detail": detail, "seconds": seconds}


_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes a good part of a second; async_to_sync callers get a loop, and so a
    # client, per call.
    return httpx.create_ssl_context()


def get_client() -> httpx.AsyncClient:
    """The pooled client of the running event loop, built on first use (a client is bound to one loop)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        for ended in [other for other in _clients if other.is_closed()]:
            del _clients[ended]
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=256, keepalive_expiry=30)
        client = httpx.AsyncClient(
            verify=_ssl_context(),
            limits=limits,
            transport=upstream_transport.transport(ssl_context=_ssl_context(), limits=limits),
            headers={"User-Agent": "chatsite"},
            follow_redirects=False,
        )
        _clients[loop] = client
    return client


async def close_client() -> None:
    """Close the running loop's client (at shutdown, and between tests)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


@dataclass(frozen=True)
class _Limits:
    connect: float
    first_byte: float
    idle: float
    total: float
    max_retries: int

    @classmethod
    def from_settings(cls) -> "_Limits":
        return cls(
            connect=settings.UPSTREAM_CONNECT_TIMEOUT,
            first_byte=settings.UPSTREAM_FIRST_BYTE_TIMEOUT,
            idle=settings.UPSTREAM_IDLE_TIMEOUT,
            total=settings.UPSTREAM_TOTAL_TIMEOUT,
            max_retries=settings.UPSTREAM_MAX_RETRIES,
        )

    def httpx_timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=read, write=self.idle, pool=self.first_byte)


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _headers(endpoint: Endpoint, request_id: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    if request_id:
        headers["X-Request-ID"] = request_id
    return headers


async def stream_chat(
    endpoint: Endpoint, payload: dict[str, Any], *, request_id: str
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield the parsed chunks of one streamed chat completion, the trailing usage chunk included."""
    limits = _Limits.from_settings()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.total
    options = {**(payload.get("stream_options") or {}), "include_usage": True}
    content = _encode({**payload, "stream": True, "stream_options": options})

    def attempt() -> Awaitable[_OpenStream]:
        return _open_stream(endpoint, content, request_id, limits, deadline)

    stack, events, event, chunk = await _retrying(attempt, limits, deadline, request_id)
    async with stack:
        watch = _Deadline(loop, deadline)
        stack.callback(watch.close)
        last_choices: list[dict[str, Any]] = []
        try:
            while event is not None:
                if event.data == "[DONE]":
                    await _read_to_end(events)
                    return
                if chunk is not None:
                    last_choices = chunk.get("choices") or last_choices  # the usage chunk has none
                    yield chunk
                event = await watch.next_event(events)
                chunk = _chunk_of(event, endpoint.api_key)
            # Some servers close the stream after the last chunk without [DONE]; the reply is whole if
            # its finish_reason came. Without one, the stream was cut.
            if not any(choice.get("finish_reason") for choice in last_choices):
                raise UpstreamError("truncated", 200, "The stream ended without [DONE].")
        except UpstreamError as error:
            logger.warning("upstream stream failed request_id=%s code=%s", request_id, error.code)
            raise


async def _read_to_end(events: AsyncIterator[ServerSentEvent]) -> None:
    """Read past [DONE] to the end of the body, so that the next request reuses the connection: with
    a provider, one TLS handshake fewer per reply. A server that goes on talking is cut off as before."""
    with contextlib.suppress(Exception):  # a reply that reached [DONE] is whole whatever comes after
        async with asyncio.timeout(END_OF_BODY_SECONDS):
            for _ in range(EVENTS_AFTER_DONE):
                if await anext(events, None) is None:
                    return


# An open stream: what closes it, its events, the first event and that event's chunk.
_OpenStream = tuple[
    AsyncExitStack, AsyncIterator[ServerSentEvent], ServerSentEvent | None, dict[str, Any] | None
]


async def _open_stream(
    endpoint: Endpoint, content: bytes, request_id: str, limits: _Limits, deadline: float
) -> _OpenStream:
    """Connect, check the status and read the first event: the part of a stream that may be retried."""
    loop = asyncio.get_running_loop()
    first_deadline = min(deadline, loop.time() + limits.first_byte)
    stack = AsyncExitStack()
    responded = False
    try:
        async with asyncio.timeout_at(first_deadline):
            source = await stack.enter_async_context(
                aconnect_sse(
                    get_client(),
                    "POST",
                    endpoint.url("chat/completions"),
                    content=content,
                    headers=_headers(endpoint, request_id),
                    timeout=limits.httpx_timeout(read=limits.idle),
                )
            )
            responded = True
            response = source.response
            logger.debug("upstream stream request_id=%s status=%s", request_id, response.status_code)
            if response.status_code != 200:
                raise await _error_from_response(response, endpoint.api_key)
            # httpx-sse refuses other content types with SSEError; say what arrived instead.
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise UpstreamError("malformed", 200, f"Expected an event stream, got {content_type!r}.")
            events = source.aiter_sse()
            stack.push_async_callback(events.aclose)
            event = await anext(events, None)
            # Parsed here: an error object before any output is a refusal like a status code, retried
            # when the provider is limiting or failing, since nothing has reached the member yet.
            chunk = _chunk_of(event, endpoint.api_key)
    except TimeoutError:
        await stack.aclose()
        code = "total_timeout" if first_deadline >= deadline else "first_byte_timeout"
        raise UpstreamError(code) from None
    except httpx.HTTPError as error:
        await stack.aclose()
        raise _transport_error(error, started=False, responded=responded) from error
    except BaseException:
        await stack.aclose()
        raise
    return stack, events, event, chunk


class _Deadline:
    """The total deadline of a stream: one timer per stream, not one per chunk.

    It cancels the iterating task only while the stream waits on the provider. A timeout context held
    across the generator's `yield` would fire inside the caller's own work (its database writes, its
    sends); a fresh asyncio.timeout per read would cost a timer per chunk. Same cancel-and-uncancel
    rules as asyncio.timeout.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self.loop, self.when = loop, when
        self.task: asyncio.Task[Any] | None = None
        self.waiting = self.fired = False
        self.handle = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        if self.waiting and self.task is not None:
            self.fired = True
            self.task.cancel()

    def close(self) -> None:
        self.handle.cancel()

    async def next_event(self, events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent | None:
        if self.loop.time() >= self.when:
            raise UpstreamError("total_timeout")
        self.task = asyncio.current_task()
        cancelling = self.task.cancelling() if self.task else 0
        self.waiting = True
        try:
            event = await anext(events, None)
        except asyncio.CancelledError:
            if self.fired and self.task and self.task.uncancel() <= cancelling:
                raise UpstreamError("total_timeout") from None
            raise
        except httpx.HTTPError as error:
            raise _transport_error(error, started=True, responded=True) from error
        finally:
            self.waiting = False
        if self.fired and self.task and self.task.uncancel() <= cancelling:
            # Something below swallowed the cancellation; the deadline has still passed.
            raise UpstreamError("total_timeout")
        return event


def _chunk_of(event: ServerSentEvent | None, api_key: str) -> dict[str, Any] | None:
    """The chunk an event carries; None for the stream's end, [DONE] and events without data."""
    if event is None or not event.data or event.data == "[DONE]":
        return None
    return _parse_chunk(event.data, api_key)


def _parse_chunk(data: str, api_key: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise UpstreamError("malformed", 200, "A chunk was not valid JSON.") from None
    if not isinstance(chunk, dict):
        raise UpstreamError("malformed", 200, "A chunk was not a JSON object.")
    if chunk.get("error"):
        raise _stream_error(chunk["error"], api_key)
    return chunk


def _stream_error(error: Any, api_key: str) -> UpstreamError:
    """An error object inside a 200 stream. Its type or code says what kind (the guide's error body):
    a rate limit reads as one; other errors keep the provider's words. Only the first event's error
    is retried (_open_stream): later ones end a reply that has already been shown."""
    detail = _error_message(error, api_key)
    kind = " ".join(str(error.get(key) or "") for key in ("type", "code")) if isinstance(error, dict) else ""
    if "rate_limit" in kind:
        return UpstreamError("rate_limited", 429, detail)
    return UpstreamError("stream_error", 200, detail, retryable="server_error" in kind)


async def complete_chat(endpoint: Endpoint, payload: dict[str, Any], *, request_id: str) -> dict[str, Any]:
    """One chat completion, not streamed. The reply must arrive within the first-byte timeout."""
    limits = _Limits.from_settings()
    deadline = asyncio.get_running_loop().time() + limits.total
    body = {key: value for key, value in payload.items() if key != "stream_options"}
    content = _encode({**body, "stream": False})

    def attempt() -> Awaitable[Any]:
        return _fetch_json(endpoint, "POST", "chat/completions", content, request_id, limits, deadline)

    data = await _retrying(attempt, limits, deadline, request_id)
    if not isinstance(data, dict):
        raise UpstreamError("malformed", 200, "The completion was not a JSON object.")
    if data.get("error"):
        raise UpstreamError("stream_error", 200, _error_message(data["error"], endpoint.api_key))
    return data


async def list_models(endpoint: Endpoint) -> list[dict[str, Any]]:
    """The provider's models: the `data` list of GET /models."""
    limits = _Limits.from_settings()
    deadline = asyncio.get_running_loop().time() + limits.total

    def attempt() -> Awaitable[Any]:
        return _fetch_json(endpoint, "GET", "models", None, None, limits, deadline)

    data = await _retrying(attempt, limits, deadline, None)
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise UpstreamError("malformed", 200, "The model list has no data array.")
    return [item for item in models if isinstance(item, dict) and "id" in item]


async def _fetch_json(
    endpoint: Endpoint,
    method: str,
    path: str,
    content: bytes | None,
    request_id: str | None,
    limits: _Limits,
    deadline: float,
) -> Any:
    loop = asyncio.get_running_loop()
    first_deadline = min(deadline, loop.time() + limits.first_byte)
    client = get_client()
    request = client.build_request(
        method,
        endpoint.url(path),
        content=content,
        headers=_headers(endpoint, request_id),
        timeout=limits.httpx_timeout(read=limits.first_byte),
    )
    responded = False
    try:
        async with asyncio.timeout_at(first_deadline):
            response = await client.send(request, stream=True)
        responded = True
        try:
            logger.debug(
                "upstream %s %s request_id=%s status=%s", method, path, request_id, response.status_code
            )
            async with asyncio.timeout_at(deadline):
                if response.status_code != 200:
                    raise await _error_from_response(response, endpoint.api_key)
                raw = await response.aread()
        finally:
            await response.aclose()
    except TimeoutError:
        code = "first_byte_timeout" if not responded and first_deadline < deadline else "total_timeout"
        raise UpstreamError(code) from None
    except httpx.HTTPError as error:
        raise _transport_error(error, started=responded, responded=responded) from error
    try:
        return json.loads(raw)
    except ValueError:
        raise UpstreamError("malformed", 200, "The response was not valid JSON.") from None


async def _retrying(
    attempt: Callable[[], Awaitable[T]], limits: _Limits, deadline: float, request_id: str | None
) -> T:
    loop = asyncio.get_running_loop()
    retries = 0
    while True:
        try:
            return await attempt()
        except UpstreamError as error:
            delay = _retry_delay(error, retries)
            # Asked to wait longer than a member would watch a spinner: say so now, with the wait.
            too_long = error.retry_after is not None and error.retry_after > RETRY_AFTER_CAP
            if (
                not error.retryable
                or too_long
                or retries >= limits.max_retries
                or loop.time() + delay >= deadline
            ):
                logger.warning(
                    "upstream failed request_id=%s code=%s status=%s attempts=%d",
                    request_id,
                    error.code,
                    error.status,
                    retries + 1,
                )
                raise
            logger.info(
                "upstream retry request_id=%s code=%s status=%s in %.2fs",
                request_id,
                error.code,
                error.status,
                delay,
            )
            retries += 1
            await asyncio.sleep(delay)


def _retry_delay(error: UpstreamError, retries: int) -> float:
    if error.retry_after is not None:
        return min(max(error.retry_after, 0.0), RETRY_AFTER_CAP)
    return random.uniform(0, min(RETRY_MAX_DELAY, RETRY_BASE_DELAY * 2**retries))


async def _error_from_response(response: httpx.Response, api_key: str) -> UpstreamError:
    """The mapped error of a non-200 response, its detail taken from the guide's error body."""
    status = response.status_code
    raw = b""
    async for piece in response.aiter_bytes():
        raw += piece
        if len(raw) >= ERROR_BODY_LIMIT:
            break
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        detail = _error_message(body["error"], api_key)
    elif isinstance(body, dict) and isinstance(body.get("message"), str):
        detail = scrub(body["message"], api_key)
    else:
        detail = scrub(raw.decode("utf-8", "replace"), api_key)[:300].strip()
    if status in (401, 403):
        code = "auth"
    elif status == 404:
        code = "not_found"
    elif status == 413:
        code = "too_large"
    elif status == 429:
        code = "rate_limited"
    elif status >= 500:
        code = "server_error"
    else:
        code = "bad_request"
    return UpstreamError(code, status, detail, retry_after=_retry_after(response.headers))


def _retry_after(headers: httpx.Headers) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _transport_error(error: httpx.HTTPError, *, started: bool, responded: bool) -> UpstreamError:
    """Map an httpx failure; `responded`: the status line arrived, `started`: the first event did."""
    detail = type(error).__name__
    if isinstance(error, httpx.ConnectTimeout | httpx.PoolTimeout):
        return UpstreamError("connect_timeout", detail=detail)
    if isinstance(error, httpx.ReadTimeout):
        return UpstreamError("idle_timeout" if started else "first_byte_timeout", detail=detail)
    if isinstance(error, httpx.DecodingError):
        return UpstreamError("malformed", 200, detail)
    if isinstance(error, httpx.UnsupportedProtocol):
        return UpstreamError("connection", detail=detail, retryable=False)
    if responded and isinstance(error, httpx.TransportError):
        return UpstreamError("truncated", 200, detail)
    return UpstreamError("connection", detail=detail)


def _error_message(error: Any, api_key: str) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return scrub(str(message or ""), api_key)[:1000]


def scrub(text: str, secret: str) -> str:
    """A secret masked in text from elsewhere: providers sometimes quote the key they refused, tool
    endpoints may echo their request (tools.py). Scrub before cutting text short: a cut through
    the key would leave a part of it that no longer matches; a body read only in part may itself end
    inside the key, so a trailing piece of it goes too."""
    if not secret:
        return text
    text = text.replace(secret, "***")
    for size in range(len(secret) - 1, 3, -1):
        if text.endswith(secret[:size]):
            return text[:-size] + "***"
    return text
