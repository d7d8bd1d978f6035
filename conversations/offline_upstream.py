"""The built-in OpenAI-compatible upstream: the offline demo, the test upstream and the benchmark upstream.

A plain ASGI application on the standard library alone, so daphne serves it without Django:

    daphne -b 127.0.0.1 -p 8001 conversations.offline_upstream:application

Replies are deterministic. A request may dictate timing and faults with a directive, given either as a
top-level "offline" object in the body or as a last user message that reads `!offline {...}`:

    reply, chunks          exact reply text, or the exact deltas that make it up
    words                  N generated words (long replies)
    reasoning              text streamed first as delta.reasoning_content
    tool_calls             [{"name": ..., "arguments": {...} or "..."}], unless the last message is a tool result
    tool_rounds N          ask for the tool_calls in N requests in a row (default 1), then answer
    pace_ms, first_byte_ms delay between deltas; delay before the response headers
    status, retry_after    fail with this HTTP status (and Retry-After); with fail_times N, only the first N
    fail_times, fail_key   requests sharing fail_key (default: the X-Request-ID) fail
    drop_after N           close the connection after N deltas (reasoning, content and tool-call deltas alike)
    malformed_after N      send a line of invalid JSON after N deltas, then end the stream
    error_after N          send `data: {"error": ...}` after N deltas, then end the stream; its type and
    error_status           code are those of error_status's HTTP error (default 500)
    stall_after, stall_ms  go quiet for stall_ms after N deltas
    no_usage               leave out the usage chunk
    no_done                end the stream without `data: [DONE]` (after the finish and usage chunks)
    finish_reason          the last chunk's finish_reason instead of stop or length ("content_filter")
    timestamps N           N deltas, each its own send time as str(time.time_ns()) + " " (benchmarks)
    cached_tokens N        reported in usage.prompt_tokens_details

A body with "n": N (up to 8) is answered with N choices, each beginning "Version k of N." and streamed
interleaved by choice index; usage counts the deltas of all of them.
    title                  for the conversation's title request (below): its exact text, or a directive

A title request (conversations/titles.py: the last user message begins "Write a short title for the
conversation above") is answered with the first words of the conversation's first user message, each
capitalized; when that message is itself a directive, with "Offline demo chat", or as its `title`
says: `!offline {"reply": "Hi", "title": "Greetings"}`, or `"title": {"status": 503}` to fail it.

The ledger records each chat request by X-Request-ID: GET /_offline/requests[?request_id=...],
GET /_offline/requests/<request_id> (with the body, never the Authorization header), DELETE clears.

Longer than the usual 400 lines: one self-contained server that daphne loads by path, and splitting
it would scatter one small protocol across files that nothing else imports.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import os
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# What the offline models take (the chatsite extension of /models lists it; the registry stores it).
CHAT_PARAMETERS = [
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
    "frequency_penalty", "seed", "n", "logit_bias", "user", "tool_choice", "response_format",
]  # fmt: skip

MODELS: dict[str, dict[str, Any]] = {
    "offline-chat": {
        "display_name": "Offline demo (chat)",
        "vision": False,
        "tools": True,
        "json": True,
        "reasoning": False,
        "context_window": 32768,
        "parameters": CHAT_PARAMETERS,
    },
    "offline-vision": {
        "display_name": "Offline demo (vision)",
        "vision": True,
        "tools": True,
        "json": True,
        "reasoning": False,
        "context_window": 32768,
        "parameters": CHAT_PARAMETERS,
    },
    "offline-reasoner": {
        "display_name": "Offline demo (reasoning)",
        "vision": False,
        "tools": True,
        "json": True,
        "reasoning": True,
        "context_window": 65536,
        "parameters": [
            "max_completion_tokens",
            "seed",
            "n",
            "user",
            "reasoning_effort",
            "tool_choice",
            "response_format",
        ],
    },
}

# Bodies as in the API guide's section on common errors.
ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Bad request", "invalid_request_error", "invalid_request"),
    401: ("Invalid API key provided", "invalid_request_error", "invalid_api_key"),
    403: ("Permission denied", "invalid_request_error", "permission_denied"),
    404: ("Model not found", "invalid_request_error", "model_not_found"),
    413: ("Request too large", "invalid_request_error", "request_too_large"),
    429: ("Rate limit exceeded", "rate_limit_error", "rate_limit_exceeded"),
    500: ("Internal server error", "server_error", "internal_error"),
    502: ("Bad gateway", "server_error", "bad_gateway"),
    503: ("Service unavailable", "server_error", "service_unavailable"),
}

API_KEY = os.environ.get("OFFLINE_UPSTREAM_API_KEY", "")
MAX_BODY = int(os.environ.get("OFFLINE_UPSTREAM_MAX_BODY", 4 * 1024 * 1024))
DEFAULT_PACE_MS = float(os.environ.get("OFFLINE_UPSTREAM_PACE_MS", 0))
SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
IMAGE_TOKENS = 85
_VOCABULARY_TEXT = (
    "offline demo words flow steadily through the socket while every reply stays the same for the same "
    "question so tests and benchmarks can compare what was sent with what arrived"
)
VOCABULARY = _VOCABULARY_TEXT.split()

TITLE_REQUEST = "Write a short title for the conversation above"
OFFLINE_TITLE = "Offline demo chat"
TITLE_WORDS = 6

_WORD = re.compile(r"\s*\S+")
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"
FULL_SPEED_BATCH = 16
MAX_WORDS = 200_000
MAX_CHOICES = 8  # "n" above this is refused


def error_body(status: int, message: str | None = None, code: str | None = None) -> dict[str, Any]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    kind = "server_error" if status >= 500 else "invalid_request_error"
    default_message, kind, default_code = ERRORS.get(status, (phrase, kind, "error"))
    return {"error": {"message": message or default_message, "type": kind, "code": code or default_code}}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Ledger:
    """The last requests, bounded in count and in the bytes of the bodies kept."""

    def __init__(self, size: int = 10_000, body_budget: int = 64 * 1024 * 1024) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=size)
        # Entries still holding a body, oldest first: always a suffix-ordered subset of entries.
        self.bodies: deque[tuple[dict[str, Any], int]] = deque()
        self.body_budget = body_budget
        self.body_bytes = 0

    def add(self, entry: dict[str, Any], body_size: int = 0) -> None:
        if len(self.entries) == self.entries.maxlen:
            oldest = self.entries.popleft()
            if self.bodies and self.bodies[0][0] is oldest:
                self.body_bytes -= self.bodies.popleft()[1]
        self.entries.append(entry)
        if entry.get("body") is not None:
            self.bodies.append((entry, body_size))
            self.body_bytes += body_size
            while self.body_bytes > self.body_budget and len(self.bodies) > 1:
                old, size = self.bodies.popleft()
                old["body"], old["body_dropped"] = None, True
                self.body_bytes -= size

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The latest request with this id (retries share one)."""
        return next((entry for entry in reversed(self.entries) if entry["request_id"] == request_id), None)

    def clear(self) -> None:
        self.entries.clear()
        self.bodies.clear()
        self.body_bytes = 0


