"""Usage that admins can trust to the token: 200 concurrent replies against a real chatsite process,
with Stops, upstream refusals, dropped, broken and usage-less streams, and the process killed with
replies still running. Afterwards every usage record matches the offline upstream's ledger entry of
the same X-Request-ID: the tokens it reported, exactly; an estimate, marked so, where it reported none;
nothing where it refused outright. No request is missing or counted twice. Three rounds in a row."""

import asyncio
import json
import random
import signal
import time

import pytest
import websockets
from django.core.cache import cache

from conversations.models import Conversation, Message, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.fixtures.live import RunningServer, chatsite_server
from tests.fixtures.users import make_user
from tests.websocket_client import offline

pytestmark = pytest.mark.django_db(transaction=True)

STREAMS = 200
OPEN_AT_ONCE = 25
# What each reply is told to do, and how often. "long" replies are still running when the server is
# killed: everything else has ended by then, so no reply can finish in the same instant.
KINDS = {
    "complete": 60,
    "no_usage": 20,
    "stop": 30,
    "refused": 20,
    "dropped": 20,
    "broken": 20,
    "long": 30,
}


def directive(kind: str, rng: random.Random) -> str:
    if kind == "complete":
        return offline(words=rng.randint(5, 60), pace_ms=rng.choice([0, 5, 10]))
    if kind == "no_usage":
        return offline(words=rng.randint(5, 40), pace_ms=5, no_usage=True)
    if kind == "stop":
        # 60 s: a Stop lands long before the upstream could finish, also when the machine is so busy
        # that the member sees deltas many seconds late (seen: over 20 s with the other suite running
        # beside this one). A reply that ended first would be "complete", and one whose final usage
        # chunk sat unread when Stop came would be estimated.
        return offline(words=3000, pace_ms=20)
    if kind == "refused":
        return offline(status=rng.choice([400, 401, 404, 413]))  # not retried: one request each
    if kind == "dropped":
        return offline(words=80, pace_ms=5, drop_after=rng.randint(3, 40))
    if kind == "broken":
        broken = rng.choice(["malformed_after", "error_after"])
        return offline(words=80, pace_ms=5, **{broken: rng.randint(3, 40)})
    # long: 4 min, so that it is still streaming when the server is killed however long the others take
    # (a Stop that lands late leaves its reply running for up to 60 s); killed, it costs no time.
    return offline(words=8000, pace_ms=30)


async def open_socket(server: RunningServer, cookie: bytes):
    socket = await websockets.connect(
        f"ws://127.0.0.1:{server.port}/ws/chat/",
        origin=server.url,
        additional_headers={"Cookie": cookie.decode()},
        max_queue=None,
    )
    assert json.loads(await socket.recv())["type"] == "hello"
    return socket


async def converse(socket, conversation: str, kind: str, text: str, rng: random.Random) -> str:
    """Send, follow the reply until it ends (or, for a long one, until it streams); return how."""
    await socket.send(json.dumps({"type": "send", "conversation": conversation, "text": text, "ref": "r"}))
    stop_after = rng.randint(2, 30)
    seen: list[str] = []
    try:
        async with asyncio.timeout(90):
            return await follow(socket, conversation, kind, stop_after, seen)
    except TimeoutError:
        return f"timeout after {seen[-5:]}"


FINAL = {"complete", "cancelled", "error", "interrupted"}


async def follow(socket, conversation: str, kind: str, stop_after: int, seen: list[str]) -> str:
    """As the browser does: apply deltas in seq order, and on a gap or a silence ask for a snapshot
    (with Redis, a process that falls behind drops messages to full channels; seq tells)."""
    reply_id = None
    last_seq = 0
    stopped = False

    async def resync() -> None:
        await socket.send(json.dumps({"type": "resync", "conversation": conversation}))

    while True:
        try:
            async with asyncio.timeout(5):
                event = json.loads(await socket.recv())
        except TimeoutError:
            await resync()
            continue
        seen.append(f"{event['type']} {event.get('seq')}")
        kind_of_event = event["type"]
        if kind_of_event == "error":
            return f"error {event['code']}"
        if kind_of_event == "message.created" and event["data"]["role"] == "assistant":
            reply_id = event["message"]
        elif kind_of_event == "snapshot":
            messages = event["data"]["messages"]
            if messages and messages[-1]["role"] == "assistant":
                reply_id, last_seq = messages[-1]["id"], messages[-1]["seq"]
                if messages[-1]["status"] in FINAL:
                    return messages[-1]["status"]
        elif kind_of_event == "reply.delta" and event["message"] == reply_id:
            if event["seq"] > last_seq + 1:
                await resync()
                continue
            last_seq = max(last_seq, event["seq"])
        elif kind_of_event == "reply.done" and event["message"] == reply_id:
            return event["data"]["status"]
        if kind == "long" and last_seq >= 3:
            return "streaming"
        if kind == "stop" and last_seq >= stop_after and not stopped:
            stopped = True
            await socket.send(json.dumps({"type": "stop", "conversation": conversation, "message": reply_id}))


async def first_process(
    server: RunningServer, cookies: list[bytes], conversations: list[str], rng: random.Random
) -> list:
    kinds = [kind for kind, count in KINDS.items() for _ in range(count)]
    rng.shuffle(kinds)
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def opened(cookie: bytes):
        async with gate:
            return await open_socket(server, cookie)

    sockets = await asyncio.gather(*(opened(cookie) for cookie in cookies))
    texts = [directive(kind, rng) for kind in kinds]
    seeds = [random.Random(rng.random()) for _ in kinds]
    outcomes = await asyncio.gather(
        *(
            converse(socket, conversation, kind, text, seed)
            for socket, conversation, kind, text, seed in zip(
                sockets, conversations, kinds, texts, seeds, strict=True
            )
        )
    )
    return list(zip(kinds, outcomes, strict=True))


