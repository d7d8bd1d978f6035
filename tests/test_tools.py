"""Tools the server runs (conversations/tools.py, outbound.py) and the reply loop that calls them
(generation.run_tools), end to end: the offline upstream asks for tools over HTTP, HTTP tools answer
from a real local server, and the websocket shows calls, results and the final answer."""

import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from channels.db import database_sync_to_async

from conversations import context, generation, outbound, tools
from conversations.admin_tools import ToolForm
from conversations.models import Conversation, Message, Tool, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

SECRET = "s3cret-tool-token"


# --- A local HTTP server for the HTTP tools ---------------------------------------------------------


class ToolServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        tool_server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.answer(b"")

            def do_POST(self) -> None:
                self.answer(self.rfile.read(int(self.headers.get("content-length") or 0)))

            def answer(self, body: bytes) -> None:
                started = time.monotonic()
                record = {"path": self.path, "method": self.command, "headers": dict(self.headers)}
                record["body"] = body.decode()
                tool_server.requests.append(record)
                path = self.path.split("?")[0]
                if path == "/slow":
                    time.sleep(0.5)
                    record["started"], record["ended"] = started, time.monotonic()
                    self.reply(200, b"slept")
                elif path == "/sleepy":
                    time.sleep(3)
                    self.reply(200, b"too late")
                elif path == "/big":
                    self.reply(200, b"x" * (tools.RESULT_LIMIT_BYTES + 10))
                elif path == "/big-chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"y" * 8192
                    for _ in range(20):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                elif path == "/fail":
                    self.reply(500, b"broken")
                elif path in ("/echo-headers", "/echo-headers-failing"):
                    status = 200 if path == "/echo-headers" else 400
                    self.reply(status, json.dumps({"headers": dict(self.headers)}).encode())
                elif path == "/to-localhost":
                    self.redirect(tool_server.url("/echo", host="localhost"))
                elif path == "/to-echo":
                    self.redirect("/echo", status=307)
                else:
                    self.reply(200, json.dumps({"got": json.loads(body or b"{}")}).encode())

            def reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def redirect(self, location: str, status: int = 302) -> None:
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def http_tool(url: str, name: str = "lookup", **fields: Any) -> Tool:
    tool = Tool(
        name=name,
        description="Looks something up.",
        parameters_schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        endpoint=url,
        **{"allow_private_address": True, "timeout_seconds": 2.0, **fields},
    )
    tool.set_secret_header_value(SECRET)
    tool.secret_header_name = "X-Tool-Secret"
    tool.save()
    return tool


def call(name: str, **arguments: Any) -> dict[str, str]:
    return {"id": "call_1", "name": name, "arguments": json.dumps(arguments)}


# --- The built-in tools -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [("2 + 2", "4"), ("(2 + 3) * 4 ** 2", "80"), ("0.1 + 0.2", "0.3"), ("7 // 2", "3"), ("sqrt(16)", "4")],
)
def test_the_calculator_computes(expression, result):
    assert tools.calculate(expression) == result


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "().__class__.__bases__",
        "open('/etc/passwd')",
        "lambda: 1",
        "[1] * 10",
        "'a' * 10",
        "9 ** 9 ** 9",
        "2 ** 100000",
        "10 ** 5000 * 10 ** 5000",
        "1e308 * 10",
        "(-8) ** 0.5",
        "1 / 0",
        "-" * 150 + "1",
        "1 +" * 100 + "1",
        "2 ^ 3",
        "x",
        "round(5, -10 ** 1000)",
        "round(5, 2.5)",
    ],
)
def test_the_calculator_refuses_what_is_not_small_arithmetic(expression):
    with pytest.raises(tools.ToolError):
        tools.calculate(expression)