LEDGER = Ledger()
_failures: dict[str, int] = {}


class Exchange:
    """One HTTP request: its ledger entry, and the means to answer it or notice its client leave."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.receive, self.send = receive, send
        self.headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        self.request_id = self.headers.get("x-request-id") or f"offline-{uuid.uuid4().hex}"
        self.gone: asyncio.Future[Any] | None = None
        self.entry: dict[str, Any] = {
            "request_id": self.request_id,
            "model": None,
            "stream": False,
            "status": None,
            "usage": None,
            "sent_usage": None,
            "outcome": "in_progress",
            "received_at": time.time(),
            "finished_at": None,
            "headers": {k: v for k, v in self.headers.items() if k not in SECRET_HEADERS},
            "body": None,
        }

    async def read_body(self) -> bytes | None:
        """The request body, or None when it is over MAX_BODY."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return None
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    def watch_disconnect(self) -> None:
        self.gone = asyncio.ensure_future(self.receive())

    def left(self) -> bool:
        return self.gone is not None and self.gone.done()

    async def pause(self, seconds: float) -> None:
        # Short pauses (the pace between deltas) just sleep: asyncio.wait costs several times more, and
        # a departed client is noticed one pace later. Long ones end as soon as the client leaves.
        if seconds < 0.25 or self.gone is None:
            await asyncio.sleep(max(seconds, 0))
        else:
            await asyncio.wait((self.gone,), timeout=seconds)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.entry["status"] = status
        headers = [*headers, (b"x-request-id", self.request_id.encode("latin-1"))]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = True) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, payload: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        data = _dumps(payload)
        length = str(len(data)).encode()
        await self.start(
            status, [(b"content-type", b"application/json"), (b"content-length", length), *headers]
        )
        await self.body(data, more=False)

    async def fail(
        self, status: int, message: str | None = None, code: str | None = None, retry_after: Any = None
    ) -> None:
        self.finish("error")
        headers = () if retry_after is None else ((b"retry-after", str(retry_after).encode()),)
        await self.json(status, error_body(status, message, code), headers)

    def finish(
        self, outcome: str, usage: dict[str, Any] | None = None, sent: dict[str, Any] | None = None
    ) -> None:
        self.entry.update(outcome=outcome, usage=usage, sent_usage=sent, finished_at=time.time())

    async def cut(self) -> None:
        """Close the connection mid-response, as a provider that crashes would.

        ASGI cannot say so; daphne's `send` is a partial over its twisted request, whose transport can
        close without the final chunk. The bytes already sent still arrive (an abort would discard
        them), then the socket closes. Elsewhere the body just ends early: truncated all the same.
        """
        await self.body(b"")  # twisted writes the status line and headers with the first body write
        request = (getattr(self.send, "args", None) or (None,))[0]
        transport = getattr(getattr(request, "channel", None), "transport", None)
        if transport is None:
            await self.body(b"", more=False)
        else:
            transport.loseConnection()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    exchange = Exchange(scope, receive, send)
    method, path = scope["method"], scope["path"]
    try:
        if path.startswith("/_offline/requests"):
            await _ledger_view(exchange, method, path, scope.get("query_string", b"").decode())
        elif path == "/v1/models" and method == "GET":
            if _authorized(exchange):
                await exchange.json(200, models_list())
            else:
                await exchange.fail(401)
        elif path == "/v1/chat/completions" and method == "POST":
            await _chat(exchange)
        elif path in {"/v1/models", "/v1/chat/completions"}:
            await exchange.fail(405, "Method not allowed", "method_not_allowed")
        else:
            await exchange.fail(404, f"Unknown path {path}", "not_found")
    finally:
        if exchange.gone is not None and not exchange.gone.done():
            exchange.gone.cancel()