def finished_everywhere(seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while UsageRecord.objects.filter(status=UsageRecord.Status.STARTED).exists():
        assert time.monotonic() < deadline, "usage records still started after the sweeper's time"
        time.sleep(0.2)


def ledger_settled(offline_upstream, seconds: float = 30) -> list[dict]:
    """The ledger once the upstream has noticed every client that left (on its next write)."""
    deadline = time.monotonic() + seconds
    while True:
        entries = offline_upstream.requests()
        if all(entry["outcome"] != "in_progress" for entry in entries):
            return entries
        assert time.monotonic() < deadline, "the offline upstream still has requests in progress"
        time.sleep(0.2)


@pytest.mark.parametrize("round_number", [1, 2, 3])
def test_every_usage_record_matches_the_upstreams_ledger(round_number, offline_model, offline_upstream):
    rng = random.Random(round_number)
    offline_upstream.clear()
    # Live replies' copies in a shared cache (Redis) are by message id, and a new test database numbers
    # messages from 1 again: an earlier run's copy must not pass for a new reply's state.
    cache.clear()
    # A team: each stream is another member's, in a conversation of their own.
    members = [make_user(f"member{i:03}", "a long enough password 1") for i in range(STREAMS)]
    conversations = [
        str(Conversation.objects.create(owner=member, model=offline_model, title="r").public_id)
        for member in members
    ]
    cookies = [session_cookie(member) for member in members]
    # Leases of 10 s, not the 30 s default: the second process takes the killed one's replies over
    # within seconds, yet a first process busy with 200 sends at once still renews in time.
    with chatsite_server(offline_upstream, REPLY_LEASE_SECONDS="10") as first:
        outcomes = asyncio.run(first_process(first, cookies, conversations, rng))
        first.process.send_signal(signal.SIGKILL)  # the long replies are mid-stream
        first.process.wait()
    by_kind: dict[str, set[str]] = {}
    assert not [o for o in outcomes if o[1].startswith("timeout")], [
        o for o in outcomes if o[1].startswith("timeout")
    ]
    refused = [(kind, outcome) for kind, outcome in outcomes if outcome.startswith("error ")]
    assert not refused, refused  # every send was taken: its reply ran (errors end a reply, not a send)
    for kind, outcome in outcomes:
        by_kind.setdefault(kind, set()).add(outcome)
    assert by_kind["complete"] == by_kind["no_usage"] == {"complete"}, by_kind
    assert by_kind["stop"] <= {"cancelled", "complete"} and "cancelled" in by_kind["stop"], by_kind
    assert by_kind["refused"] == by_kind["dropped"] == by_kind["broken"] == {"error"}, by_kind
    assert by_kind["long"] == {"streaming"}, by_kind

    with chatsite_server(offline_upstream, REPLY_LEASE_SECONDS="2") as second:

        async def start_the_sweeper() -> None:
            socket = await open_socket(second, cookies[0])  # a socket starts this process's maintenance
            await asyncio.to_thread(finished_everywhere)
            await socket.close()

        asyncio.run(start_the_sweeper())

    entries = ledger_settled(offline_upstream)
    ledger = {entry["request_id"]: entry for entry in entries}
    records = list(UsageRecord.objects.all())
    kind_of = {
        conversation: kind for conversation, (kind, _outcome) in zip(conversations, outcomes, strict=True)
    }
    missing = [
        (
            kind_of.get(str(record.conversation.public_id)),
            record.status,
            record.estimated,
            record.prompt_tokens,
        )
        for record in UsageRecord.objects.select_related("conversation")
        if str(record.request_id) not in ledger
    ]
    assert not missing, missing
    assert len(ledger) == len(entries) == STREAMS  # one upstream request per reply, none twice
    assert sorted(str(record.request_id) for record in records) == sorted(ledger)  # none missing
    assert Message.objects.filter(role="assistant").count() == STREAMS
    for record in records:
        entry = ledger[str(record.request_id)]
        tokens = (
            record.prompt_tokens,
            record.completion_tokens,
            record.reasoning_tokens,
            record.cached_tokens,
        )
        if entry["usage"] is not None:  # reported: equal to the token
            reported = entry["usage"]
            assert tokens == (
                reported["prompt_tokens"],
                reported["completion_tokens"],
                reported["completion_tokens_details"]["reasoning_tokens"],
                reported["prompt_tokens_details"]["cached_tokens"],
            ), entry
            assert not record.estimated and record.status == UsageRecord.Status.COMPLETE
        elif entry["outcome"] == "error":  # refused before any output: nothing to count
            assert tokens == (0, 0, 0, 0) and not record.estimated, entry
            assert record.status == UsageRecord.Status.ERROR
        else:  # stopped, dropped, broken, no usage sent, or the server died: an estimate, said so
            assert record.estimated, (entry, record.status)
            assert record.status != UsageRecord.Status.STARTED
    interrupted = UsageRecord.objects.filter(status=UsageRecord.Status.INTERRUPTED).count()
    assert interrupted == KINDS["long"]  # the killed process's replies, finished by the sweeper