def test_current_time_reads_iana_zones_only():
    assert " in Asia/Shanghai" in tools.current_time("Asia/Shanghai")
    assert tools.current_time("UTC").split("T")[0].count("-") == 2
    for bad in ("../../etc/passwd", "/etc/localtime", "Europe", "Mars/Olympus"):
        with pytest.raises(tools.ToolError):
            tools.current_time(bad)


@pytest.mark.django_db
async def test_a_call_error_is_the_result_text():
    enabled = {"calculator", "current_time"}
    assert await tools.run(call("calculator", expression="6 * 7"), enabled) == "42"
    assert (await tools.run(call("calculator", expression="1/0"), enabled)).startswith("Error: Division")
    assert (await tools.run({"id": "c", "name": "calculator", "arguments": "{nope"}, enabled)).startswith(
        "Error:"
    )
    assert (await tools.run(call("current_time", timezone="Nowhere/Else"), enabled)).startswith("Error:")
    # A tool the conversation did not turn on is not run, whatever the model asks.
    assert "no tool named" in await tools.run(call("current_time"), {"calculator"})


def test_tool_deltas_without_an_index_are_assembled_by_id():
    # Whole calls in one piece each, as some OpenAI-compatible layers send them, then a fragment.
    calls: dict[int, dict[str, str]] = {}
    tools.assemble(calls, [{"id": "a", "function": {"name": "calculator", "arguments": '{"expression": '}}])
    tools.assemble(calls, [{"function": {"arguments": '"2+2"}'}}])
    tools.assemble(
        calls, [{"id": "b", "function": {"name": "current_time", "arguments": '{"timezone": "UTC"}'}}]
    )
    assert calls == {
        0: {"id": "a", "name": "calculator", "arguments": '{"expression": "2+2"}'},
        1: {"id": "b", "name": "current_time", "arguments": '{"timezone": "UTC"}'},
    }


def test_tool_deltas_are_assembled_by_index():
    calls: dict[int, dict[str, str]] = {}
    tools.assemble(calls, [{"index": 0, "id": "a", "function": {"name": "calculator", "arguments": ""}}])
    tools.assemble(
        calls, [{"index": 1, "id": "b", "function": {"name": "current_time", "arguments": '{"time'}}]
    )
    tools.assemble(calls, [{"index": 0, "function": {"arguments": '{"expression"'}}])
    tools.assemble(
        calls,
        [
            {"index": 0, "function": {"arguments": ': "1+1"}'}},
            {"index": 1, "function": {"arguments": 'zone": "UTC"}'}},
        ],
    )
    assert calls == {
        0: {"id": "a", "name": "calculator", "arguments": '{"expression": "1+1"}'},
        1: {"id": "b", "name": "current_time", "arguments": '{"timezone": "UTC"}'},
    }


# --- The address guard ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.1.1",
        "240.0.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
def test_the_guard_refuses_addresses_that_are_not_public(address):
    assert not outbound.is_public(ipaddress.ip_address(address))


def test_the_guard_lets_public_addresses_through():
    assert outbound.is_public(ipaddress.ip_address("93.184.216.34"))
    assert outbound.is_public(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))


async def test_a_name_that_resolves_to_loopback_is_refused():
    with pytest.raises(outbound.OutboundError, match="not public"):
        await outbound.checked_address("localhost", 80, allow_private=False)
    with pytest.raises(outbound.OutboundError, match="not public"):
        await outbound.checked_address("[::ffff:127.0.0.1]", 80, allow_private=False)


# --- HTTP tools -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_http_tool_gets_the_arguments_and_the_secret(tool_server):
    await database_sync_to_async(http_tool)(tool_server.url("/echo"))
    result = await tools.run(call("lookup", q="weather"), {"lookup"})
    assert json.loads(result) == {"got": {"q": "weather"}}
    seen = tool_server.requests[-1]
    assert seen["method"] == "POST" and seen["headers"]["X-Tool-Secret"] == SECRET
    assert seen["headers"]["Host"] == f"127.0.0.1:{tool_server.port}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/echo-headers", "/echo-headers-failing"])