def models_list() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": 1700000000,
                "owned_by": "chatsite-offline",
                "chatsite": caps,
            }
            for name, caps in MODELS.items()
        ],
    }


def _authorized(exchange: Exchange) -> bool:
    if not API_KEY:
        return True
    given = exchange.headers.get("authorization", "").encode()
    return hmac.compare_digest(given, f"Bearer {API_KEY}".encode())


async def _ledger_view(exchange: Exchange, method: str, path: str, query: str) -> None:
    request_id = path.removeprefix("/_offline/requests").strip("/")
    if method == "DELETE" and not request_id:
        LEDGER.clear()
        _failures.clear()
        await exchange.json(200, {"cleared": True})
    elif method == "GET" and request_id:
        entry = LEDGER.find(request_id)
        if entry is None:
            await exchange.json(404, error_body(404, "No such request", "request_not_found"))
        else:
            await exchange.json(200, entry)
    elif method == "GET":
        wanted = parse_qs(query).get("request_id", [None])[0]
        fields = ("request_id", "model", "stream", "status", "usage", "sent_usage", "outcome", "received_at")
        await exchange.json(
            200,
            [
                {field: entry[field] for field in fields}
                for entry in LEDGER.entries
                if wanted is None or entry["request_id"] == wanted
            ],
        )
    else:
        await exchange.json(405, error_body(405, "Method not allowed", "method_not_allowed"))


