"""The upstream client against the offline upstream over a real socket: every failure mode, retries, timeouts."""

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest

from conversations import upstream
from conversations.upstream import Endpoint, UpstreamError

pytestmark = pytest.mark.usefixtures("upstream_client")


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def chat(text: str = "Hello", model: str = "offline-chat", **offline: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if offline:
        payload["offline"] = offline
    return payload


async def collect(endpoint: Endpoint, payload: dict[str, Any], request_id: str) -> list[dict[str, Any]]:
    return [chunk async for chunk in upstream.stream_chat(endpoint, payload, request_id=request_id)]


async def failure(endpoint: Endpoint, payload: dict[str, Any], request_id: str) -> tuple[UpstreamError, int]:
    """The error a stream ends with, and how many chunks reached the caller before it."""
    received = 0
    with pytest.raises(UpstreamError) as caught:
        async for _chunk in upstream.stream_chat(endpoint, payload, request_id=request_id):
            received += 1
    return caught.value, received


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@pytest.fixture
def never_accepting() -> Iterator[int]:
    """A port whose accept queue is full: further connection attempts get no answer at all."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        yield port
        for filler in fillers:
            filler.close()


async def test_it_streams_chunks_and_the_usage_chunk_it_asked_for(offline_upstream, upstream_settings):
    request_id = new_id()
    payload = {**chat("Hi there"), "stream_options": {"continuous_usage_stats": False}}
    chunks = await collect(offline_upstream.endpoint, payload, request_id)
    assert content(chunks).startswith("**Offline demo.**")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    body = offline_upstream.request(request_id)["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"continuous_usage_stats": False, "include_usage": True}
    assert payload["stream_options"] == {"continuous_usage_stats": False}  # the caller's dict is untouched


async def test_the_request_id_reaches_the_upstream(offline_upstream, upstream_settings):
    request_id = new_id()
    await collect(offline_upstream.endpoint, chat(), request_id)
    entry = offline_upstream.request(request_id)
    assert entry["request_id"] == request_id
    assert entry["headers"]["x-request-id"] == request_id


async def test_it_passes_reasoning_content_through(offline_upstream, upstream_settings):
    chunks = await collect(
        offline_upstream.endpoint, chat(model="offline-reasoner", reasoning="Think first."), new_id()
    )
    reasoning = [c["choices"][0]["delta"].get("reasoning_content") for c in chunks if c["choices"]]
    assert "".join(r for r in reasoning if r) == "Think first."


async def test_it_passes_tool_call_deltas_through(offline_upstream, upstream_settings):
    calls = [
        {"name": "get_weather", "arguments": {"city": "Beijing", "unit": "celsius"}},
        {"name": "now", "arguments": {}},
    ]
    chunks = await collect(offline_upstream.endpoint, chat(tool_calls=calls), new_id())
    assembled: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for part in choice["delta"].get("tool_calls") or ():
                call = assembled.setdefault(part["index"], {"name": "", "arguments": ""})
                call["name"] += part.get("function", {}).get("name", "")
                call["arguments"] += part.get("function", {}).get("arguments", "")
    assert [assembled[i]["name"] for i in sorted(assembled)] == ["get_weather", "now"]
    assert json.loads(assembled[0]["arguments"]) == {"city": "Beijing", "unit": "celsius"}
    pieces = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert len(pieces) > 3  # the arguments arrive split over several deltas
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"


async def test_a_stream_without_usage_ends_normally(offline_upstream, upstream_settings):
    chunks = await collect(offline_upstream.endpoint, chat(no_usage=True), new_id())
    assert content(chunks)
    assert not any(chunk.get("usage") for chunk in chunks)


async def test_a_wrong_api_key_is_an_auth_error_and_not_retried(offline_upstream_with_key, upstream_settings):
    request_id = new_id()
    endpoint = Endpoint(offline_upstream_with_key.base_url, "sk-wrong-key")
    error, _ = await failure(endpoint, chat(), request_id)
    assert (error.code, error.status, error.retryable) == ("auth", 401, False)
    assert error.detail == "Invalid API key provided"
    assert "401" in error.user_message()
    assert len(offline_upstream_with_key.requests(request_id)) == 1
    chunks = await collect(offline_upstream_with_key.endpoint, chat(), new_id())
    assert content(chunks)


async def test_the_api_key_never_reaches_logs_or_error_text(
    offline_upstream_with_key, upstream_settings, caplog
):
    key = offline_upstream_with_key.api_key
    endpoint = offline_upstream_with_key.endpoint
    caplog.set_level(logging.DEBUG)
    error, _ = await failure(
        endpoint, chat(status=401, error_message=f"Incorrect API key provided: {key}"), new_id()
    )
    assert error.code == "auth"
    assert error.detail == "Incorrect API key provided: ***"
    for text in (str(error), error.detail, error.user_message(), repr(endpoint), caplog.text):
        assert key not in text
    assert caplog.records  # the failure was logged, without the key
    models = await upstream.list_models(endpoint)
    assert {m["id"] for m in models} >= {"offline-chat"} and key not in caplog.text
    # Quoted where the message is cut short: no piece of the key is left either.
    long_message = "x" * 990 + key
    error, _ = await failure(endpoint, chat(status=401, error_message=long_message), new_id())
    assert key[:8] not in error.detail and error.detail.endswith("***")


async def test_an_unknown_model_is_not_found(offline_upstream, upstream_settings):
    error, _ = await failure(offline_upstream.endpoint, chat(model="gpt-nonexistent"), new_id())
    assert (error.code, error.status, error.detail) == ("not_found", 404, "Model not found")


async def test_a_body_over_the_limit_is_too_large(offline_upstream, upstream_settings):
    error, _ = await failure(offline_upstream.endpoint, chat("x" * (4 * 1024 * 1024 + 1)), new_id())
    assert (error.code, error.status, error.retryable) == ("too_large", 413, False)


async def test_a_refused_image_is_a_bad_request(offline_upstream, upstream_settings):
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    payload = {"model": "offline-chat", "messages": [{"role": "user", "content": parts}]}
    error, _ = await failure(offline_upstream.endpoint, payload, new_id())
    assert (error.code, error.status) == ("bad_request", 400)
    assert "does not accept images" in error.user_message()


async def test_a_rate_limit_is_retried_after_retry_after_then_succeeds(offline_upstream, upstream_settings):
    request_id = new_id()
    chunks = await collect(
        offline_upstream.endpoint, chat(status=429, retry_after=0.2, fail_times=1), request_id
    )
    assert content(chunks)
    attempts = offline_upstream.requests(request_id)
    assert [a["status"] for a in attempts] == [429, 200]
    assert attempts[1]["received_at"] - attempts[0]["received_at"] >= 0.2


async def test_a_rate_limit_that_persists_exhausts_the_retries(offline_upstream, upstream_settings):
    upstream_settings.UPSTREAM_MAX_RETRIES = 2
    request_id = new_id()
    error, _ = await failure(offline_upstream.endpoint, chat(status=429, retry_after=0), request_id)
    assert (error.code, error.status, error.retry_after, error.retryable) == ("rate_limited", 429, 0.0, True)
    assert len(offline_upstream.requests(request_id)) == 3


async def test_a_rate_limit_asking_for_a_long_wait_is_reported_at_once(offline_upstream, upstream_settings):
    request_id = new_id()
    error, _ = await failure(offline_upstream.endpoint, chat(status=429, retry_after=90), request_id)
    assert (error.code, error.retry_after) == ("rate_limited", 90.0)
    assert error.user_message() == "The provider is limiting requests (429). Try again in 90 s."
    assert len(offline_upstream.requests(request_id)) == 1  # not retried into the same refusal


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried_then_reported(offline_upstream, upstream_settings, status):
    request_id = new_id()
    error, _ = await failure(offline_upstream.endpoint, chat(status=status), request_id)
    assert (error.code, error.status, error.retryable) == ("server_error", status, True)
    assert len(offline_upstream.requests(request_id)) == 2  # UPSTREAM_MAX_RETRIES = 1


async def test_a_refused_connection_is_a_connection_error(upstream_settings, nothing_listening):
    upstream_settings.UPSTREAM_MAX_RETRIES = 0
    error, _ = await failure(Endpoint(f"http://127.0.0.1:{nothing_listening}/v1"), chat(), new_id())
    assert (error.code, error.retryable) == ("connection", True)


async def test_a_connection_that_is_never_accepted_is_a_connect_timeout(upstream_settings, never_accepting):
    upstream_settings.UPSTREAM_CONNECT_TIMEOUT = 0.3
    upstream_settings.UPSTREAM_MAX_RETRIES = 0
    error, _ = await failure(Endpoint(f"http://127.0.0.1:{never_accepting}/v1"), chat(), new_id())
    assert (error.code, error.retryable) == ("connect_timeout", True)


@pytest.mark.parametrize("timer", ["UPSTREAM_FIRST_BYTE_TIMEOUT", "UPSTREAM_IDLE_TIMEOUT"])
async def test_a_slow_first_byte_is_a_first_byte_timeout_and_retried(
    offline_upstream, upstream_settings, timer
):
    setattr(upstream_settings, timer, 0.3)
    request_id = new_id()
    error, received = await failure(offline_upstream.endpoint, chat(first_byte_ms=1500), request_id)
    assert (error.code, error.retryable, received) == ("first_byte_timeout", True, 0)
    assert len(offline_upstream.requests(request_id)) == 2


async def test_a_stall_mid_stream_is_an_idle_timeout_and_not_retried(offline_upstream, upstream_settings):
    upstream_settings.UPSTREAM_IDLE_TIMEOUT = 0.3
    request_id = new_id()
    error, received = await failure(offline_upstream.endpoint, chat(stall_after=3, stall_ms=2000), request_id)
    assert (error.code, received) == ("idle_timeout", 3)
    assert len(offline_upstream.requests(request_id)) == 1


async def test_a_reply_longer_than_the_total_timeout_is_stopped(offline_upstream, upstream_settings):
    upstream_settings.UPSTREAM_TOTAL_TIMEOUT = 0.5
    request_id = new_id()
    error, received = await failure(offline_upstream.endpoint, chat(words=100, pace_ms=50), request_id)
    assert error.code == "total_timeout"
    assert 3 <= received < 100
    assert len(offline_upstream.requests(request_id)) == 1
    assert offline_upstream.finished(request_id)["outcome"] == "client_closed"


async def test_the_total_timeout_never_fires_inside_the_caller_s_own_work(
    offline_upstream, upstream_settings
):
    upstream_settings.UPSTREAM_TOTAL_TIMEOUT = 0.3
    stream = upstream.stream_chat(offline_upstream.endpoint, chat(words=10), request_id=new_id())
    async with aclosing(stream):
        await anext(stream)
        await asyncio.sleep(0.5)  # past the deadline, while the generator waits at its yield
        with pytest.raises(UpstreamError) as caught:
            await anext(stream)
    assert caught.value.code == "total_timeout"


async def test_a_dropped_stream_is_truncated_and_not_retried(offline_upstream, upstream_settings):
    request_id = new_id()
    error, received = await failure(offline_upstream.endpoint, chat(drop_after=4), request_id)
    assert (error.code, error.retryable, received) == ("truncated", False, 4)
    attempts = offline_upstream.requests(request_id)
    assert len(attempts) == 1 and attempts[0]["outcome"] == "dropped"


async def test_a_stream_that_finished_but_sent_no_done_is_whole(offline_upstream, upstream_settings):
    # Some servers close after the last chunk without `data: [DONE]`: the finish_reason says it ended.
    chunks = await collect(offline_upstream.endpoint, chat(reply="All of it.", no_done=True), new_id())
    assert content(chunks) == "All of it."
    assert chunks[-1]["usage"]["completion_tokens"] > 0


async def test_a_stream_cut_before_its_first_chunk_is_not_retried(offline_upstream, upstream_settings):
    request_id = new_id()
    error, received = await failure(offline_upstream.endpoint, chat(drop_after=0), request_id)
    assert (error.code, received) == ("truncated", 0)
    assert len(offline_upstream.requests(request_id)) == 1


async def test_a_malformed_chunk_is_reported(offline_upstream, upstream_settings):
    error, received = await failure(offline_upstream.endpoint, chat(malformed_after=2), new_id())
    assert (error.code, received) == ("malformed", 2)


async def test_an_error_object_mid_stream_is_a_stream_error(offline_upstream, upstream_settings):
    error, received = await failure(offline_upstream.endpoint, chat(error_after=2), new_id())
    assert (error.code, received) == ("stream_error", 2)
    assert error.detail == "The offline upstream failed mid-stream."
    assert error.detail in error.user_message()


async def test_a_rate_limit_error_as_the_first_event_is_retried_like_a_429(
    offline_upstream, upstream_settings
):
    request_id = new_id()
    error, received = await failure(
        offline_upstream.endpoint, chat(error_after=0, error_status=429), request_id
    )
    assert (error.code, error.status, received) == ("rate_limited", 429, 0)
    assert "limiting requests" in error.user_message()
    assert len(offline_upstream.requests(request_id)) == 1 + upstream_settings.UPSTREAM_MAX_RETRIES


async def test_a_rate_limit_error_after_output_is_not_retried(offline_upstream, upstream_settings):
    request_id = new_id()
    error, received = await failure(
        offline_upstream.endpoint, chat(error_after=2, error_status=429), request_id
    )
    assert (error.code, received) == ("rate_limited", 2)
    assert len(offline_upstream.requests(request_id)) == 1


async def test_a_cancelled_consumer_closes_the_upstream_connection(offline_upstream, upstream_settings):
    request_id = new_id()
    received: list[dict[str, Any]] = []

    async def consume() -> None:
        async for chunk in upstream.stream_chat(
            offline_upstream.endpoint, chat(words=200, pace_ms=20), request_id=request_id
        ):
            received.append(chunk)

    task = asyncio.create_task(consume())
    while len(received) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    entry = offline_upstream.finished(request_id)
    assert entry["outcome"] == "client_closed"
    assert entry["sent_usage"]["completion_tokens"] < 200


async def test_a_consumer_that_stops_early_closes_the_upstream_connection(
    offline_upstream, upstream_settings
):
    request_id = new_id()
    stream = upstream.stream_chat(
        offline_upstream.endpoint, chat(words=200, pace_ms=20), request_id=request_id
    )
    async with aclosing(stream):
        async for chunk in stream:
            if chunk["choices"][0]["delta"].get("content", "").strip() == "flow":
                break
    assert offline_upstream.finished(request_id)["outcome"] == "client_closed"


async def test_complete_chat_returns_the_completion_and_maps_errors(offline_upstream, upstream_settings):
    request_id = new_id()
    payload = {**chat("Title this"), "stream": True, "stream_options": {"include_usage": True}}
    completion = await upstream.complete_chat(offline_upstream.endpoint, payload, request_id=request_id)
    assert completion["choices"][0]["message"]["content"].startswith("**Offline demo.**")
    assert completion["usage"]["total_tokens"] > 0
    body = offline_upstream.request(request_id)["body"]
    assert body["stream"] is False and "stream_options" not in body
    with pytest.raises(UpstreamError) as caught:
        await upstream.complete_chat(offline_upstream.endpoint, chat(model="missing"), request_id=new_id())
    assert caught.value.code == "not_found"


async def test_complete_chat_retries_a_server_error(offline_upstream, upstream_settings):
    request_id = new_id()
    payload = chat(status=503, retry_after=0, fail_times=1)
    completion = await upstream.complete_chat(offline_upstream.endpoint, payload, request_id=request_id)
    assert completion["choices"][0]["message"]["content"]
    assert [a["status"] for a in offline_upstream.requests(request_id)] == [503, 200]


async def test_list_models_returns_the_data_list(offline_upstream, upstream_settings):
    models = await upstream.list_models(offline_upstream.endpoint)
    assert [m["id"] for m in models] == ["offline-chat", "offline-vision", "offline-reasoner"]


async def test_list_models_with_a_wrong_key_is_an_auth_error(offline_upstream_with_key, upstream_settings):
    with pytest.raises(UpstreamError) as caught:
        await upstream.list_models(Endpoint(offline_upstream_with_key.base_url))
    assert (caught.value.code, caught.value.status) == ("auth", 401)


async def test_one_client_serves_each_event_loop(upstream_settings):
    assert upstream.get_client() is upstream.get_client()