async def test_an_endpoint_that_echoes_the_secret_does_not_show_it(tool_server, path):
    await database_sync_to_async(http_tool)(tool_server.url(path))
    result = await tools.run(call("lookup", q="weather"), {"lookup"})
    assert tool_server.requests[-1]["headers"]["X-Tool-Secret"] == SECRET  # it was sent
    assert SECRET not in result and '"X-Tool-Secret": "***"' in result


@pytest.mark.django_db(transaction=True)
async def test_an_http_tool_checks_arguments_against_its_schema(tool_server):
    await database_sync_to_async(http_tool)(tool_server.url("/echo"))
    count = len(tool_server.requests)
    result = await tools.run(call("lookup", q=5), {"lookup"})
    assert result.startswith("Error: The arguments do not match") and len(tool_server.requests) == count


@pytest.mark.django_db(transaction=True)
async def test_a_private_address_is_refused_unless_allowed(tool_server):
    await database_sync_to_async(http_tool)(tool_server.url("/echo"), allow_private_address=False)
    count = len(tool_server.requests)
    result = await tools.run(call("lookup", q="x"), {"lookup"})
    assert result.startswith("Error:") and "not public" in result
    assert len(tool_server.requests) == count  # nothing was sent


@pytest.mark.django_db(transaction=True)
async def test_a_redirect_is_checked_again(tool_server):
    # The tool's own host is allowed; the host a redirect names is not, though it is the same machine.
    await database_sync_to_async(http_tool)(tool_server.url("/to-localhost"))
    result = await tools.run(call("lookup", q="x"), {"lookup"})
    assert "not public" in result and "localhost" in result
    assert "127.0.0.1" not in result and "::1" not in result  # what the name resolved to stays in the log
    assert tool_server.requests[-1]["path"] == "/to-localhost"
    # A redirect within the allowed host is followed, the method, body and secret kept (307).
    await database_sync_to_async(Tool.objects.filter(name="lookup").update)(
        endpoint=tool_server.url("/to-echo")
    )
    result = await tools.run(call("lookup", q="again"), {"lookup"})
    assert json.loads(result) == {"got": {"q": "again"}}
    assert tool_server.requests[-1]["headers"]["X-Tool-Secret"] == SECRET


@pytest.mark.django_db(transaction=True)
async def test_a_response_over_the_size_limit_is_refused(tool_server):
    await database_sync_to_async(http_tool)(tool_server.url("/big"))
    assert "larger than" in await tools.run(call("lookup", q="x"), {"lookup"})
    await database_sync_to_async(Tool.objects.filter(name="lookup").update)(
        endpoint=tool_server.url("/big-chunked")
    )
    assert "larger than" in await tools.run(call("lookup", q="x"), {"lookup"})


@pytest.mark.django_db(transaction=True)
async def test_a_slow_tool_times_out_and_an_http_error_is_reported(tool_server):
    await database_sync_to_async(http_tool)(tool_server.url("/sleepy"), timeout_seconds=0.3)
    started = time.monotonic()
    result = await tools.run(call("lookup", q="x"), {"lookup"})
    assert "longer than 0.3 s" in result and time.monotonic() - started < 2
    await database_sync_to_async(Tool.objects.filter(name="lookup").update)(endpoint=tool_server.url("/fail"))
    assert await tools.run(call("lookup", q="x"), {"lookup"}) == "Error: The tool answered HTTP 500: broken"


# --- The reply loop over the websocket ------------------------------------------------------------


@pytest.fixture
def bob_cookie(bob):
    return session_cookie(bob)