async def _chat(exchange: Exchange) -> None:
    if not _authorized(exchange):
        LEDGER.add(exchange.entry)
        await exchange.fail(401)
        return
    raw = await exchange.read_body()
    if raw is None:
        LEDGER.add(exchange.entry)
        await exchange.fail(413)
        return
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        exchange.entry["body"] = raw[:65536].decode("utf-8", "replace")
        LEDGER.add(exchange.entry, min(len(raw), 65536))
        await exchange.fail(400, "The request body is not a JSON object.", "invalid_json")
        return
    exchange.entry.update(body=body, model=body.get("model"), stream=bool(body.get("stream")))
    LEDGER.add(exchange.entry, len(raw))
    exchange.watch_disconnect()

    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        await exchange.fail(400, "messages must be a non-empty array of objects.", "invalid_messages")
        return
    try:
        directive = _directive(body, messages)
    except ValueError as error:
        await exchange.fail(400, f"Invalid !offline directive: {error}", "invalid_directive")
        return

    await exchange.pause(_number(directive, "first_byte_ms", 0) / 1000)
    if exchange.left():
        exchange.finish("client_closed")
        return
    try:
        status = int(directive.get("status") or 503)
        failing = _should_fail(directive, exchange.request_id)
    except (TypeError, ValueError) as error:
        await exchange.fail(400, f"Invalid !offline directive: {error}", "invalid_directive")
        return
    if failing:
        await exchange.fail(status, directive.get("error_message"), retry_after=directive.get("retry_after"))
        return
    model = body.get("model")
    if model not in MODELS:
        await exchange.fail(404)
        return
    if not MODELS[model]["vision"] and any(_images(m) for m in messages):
        await exchange.fail(400, f"The model {model} does not accept images.", "image_input_not_supported")
        return
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        await exchange.fail(400, f"n must be an integer from 1 to {MAX_CHOICES}.", "invalid_value")
        return
    try:
        replies = Reply.plan(body, messages, directive, model).versions(n)
    except (TypeError, ValueError, AttributeError) as error:
        await exchange.fail(400, f"Invalid !offline directive: {error}", "invalid_directive")
        return
    prompt_tokens = _prompt_tokens(body, messages)
    if body.get("stream"):
        options = body.get("stream_options") or {}
        await _stream(exchange, model, replies, directive, prompt_tokens, bool(options.get("include_usage")))
    else:
        await _complete(exchange, model, replies, directive, prompt_tokens)


