"""The offline upstream over a real socket: models, deterministic replies, directives, JSON, images, ledger."""

import base64
import json
import struct
import time
import uuid
import zlib
from typing import Any

import httpx
import pytest

from conversations import upstream
from conversations.offline_upstream import image_size

pytestmark = pytest.mark.usefixtures("upstream_settings", "upstream_client")


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def chat(text: str | list[dict[str, Any]], model: str = "offline-chat", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


async def collect(server, payload: dict[str, Any], request_id: str | None = None) -> list[dict[str, Any]]:
    stream = upstream.stream_chat(server.endpoint, payload, request_id=request_id or new_id())
    return [chunk async for chunk in stream]


def deltas(chunks: list[dict[str, Any]], key: str = "content") -> list[str]:
    return [c["choices"][0]["delta"][key] for c in chunks if c["choices"] and key in c["choices"][0]["delta"]]


def png(width: int, height: int) -> bytes:
    def block(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    return b"\x89PNG\r\n\x1a\n" + block(b"IHDR", header) + block(b"IDAT", pixels) + block(b"IEND", b"")


def test_it_lists_the_offline_models_with_their_capabilities(offline_upstream):
    listed = httpx.get(f"{offline_upstream.base_url}/models").json()
    assert listed["object"] == "list"
    models = {item["id"]: item for item in listed["data"]}
    assert set(models) == {"offline-chat", "offline-vision", "offline-reasoner"}
    assert all(item["owned_by"] == "chatsite-offline" for item in models.values())
    assert models["offline-vision"]["chatsite"]["vision"] is True
    assert models["offline-chat"]["chatsite"]["vision"] is False
    assert models["offline-reasoner"]["chatsite"]["reasoning"] is True
    assert models["offline-chat"]["chatsite"]["display_name"].startswith("Offline demo (")


async def test_its_default_reply_is_deterministic_and_one_word_per_delta(offline_upstream):
    payload = chat("Please summarise the history of the printing press in Europe")
    first, second = await collect(offline_upstream, payload), await collect(offline_upstream, payload)
    assert deltas(first) == deltas(second)
    text = "".join(deltas(first))
    assert "offline-chat" in text and "Offline demo" in text
    assert "Please summarise the history of the printing press in Europe" in text
    assert 30 <= len(text.split()) <= 50
    assert all(len(piece.split()) == 1 for piece in deltas(first))
    opening = first[0]
    assert opening["object"] == "chat.completion.chunk" and opening["id"].startswith("chatcmpl-")
    assert opening["choices"][0]["delta"]["role"] == "assistant"
    assert opening["choices"][0]["logprobs"] is None and opening["choices"][0]["finish_reason"] is None
    assert [c["choices"][0]["finish_reason"] for c in first if c["choices"]][-1] == "stop"


async def test_it_replies_exactly_as_a_message_directive_says(offline_upstream):
    reply = "Hello,  *world*!\n\n- one\n- two \n"
    directive = "!offline " + json.dumps({"reply": reply})
    chunks = await collect(offline_upstream, chat(directive))
    assert "".join(deltas(chunks)) == reply
    assert len(deltas(chunks)) == len(reply.split())


async def test_it_streams_the_exact_chunks_asked_for_in_the_body(offline_upstream):
    chunks = await collect(offline_upstream, chat("hi", offline={"chunks": ["He", "llo", " wor", "ld"]}))
    assert deltas(chunks) == ["He", "llo", " wor", "ld"]


async def test_it_generates_long_replies_by_word_count(offline_upstream):
    chunks = await collect(offline_upstream, chat("hi", offline={"words": 500}))
    assert len(deltas(chunks)) == 500
    assert chunks[-1]["usage"]["completion_tokens"] == 500


async def test_it_cuts_the_reply_at_max_tokens(offline_upstream):
    chunks = await collect(offline_upstream, chat("hi", max_tokens=5))
    assert len(deltas(chunks)) == 5
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"


async def test_it_answers_json_mode_with_a_json_object(offline_upstream):
    chunks = await collect(
        offline_upstream, chat("Extract: Zhang San, 25", response_format={"type": "json_object"})
    )
    value = json.loads("".join(deltas(chunks)))
    assert isinstance(value, dict) and value["offline"] is True


async def test_it_answers_a_json_schema_with_a_value_that_satisfies_it(offline_upstream):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 10},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "score": {"type": "number", "exclusiveMaximum": 1},
            "member": {"type": "boolean"},
            "colour": {"enum": ["red", "green"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "address": {"$ref": "#/$defs/address"},
            "note": {"type": ["string", "null"]},
        },
        "required": ["name", "age", "score", "member", "colour", "tags", "address", "note"],
        "additionalProperties": False,
        "$defs": {
            "address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    }
    chunks = await collect(offline_upstream, chat("Describe someone", response_format=response_format))
    value = json.loads("".join(deltas(chunks)))
    assert set(value) == set(schema["required"])
    assert isinstance(value["name"], str) and len(value["name"]) >= 10
    assert isinstance(value["age"], int) and 18 <= value["age"] <= 99
    assert isinstance(value["score"], float) and value["score"] < 1
    assert value["member"] is True and value["colour"] == "red"
    assert len(value["tags"]) == 2 and all(isinstance(tag, str) for tag in value["tags"])
    assert isinstance(value["address"]["city"], str) and isinstance(value["note"], str)


async def test_a_reply_directive_wins_over_json_mode(offline_upstream):
    payload = chat("x", response_format={"type": "json_object"}, offline={"reply": "not json"})
    assert "".join(deltas(await collect(offline_upstream, payload))) == "not json"


async def test_it_describes_each_image_with_its_dimensions(offline_upstream):
    image = png(64, 32)
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    text = "".join(deltas(await collect(offline_upstream, chat(parts, model="offline-vision"))))
    assert f"Image 1: image/png, {len(image)} bytes, 64 x 32 pixels." in text


def test_it_reads_dimensions_from_gif_jpeg_and_webp_headers():
    gif = b"GIF89a" + struct.pack("<HH", 300, 200) + b"\x00" * 8
    jpeg = (
        b"\xff\xd8"
        + b"\xff\xe0"
        + struct.pack(">H", 16)
        + b"JFIF\x00".ljust(14, b"\x00")
        + b"\xff\xc0"
        + struct.pack(">HBHH", 17, 8, 480, 640)
        + b"\x00" * 12
    )
    webp_extended = (
        b"RIFF\x00\x00\x00\x00WEBPVP8X"
        + b"\x00" * 8
        + (99).to_bytes(3, "little")
        + (49).to_bytes(3, "little")
    )
    assert image_size(gif) == (300, 200)
    assert image_size(jpeg) == (640, 480)
    assert image_size(webp_extended) == (100, 50)
    assert image_size(b"not an image at all") is None


async def test_a_model_without_vision_refuses_images(offline_upstream):
    url = "data:image/png;base64," + base64.b64encode(png(2, 2)).decode()
    parts = [{"type": "text", "text": "Look"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(upstream.UpstreamError) as caught:
        await collect(offline_upstream, chat(parts, model="offline-chat"))
    assert caught.value.code == "bad_request" and caught.value.status == 400
    assert "does not accept images" in caught.value.detail


async def test_the_reasoning_model_streams_its_reasoning_first(offline_upstream):
    chunks = await collect(offline_upstream, chat("Why is the sky blue?", model="offline-reasoner"))
    reasoning, content = deltas(chunks, "reasoning_content"), deltas(chunks)
    assert reasoning and content
    assert "reasoning_content" in chunks[0]["choices"][0]["delta"]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == len(reasoning)
    assert usage["completion_tokens"] == len(reasoning) + len(content)


async def test_after_tool_results_it_answers_with_text_that_mentions_them(offline_upstream):
    directive = "!offline " + json.dumps(
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    )
    first = await collect(offline_upstream, chat(directive))
    call = first[0]["choices"][0]["delta"]["tool_calls"][0]
    messages = [
        {"role": "user", "content": directive},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 21}'},
    ]
    second = await collect(offline_upstream, {"model": "offline-chat", "messages": messages})
    text = "".join(deltas(second))
    assert 'get_weather returned {"temperature": 21}' in text
    assert not deltas(second, "tool_calls")
    assert [c["choices"][0]["finish_reason"] for c in second if c["choices"]][-1] == "stop"


async def test_timestamps_mode_sends_each_delta_s_own_send_time(offline_upstream):
    before = time.time_ns()
    chunks = await collect(offline_upstream, chat("bench", offline={"timestamps": 20, "pace_ms": 5}))
    after = time.time_ns()
    stamps = [int(piece) for piece in deltas(chunks)]
    assert all(piece.endswith(" ") for piece in deltas(chunks))
    assert len(stamps) == 20 and stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after
    assert stamps[-1] - stamps[0] >= 19 * 5_000_000 * 0.8


async def test_the_ledger_usage_equals_what_the_client_received(offline_upstream):
    request_id = new_id()
    payload = chat("Count these words for me please", offline={"cached_tokens": 3})
    chunks = await collect(offline_upstream, payload, request_id)
    received = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    entry = offline_upstream.finished(request_id)
    assert entry["outcome"] == "complete" and entry["status"] == 200
    assert entry["usage"] == received == entry["sent_usage"]
    assert received["completion_tokens"] == len(deltas(chunks))
    assert received["total_tokens"] == received["prompt_tokens"] + received["completion_tokens"]
    assert received["prompt_tokens_details"]["cached_tokens"] == 3
    text = payload["messages"][0]["content"]
    assert received["prompt_tokens"] == -(-len(text) // 4) + 4
    assert entry["body"]["messages"] == payload["messages"]


async def test_a_completion_without_streaming_has_the_same_reply_and_usage(offline_upstream):
    payload = chat("The same question twice")
    streamed = await collect(offline_upstream, payload)
    completion = await upstream.complete_chat(offline_upstream.endpoint, payload, request_id=new_id())
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "".join(deltas(streamed))
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == streamed[-1]["usage"]


def test_it_refuses_a_body_that_is_not_json(offline_upstream):
    response = httpx.post(f"{offline_upstream.base_url}/chat/completions", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_it_answers_errors_with_the_guide_s_bodies(offline_upstream):
    url = f"{offline_upstream.base_url}/chat/completions"
    unknown = httpx.post(url, json=chat("hi", model="no-such-model"))
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {"message": "Model not found", "type": "invalid_request_error", "code": "model_not_found"}
    }
    limited = httpx.post(url, json=chat("hi", offline={"status": 429, "retry_after": 7}))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert limited.json()["error"] == {
        "message": "Rate limit exceeded",
        "type": "rate_limit_error",
        "code": "rate_limit_exceeded",
    }


def test_the_ledger_never_keeps_the_authorization_header(offline_upstream_with_key):
    request_id = new_id()
    headers = {"Authorization": f"Bearer {offline_upstream_with_key.api_key}", "X-Request-ID": request_id}
    response = httpx.post(
        f"{offline_upstream_with_key.base_url}/chat/completions", json=chat("hi"), headers=headers
    )
    assert response.status_code == 200
    entry = offline_upstream_with_key.request(request_id)
    assert "authorization" not in entry["headers"]
    assert offline_upstream_with_key.api_key not in json.dumps(entry)


def test_it_refuses_a_directive_that_is_not_json(offline_upstream):
    response = httpx.post(f"{offline_upstream.base_url}/chat/completions", json=chat("!offline {not json"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_directive"


def test_the_ledger_can_be_cleared(offline_upstream):
    request_id = new_id()
    httpx.post(
        f"{offline_upstream.base_url}/chat/completions", json=chat("hi"), headers={"X-Request-ID": request_id}
    )
    assert [entry["request_id"] for entry in offline_upstream.requests(request_id)] == [request_id]
    offline_upstream.clear()
    assert offline_upstream.requests() == []
    assert offline_upstream.request(request_id) is None