async def converse(cookie: bytes, conversation: Conversation, text: str) -> tuple[dict, list[dict]]:
    """Send a message; return reply.done and every reply.delta of the reply."""
    socket = Socket(cookie)
    assert await socket.open()
    await socket.send(type="subscribe", conversation=str(conversation.public_id))
    await socket.until("snapshot")
    await socket.send(type="send", conversation=str(conversation.public_id), text=text)
    deltas = []
    while True:
        event = await socket.receive()
        if event["type"] == "reply.delta":
            deltas.append(event)
        if event["type"] == "reply.done":
            break
    await socket.close()
    assert [delta["seq"] for delta in deltas] == list(range(1, len(deltas) + 1))
    return event, deltas


def with_tools(conversation: Conversation, *names: str) -> Conversation:
    conversation.tools = list(names)
    conversation.save(update_fields=["tools"])
    return conversation


def records_of(message_id: int) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(message_id=message_id).order_by("started_at", "pk"))


@pytest.mark.django_db(transaction=True)
async def test_a_tool_call_is_run_and_the_model_answers_with_its_result(
    bob_cookie, bob_conversation, offline_upstream
):
    await database_sync_to_async(with_tools)(bob_conversation, "calculator")
    done, deltas = await converse(
        bob_cookie,
        bob_conversation,
        offline(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}]),
    )
    data = done["data"]
    assert done["data"]["status"] == "complete", data
    kinds = [part["type"] for part in data["parts"]]
    assert kinds == ["tool_call", "tool_result", "text"]
    tool_call, tool_result, answer = data["parts"]
    assert tool_call["name"] == "calculator" and json.loads(tool_call["arguments"]) == {"expression": "6*7"}
    assert tool_result == {
        "type": "tool_result",
        "tool_call_id": tool_call["id"],
        "name": "calculator",
        "content": "42",
    }
    assert "calculator returned 42" in answer["text"]
    # The browser saw the call and the result while the reply ran, in order, before the answer.
    live_parts = [part for delta in deltas for part in delta.get("parts", ())]
    assert live_parts == [tool_call, tool_result]
    first_text = next(n for n, delta in enumerate(deltas) if delta.get("content"))
    assert all("parts" not in delta for delta in deltas[first_text:])

    saved = await database_sync_to_async(Message.objects.get)(pk=done["message"])
    assert saved.parts == data["parts"] and saved.status == "complete" and "42" in saved.text
    # One usage record per upstream request: the first a chat, the one after the tools a tool step.
    records = await database_sync_to_async(records_of)(saved.pk)
    assert [(r.source, r.status) for r in records] == [("chat", "complete"), ("tool_step", "complete")]
    for record in records:
        ledger = offline_upstream.request(str(record.request_id))
        assert record.prompt_tokens == ledger["usage"]["prompt_tokens"]
        assert record.completion_tokens == ledger["usage"]["completion_tokens"]
    first, second = (offline_upstream.request(str(r.request_id))["body"] for r in records)
    assert [tool["function"]["name"] for tool in first["tools"]] == ["calculator"]
    assert second["messages"][-2]["tool_calls"][0]["id"] == tool_call["id"]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": tool_call["id"], "content": "42"}


@pytest.mark.django_db(transaction=True)
async def test_the_offline_demo_uses_the_tools_when_simply_asked(
    bob_cookie, bob_conversation, offline_upstream
):
    """As a new member would try it: no directive, the tools on, a plain question."""
    await database_sync_to_async(with_tools)(bob_conversation, "calculator", "current_time")
    done, _deltas = await converse(bob_cookie, bob_conversation, "What is 17 * (3 + 4)?")
    call, result, answer = done["data"]["parts"]
    assert (call["name"], json.loads(call["arguments"])) == ("calculator", {"expression": "17 * (3 + 4)"})
    assert result["content"] == "119" and "calculator returned 119" in answer["text"]
    done, _deltas = await converse(bob_cookie, bob_conversation, "What time is it in Asia/Tokyo?")
    call, result, _answer = done["data"]["parts"]
    assert json.loads(call["arguments"]) == {"timezone": "Asia/Tokyo"} and "+09:00" in result["content"]