def _directive(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    directive: dict[str, Any] = {}
    if _is_title_request(messages):
        # The conversation's first message may say how its title request goes; the request quotes
        # only its beginning, so a long directive may arrive cut off and say nothing.
        try:
            title = _parsed(_text(_first_user(messages))).get("title")
        except ValueError:
            title = None
        if isinstance(title, str):
            directive["reply"] = title
        elif isinstance(title, dict):
            directive.update(title)
    else:
        directive.update(_parsed(_text(_last_user(messages))))
    if isinstance(body.get("offline"), dict):
        directive.update(body["offline"])
    return directive


def _parsed(text: str) -> dict[str, Any]:
    """The directive a message gives, if it is one."""
    if not text.startswith("!offline "):
        return {}
    parsed = json.loads(text.removeprefix("!offline "))
    if not isinstance(parsed, dict):
        raise ValueError("expected a JSON object")
    return parsed


def _is_title_request(messages: list[dict[str, Any]]) -> bool:
    return messages[-1].get("role") == "user" and _text(messages[-1]).startswith(TITLE_REQUEST)


def title_for(first_message: str) -> str:
    """The offline demo's title: the message's first words, each capitalized (a directive gets a fixed
    one). Deterministic, and plainly not a model's summary."""
    if first_message.startswith("!offline "):
        return OFFLINE_TITLE
    words = first_message.split()[:TITLE_WORDS]
    title = " ".join(word[:1].upper() + word[1:] for word in words).rstrip(".,;:!?…")
    return title or OFFLINE_TITLE


def _should_fail(directive: dict[str, Any], request_id: str) -> bool:
    if "fail_times" in directive:
        key = str(directive.get("fail_key") or request_id)
        if len(_failures) >= 10_000 and key not in _failures:
            _failures.clear()
        _failures[key] = _failures.get(key, 0) + 1
        return _failures[key] <= int(directive["fail_times"])
    return bool(directive.get("status"))


def _number(directive: dict[str, Any], key: str, default: float) -> float:
    value = directive.get(key, default)
    return float(value) if isinstance(value, int | float) else default


def _after(directive: dict[str, Any], key: str) -> int | None:
    value = directive.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _last_user(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next((m for m in reversed(messages) if m.get("role") == "user"), {})


def _first_user(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next((m for m in messages if m.get("role") == "user"), {})


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _images(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [
        str((part.get("image_url") or {}).get("url", ""))
        for part in content
        if isinstance(part, dict) and part.get("type") == "image_url"
    ]


def _prompt_tokens(body: dict[str, Any], messages: list[dict[str, Any]]) -> int:
    """ceil(characters / 4) + 4 per message + IMAGE_TOKENS per image, over messages and tool definitions."""
    chars = len(json.dumps(body["tools"])) if body.get("tools") else 0
    images = 0
    for message in messages:
        chars += len(_text(message))
        images += len(_images(message))
        if message.get("tool_calls"):
            chars += len(json.dumps(message["tool_calls"]))
    return math.ceil(chars / 4) + 4 * len(messages) + IMAGE_TOKENS * images


def split_words(text: str) -> list[str]:
    """Each word with its leading whitespace; joined, the pieces give back the text exactly."""
    pieces = _WORD.findall(text)
    rest = text[sum(map(len, pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


def _summary(text: str, words: int = 12) -> str:
    parts = text.split()
    if not parts:
        return "(nothing)"
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")


class Reply:
    """What one request is answered with, before it is cut into deltas."""

    def __init__(self, reasoning: list[str], content: list[str], tool_calls: list[dict[str, str]]) -> None:
        self.reasoning, self.content, self.tool_calls = reasoning, content, tool_calls
        self.finish_reason = "tool_calls" if tool_calls else "stop"

    @classmethod
    def plan(
        cls, body: dict[str, Any], messages: list[dict[str, Any]], directive: dict[str, Any], model: str
    ) -> "Reply":
        user_text = _text(_last_user(messages))
        if user_text.startswith("!offline "):
            user_text = ""
        reasoning = directive.get("reasoning")
        if reasoning is None and MODELS[model]["reasoning"]:
            reasoning = (
                f"The user wrote “{_summary(user_text, 6)}”. This offline model does not think; "
                "it explains that it is a demo."
            )
        after_tools = messages[-1].get("role") == "tool"
        rounds = int(directive.get("tool_rounds", 1))
        calls = directive.get("tool_calls") if _tool_rounds(messages) < rounds else None
        if calls is None and not directive and messages[-1].get("role") == "user":
            calls = _natural_tool_calls(user_text, body.get("tools") or [])
        if calls:
            reply = cls(split_words(reasoning or ""), [], _tool_calls(calls))
        else:
            reply = cls._answer(body, messages, directive, model, user_text, reasoning, after_tools)
        if isinstance(directive.get("finish_reason"), str):
            reply.finish_reason = directive["finish_reason"]
        return reply

    @classmethod
    def _answer(
        cls,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        directive: dict[str, Any],
        model: str,
        user_text: str,
        reasoning: str | None,
        after_tools: bool,
    ) -> "Reply":
        if isinstance(directive.get("chunks"), list):
            content = [str(chunk) for chunk in directive["chunks"]]
        elif isinstance(directive.get("reply"), str):
            content = split_words(directive["reply"])
        elif directive.get("words"):
            count = min(int(directive["words"]), MAX_WORDS)
            content = [(" " if i else "") + VOCABULARY[i % len(VOCABULARY)] for i in range(count)]
        elif _is_title_request(messages):
            content = split_words(title_for(_text(_first_user(messages))))
        else:
            content = split_words(_generated_text(body, messages, model, user_text, after_tools))
        reply = cls(split_words(reasoning or ""), content, [])
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(content):
            reply.content, reply.finish_reason = content[:limit], "length"
        return reply

    def versions(self, n: int) -> list["Reply"]:
        """The n choices of a request: this reply alone, or n replies that say which version they are."""
        if n == 1 or self.tool_calls:
            return [self]
        versions = []
        for k in range(1, n + 1):
            version = Reply(list(self.reasoning), [f"Version {k} of {n}. ", *self.content], [])
            version.finish_reason = self.finish_reason
            versions.append(version)
        return versions

    def deltas(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"reasoning_content": text} for text in self.reasoning]
        deltas += [{"content": text} for text in self.content]
        for index, call in enumerate(self.tool_calls):
            function = {"name": call["name"], "arguments": ""}
            deltas.append(
                {"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": function}]}
            )
            arguments = call["arguments"]
            for start in range(0, len(arguments), 12):
                part = {"index": index, "function": {"arguments": arguments[start : start + 12]}}
                deltas.append({"tool_calls": [part]})
        return deltas

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content), "refusal": None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["content"] = message["content"] or None
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in self.tool_calls
            ]
        return message


# Arithmetic in a message ("What is 17 * (3 + 4)?"): digits and operators, at least one operator.
_ARITHMETIC = re.compile(r"[-+(]*\d[\d.]*(?:\s*(?:\*\*|[-+*/%^])\s*[-+(]*\d[\d.]*\)*)+")
_TIME_WORDS = re.compile(r"\b(?:time|date|today|clock)\b|时间|几点|日期", re.IGNORECASE)
_ZONE = re.compile(r"\b[A-Z][A-Za-z_]+/[A-Z][A-Za-z_]+\b")


def _natural_tool_calls(text: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """What a real model would do with the demo's tools when the member just asks: the calculator
    for arithmetic, the clock for the time (in a zone the message names, else UTC)."""
    offered = {(tool.get("function") or {}).get("name") for tool in tools if isinstance(tool, dict)}
    if "calculator" in offered and (match := _ARITHMETIC.search(text)):
        return [{"name": "calculator", "arguments": {"expression": match.group().replace("^", "**")}}]
    if "current_time" in offered and _TIME_WORDS.search(text):
        zone = _ZONE.search(text)
        return [{"name": "current_time", "arguments": {"timezone": zone.group() if zone else "UTC"}}]
    return None


def _tool_rounds(messages: list[dict[str, Any]]) -> int:
    """How many times tools were called since the last user message."""
    rounds = 0
    for message in reversed(messages):
        if message.get("role") == "user":
            break
        rounds += bool(message.get("role") == "assistant" and message.get("tool_calls"))
    return rounds


def _tool_calls(calls: list[Any]) -> list[dict[str, str]]:
    result = []
    for index, call in enumerate(calls):
        name = str(call.get("name", "tool"))
        arguments = call.get("arguments", {})
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        digest = hashlib.sha256(f"{index}:{name}:{arguments}".encode()).hexdigest()[:24]
        result.append({"id": str(call.get("id") or f"call_{digest}"), "name": name, "arguments": arguments})
    return result


def _generated_text(
    body: dict[str, Any], messages: list[dict[str, Any]], model: str, user_text: str, after_tools: bool
) -> str:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return json.dumps(example_for(schema, schema), ensure_ascii=False)
    if response_format.get("type") == "json_object":
        return json.dumps(
            {"model": model, "offline": True, "summary": _summary(user_text)}, ensure_ascii=False
        )
    lines = []
    if after_tools:
        lines.append("**Tool results received.** " + _tool_results(messages))
    lines.append(
        f"**Offline demo.** This reply comes from `{model}`, the built-in model that answers without any "
        f"provider. You said: “{_summary(user_text)}” Set OPENAI_BASE_URL and OPENAI_API_KEY to talk to a "
        "real model."
    )
    images = _images(_last_user(messages))
    lines += [f"Image {n}: {describe_image(url)}" for n, url in enumerate(images, 1)]
    return "\n\n".join(lines)


def _tool_results(messages: list[dict[str, Any]]) -> str:
    names = {
        call.get("id"): (call.get("function") or {}).get("name", "a tool")
        for message in messages
        for call in message.get("tool_calls") or ()
    }
    results = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        name = names.get(message.get("tool_call_id"), "a tool")
        results.append(f"{name} returned {text[:200]}.")
    return " ".join(reversed(results))


def describe_image(url: str) -> str:
    """Media type, byte size and dimensions of a data: URL image, read from its header bytes."""
    if not url.startswith("data:"):
        return f"a remote image at {url[:100]} (not fetched)."
    header, _, payload = url.partition(",")
    media_type = header.removeprefix("data:").split(";")[0] or "application/octet-stream"
    try:
        data = base64.b64decode(payload) if ";base64" in header else payload.encode()
    except (binascii.Error, ValueError):
        return f"{media_type}, unreadable base64 data."
    size = image_size(data)
    dimensions = f"{size[0]} x {size[1]} pixels" if size else "unknown dimensions"
    return f"{media_type}, {len(data)} bytes, {dimensions}."


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from PNG, GIF, JPEG or WebP headers."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if kind == b"VP8 ":
            return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(
                data[28:30], "little"
            ) & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 9 < len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            index += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height = int.from_bytes(data[index + 5 : index + 7], "big")
            width = int.from_bytes(data[index + 7 : index + 9], "big")
            return width, height
        index += 2 + int.from_bytes(data[index + 2 : index + 4], "big")
    return None


def example_for(schema: Any, root: Any, depth: int = 0) -> Any:
    """A simple value that satisfies a JSON schema: first enum or option, every property, minimal arrays."""
    if not isinstance(schema, dict) or depth > 12:
        return None
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target = root
        for key in schema["$ref"][2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return example_for(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or () if isinstance(o, dict) and o.get("type") != "null"]
        if options:
            return example_for(options[0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: example_for(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 0)
        count = min(count, int(schema.get("maxItems", count)))
        return [example_for(schema.get("items") or {}, root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _example_number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    formats = {
        "date-time": "2024-01-01T00:00:00Z",
        "date": "2024-01-01",
        "time": "00:00:00",
        "email": "demo@example.com",
        "uri": "https://example.com/",
        "uuid": "00000000-0000-4000-8000-000000000000",
    }
    text = formats.get(schema.get("format"), "offline")
    text = text.ljust(int(schema.get("minLength", 0)), "x")
    return text[: int(schema["maxLength"])] if "maxLength" in schema else text


def _example_number(schema: dict[str, Any], integer: bool) -> int | float:
    value: float = 1 if integer else 1.5
    step = 1 if integer else 0.5
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + step)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - step)
    return math.ceil(value) if integer else value


def _usage(prompt: int, completion: int, reasoning: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


async def _complete(
    exchange: Exchange, model: str, replies: list[Reply], directive: dict[str, Any], prompt_tokens: int
) -> None:
    completion = sum(len(reply.deltas()) for reply in replies)
    reasoning = sum(len(reply.reasoning) for reply in replies)
    usage = _usage(prompt_tokens, completion, reasoning, int(_number(directive, "cached_tokens", 0)))
    if _after(directive, "drop_after") is not None:
        exchange.finish("dropped", None, _usage(prompt_tokens, 0, 0, 0))
        await exchange.start(200, [(b"content-type", b"application/json")])
        await exchange.cut()
        return
    payload: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_offline",
        "choices": [
            {"index": i, "message": reply.message(), "logprobs": None, "finish_reason": reply.finish_reason}
            for i, reply in enumerate(replies)
        ],
    }
    if directive.get("no_usage"):
        exchange.finish("complete", None, usage)
    else:
        payload["usage"] = usage
        exchange.finish("complete", usage, usage)
    await exchange.json(200, payload)


async def _stream(
    exchange: Exchange,
    model: str,
    replies: list[Reply],
    directive: dict[str, Any],
    prompt_tokens: int,
    include_usage: bool,
) -> None:
    completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    start = (
        f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"system_fingerprint":"fp_offline","choices":[{{"index":'
    ).encode()
    heads = [start + f'{index},"delta":'.encode() for index in range(len(replies))]
    head = heads[0]
    tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
    timestamps = _after(directive, "timestamps")
    timestamps = None if timestamps is None else min(timestamps, MAX_WORDS)
    frames: list[bytes] = []
    if timestamps is not None:
        # Encoded as they go out: each delta carries its own send time.
        count = total = timestamps
        reasoning_count = 0
    else:
        count = reasoning_count = 0
        choices = []
        for reply in replies:
            deltas = reply.deltas()
            count += len(deltas)
            reasoning_count += len(reply.reasoning)
            deltas = deltas or [{"content": ""}]  # an empty reply still announces its role
            deltas[0] = {"role": "assistant", **deltas[0]}
            choices.append(deltas)
        # Several choices go out interleaved, as providers send them: one delta of each in turn.
        for position in range(max(map(len, choices))):
            for index, deltas in enumerate(choices):
                if position < len(deltas):
                    frames.append(heads[index] + _dumps(deltas[position]) + tail)
        total = len(frames)
    pace = _number(directive, "pace_ms", DEFAULT_PACE_MS) / 1000
    drop_after = _after(directive, "drop_after")
    malformed_after = _after(directive, "malformed_after")
    error_after = _after(directive, "error_after")
    stall_after = _after(directive, "stall_after")
    cached = int(_number(directive, "cached_tokens", 0))

    def sent(deltas: int) -> dict[str, Any]:
        return _usage(prompt_tokens, min(deltas, count), min(deltas, reasoning_count), cached)

    stops = {drop_after, malformed_after, error_after, stall_after, total}
    pending: list[bytes] = []  # at full speed, deltas leave in batches: one write per delta costs the most
    await exchange.start(200, _SSE_HEADERS)
    for index in range(total + 1):
        if pending and (index in stops or len(pending) >= FULL_SPEED_BATCH):
            await exchange.body(b"".join(pending))
            pending.clear()
            await exchange.pause(0)
            if exchange.left():
                exchange.finish("client_closed", None, sent(index))
                return
        if index == drop_after:
            exchange.finish("dropped", None, sent(index))
            await exchange.cut()
            return
        if index == malformed_after:
            exchange.finish("malformed", None, sent(index))
            await exchange.body(b'data: {"id": "chatcmpl-broken", "choices": [\n\n', more=False)
            return
        if index == error_after:
            exchange.finish("stream_error", None, sent(index))
            status = int(_number(directive, "error_status", 500))
            error = (
                error_body(500, "The offline upstream failed mid-stream.", "stream_error")
                if status == 500
                else error_body(status)
            )
            await exchange.body(b"data: " + _dumps(error) + b"\n\n", more=False)
            return
        if index == stall_after:
            await exchange.pause(_number(directive, "stall_ms", 0) / 1000)
        if index == total:
            break
        if pace and index:
            await exchange.pause(pace)
        if timestamps is not None:
            # Stamped after the pause, at the moment it is written.
            delta = {"content": f"{time.time_ns()} "}
            frame = head + _dumps({"role": "assistant", **delta} if index == 0 else delta) + tail
        else:
            frame = frames[index]
        if not pace:
            pending.append(frame)
            continue
        if exchange.left():
            exchange.finish("client_closed", None, sent(index))
            return
        await exchange.body(frame)

    usage = sent(count)
    ending = b"".join(
        heads[index] + b'{},"logprobs":null,"finish_reason":"' + reply.finish_reason.encode() + b'"}]}\n\n'
        for index, reply in enumerate(replies)
    )
    if include_usage and not directive.get("no_usage"):
        usage_chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_offline",
            "choices": [],
            "usage": usage,
        }
        ending += b"data: " + _dumps(usage_chunk) + b"\n\n"
        exchange.finish("complete", usage, usage)
    else:
        exchange.finish("complete", None, usage)
    if exchange.left():
        exchange.finish("client_closed", None, usage)
        return
    await exchange.body(ending + (b"" if directive.get("no_done") else _DONE), more=False)