@pytest.mark.django_db(transaction=True)
async def test_two_calls_run_side_by_side(bob_cookie, bob_conversation, offline_upstream, tool_server):
    await database_sync_to_async(http_tool)(tool_server.url("/slow"))
    await database_sync_to_async(with_tools)(bob_conversation, "lookup", "calculator")
    calls = [{"name": "lookup", "arguments": {"q": "one"}}, {"name": "lookup", "arguments": {"q": "two"}}]
    count = len(tool_server.requests)
    done, _ = await converse(bob_cookie, bob_conversation, offline(tool_calls=calls))
    assert done["data"]["status"] == "complete"
    results = [part for part in done["data"]["parts"] if part["type"] == "tool_result"]
    assert [result["content"] for result in results] == ["slept", "slept"]
    first, second = tool_server.requests[count:]
    assert second["started"] < first["ended"] and first["started"] < second["ended"]  # they overlapped


@pytest.mark.django_db(transaction=True)
async def test_a_tool_error_goes_back_to_the_model(bob_cookie, bob_conversation, offline_upstream):
    await database_sync_to_async(with_tools)(bob_conversation, "calculator")
    calls = [{"name": "calculator", "arguments": {"expression": "1/0"}}, {"name": "shell", "arguments": {}}]
    done, _ = await converse(bob_cookie, bob_conversation, offline(tool_calls=calls))
    assert done["data"]["status"] == "complete"
    results = [part["content"] for part in done["data"]["parts"] if part["type"] == "tool_result"]
    assert results[0] == "Error: Division by zero." and "no tool named 'shell'" in results[1]
    assert "calculator returned Error: Division by zero." in done["data"]["parts"][-1]["text"]


@pytest.mark.django_db(transaction=True)
async def test_calls_cut_off_at_the_length_limit_are_not_run(bob_cookie, bob_conversation, offline_upstream):
    await database_sync_to_async(with_tools)(bob_conversation, "calculator")
    calls = [{"name": "calculator", "arguments": '{"expression": "1+'}]  # the limit came mid-arguments
    done, _ = await converse(bob_cookie, bob_conversation, offline(tool_calls=calls, finish_reason="length"))
    data = done["data"]
    assert (data["status"], data["finish_reason"]) == ("complete", "length")
    assert not [part for part in data["parts"] if part["type"] in ("tool_call", "tool_result")]
    assert len(await database_sync_to_async(records_of)(done["message"])) == 1  # no second step


@pytest.mark.django_db(transaction=True)
async def test_the_loop_stops_at_the_step_limit(bob_cookie, bob_conversation, offline_upstream):
    await database_sync_to_async(with_tools)(bob_conversation, "calculator")
    directive = offline(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "1+1"}}], tool_rounds=99
    )
    done, _ = await converse(bob_cookie, bob_conversation, directive)
    data = done["data"]
    assert data["status"] == "error" and data["error"]["code"] == "tool_step_limit"
    results = [part["content"] for part in data["parts"] if part["type"] == "tool_result"]
    assert results == ["2"] * generation.MAX_TOOL_STEPS + [generation.NOT_RUN]
    records = await database_sync_to_async(records_of)(done["message"])
    assert len(records) == generation.MAX_TOOL_STEPS + 1
    assert [r.source for r in records] == ["chat"] + ["tool_step"] * generation.MAX_TOOL_STEPS
    assert [r.status for r in records] == ["complete"] * generation.MAX_TOOL_STEPS + ["error"]


@pytest.mark.django_db(transaction=True)
async def test_the_next_message_sends_the_tool_steps_back(bob_cookie, bob_conversation, offline_upstream):
    await database_sync_to_async(with_tools)(bob_conversation, "current_time")
    first, _ = await converse(
        bob_cookie,
        bob_conversation,
        offline(tool_calls=[{"name": "current_time", "arguments": {"timezone": "UTC"}}]),
    )
    assert first["data"]["status"] == "complete"
    done, _ = await converse(bob_cookie, bob_conversation, "And now?")
    [record] = await database_sync_to_async(records_of)(done["message"])
    messages = offline_upstream.request(str(record.request_id))["body"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "current_time"
    assert messages[2]["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
    assert " in UTC" in messages[2]["content"]


@pytest.mark.django_db(transaction=True)
async def test_stop_while_a_tool_runs_keeps_the_call(
    bob_cookie, bob_conversation, offline_upstream, tool_server
):
    await database_sync_to_async(http_tool)(tool_server.url("/sleepy"), timeout_seconds=10)
    await database_sync_to_async(with_tools)(bob_conversation, "lookup")
    socket = Socket(bob_cookie)
    assert await socket.open()
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(
        type="send",
        conversation=conversation,
        text=offline(tool_calls=[{"name": "lookup", "arguments": {"q": "x"}}]),
    )
    delta = await socket.until("reply.delta")
    assert delta["parts"][0]["type"] == "tool_call"
    # A tab that opens now gets the call in its snapshot, with the seq that counts it.
    other = Socket(bob_cookie)
    assert await other.open()
    await other.send(type="subscribe", conversation=conversation)
    snapshot = await other.until("snapshot")
    await other.close()
    live = snapshot["data"]["messages"][-1]
    assert live["seq"] == delta["seq"] and live["parts"] == delta["parts"]
    await socket.send(type="stop", conversation=conversation, message=delta["message"])
    done = await socket.until("reply.done", timeout=5)
    await socket.close()
    assert done["data"]["status"] == "cancelled"
    assert [part["type"] for part in done["data"]["parts"]] == ["tool_call"]
    records = await database_sync_to_async(records_of)(done["message"])
    assert [(r.source, r.status) for r in records] == [("chat", "complete")]
    # The call without a result is sent back with a stand-in result, as APIs require one.
    saved = await database_sync_to_async(Message.objects.get)(pk=done["message"])
    turns = context.tool_turns(saved.parts)
    assert turns[-1] == {"role": "tool", "tool_call_id": saved.parts[0]["id"], "content": context.NO_RESULT}


# --- The admin form -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ('{"type": "object", "properties": {"q": {"type": "strin"}}}', "not a valid JSON schema"),
        ('{"type": "array"}', "must describe an object"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_the_admin_refuses_an_invalid_schema(schema, problem):
    form = ToolForm(
        data={
            "name": "lookup",
            "description": "Looks up.",
            "parameters_schema": schema,
            "endpoint": "https://tools.example.com/lookup",
            "timeout_seconds": "5",
        }
    )
    assert not form.is_valid()
    assert problem in str(form.errors["parameters_schema"])


@pytest.mark.django_db
def test_the_admin_keeps_the_secret_write_only():
    data = {
        "name": "lookup",
        "description": "Looks up.",
        "parameters_schema": '{"type": "object", "properties": {"q": {"type": "string"}}}',
        "endpoint": "https://tools.example.com/lookup",
        "timeout_seconds": "5",
        "secret_header_name": "Authorization",
        "secret_header_value": "Bearer abcdef123456",
    }
    form = ToolForm(data=data)
    assert form.is_valid(), form.errors
    tool = form.save()
    assert tool.secret_header_value == "Bearer abcdef123456"
    assert "abcdef123456" not in tool.secret_header_value_encrypted
    form = ToolForm(data={**data, "secret_header_value": ""}, instance=tool)
    assert form.is_valid(), form.errors
    assert form.save().secret_header_value == "Bearer abcdef123456"  # blank keeps the stored one
    assert "abcdef123456" not in str(ToolForm(instance=tool).as_p())
    assert ToolForm(data={**data, "name": "calculator"}).errors["name"]  # a built-in's name is taken
    # The stored secret does not follow a new endpoint unseen: it must be given again or removed.
    moved = {**data, "secret_header_value": "", "endpoint": "https://elsewhere.example.com/echo"}
    assert ToolForm(data=moved, instance=tool).errors["secret_header_value"]
    removed = ToolForm(data={**moved, "remove_secret": "on"}, instance=tool)
    assert removed.is_valid(), removed.errors
    assert removed.save().secret_header_value == ""


@pytest.mark.django_db
def test_the_admin_pages_show_the_secret_masked(client_alice):
    secret = "tool-secret-value-9876"
    fields = {
        "name": "lookup",
        "description": "Looks up.",
        "parameters_schema": '{"type": "object", "properties": {"q": {"type": "string"}}}',
        "endpoint": "https://tools.example.com/lookup",
        "secret_header_name": "X-Key",
        "secret_header_value": secret,
        "timeout_seconds": "5",
        "enabled": "on",
    }
    added = client_alice.post("/admin/conversations/tool/add/", fields)
    assert added.status_code == 302
    assert list(added.wsgi_request.sensitive_post_parameters) == ["secret_header_value"]
    tool = Tool.objects.get(name="lookup")
    assert tool.secret_header_value == secret
    refused = client_alice.post(
        f"/admin/conversations/tool/{tool.pk}/change/", {**fields, "parameters_schema": '{"type": "array"}'}
    )
    assert refused.status_code == 200 and "must describe an object" in refused.content.decode()
    listing = client_alice.get("/admin/conversations/tool/")
    change = client_alice.get(f"/admin/conversations/tool/{tool.pk}/change/")
    for page in (refused, listing, change):
        assert secret not in page.content.decode()
    assert "…9876" in listing.content.decode()


# --- HTTPS: the connection goes to the checked address, the certificate is checked for the name -------


def certificate_pair(tmp_path, name: str) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for `name`: (CA PEM, certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("chatsite test CA", ca_key, "chatsite test CA", ca_key, ca=True)
    server = build(name, server_key, "chatsite test CA", ca_key, ca=False)
    certificate, key = tmp_path / "server.pem", tmp_path / "server.key"
    certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca.public_bytes(serialization.Encoding.PEM).decode(), str(certificate), str(key)


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    """The tool server over TLS with a certificate for `name`; the tools trust the test CA only."""
    servers = []

    def start(name: str) -> tuple[ToolServer, list[str]]:
        ca_pem, certificate, key = certificate_pair(tmp_path, name)
        names: list[str] = []
        context_ = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context_.load_cert_chain(certificate, key)
        context_.sni_callback = lambda _socket, server_name, _context: names.append(server_name)
        server = ToolServer()
        server.server.socket = context_.wrap_socket(server.server.socket, server_side=True)
        server.thread.start()
        servers.append(server)
        monkeypatch.setattr(outbound, "_ssl_context", lambda: ssl.create_default_context(cadata=ca_pem))
        return server, names

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


@pytest.mark.django_db(transaction=True)
async def test_https_checks_the_certificate_for_the_name_while_connecting_to_the_address(tls_server):
    server, names = tls_server("localhost")
    url = f"https://localhost:{server.port}/echo"
    await database_sync_to_async(http_tool)(url)
    assert json.loads(await tools.run(call("lookup", q="tls"), {"lookup"})) == {"got": {"q": "tls"}}
    assert names == ["localhost"]  # SNI named the host, though the socket went to the checked IP
    assert server.requests[-1]["headers"]["Host"] == f"localhost:{server.port}"


@pytest.mark.django_db(transaction=True)
async def test_https_refuses_a_certificate_for_another_name(tls_server):
    server, _ = tls_server("elsewhere.test")
    await database_sync_to_async(http_tool)(f"https://localhost:{server.port}/echo")
    result = await tools.run(call("lookup", q="tls"), {"lookup"})
    assert result.startswith("Error: The call to localhost failed") and "certificate" in result.lower()
    assert server.requests == []
