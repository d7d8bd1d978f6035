"""How long chatsite's server takes to open a long conversation and a long sidebar.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/history.py

Seeds one member with 20,000 conversations, one of them 5,000 messages long (one linear path), in a
database of its own (`chatsite_history`, beside DATABASE_URL's; without
DATABASE_URL, SQLite in a temporary directory). Then starts chatsite under daphne and measures, each
as the median of --repeat tries:

- the chat page of the long conversation and the sidebar's first page, by their Server-Timing
  header (the server's own time, database included);
- the snapshot and one page of `history` over the websocket, from the request frame to the answer
  (the server's time plus a loopback round trip).

Targets: opening the conversation (page plus snapshot) within 300 ms of server time, the sidebar
within 100 ms. A benchmark, not a test: it prints a table and which targets were met.
"""

import argparse
import asyncio
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from relay import (
    BASE_DIR,
    DAPHNE,
    PYTHON,
    Servers,
    bench_database_url,
    drop_database,
    free_port,
    session_cookie,
)

CONVERSATIONS = 20_000
MESSAGES = 5_000
TARGET_OPEN_MS = 300
TARGET_SIDEBAR_MS = 100


def seed_in_django(conversations: int, messages: int) -> dict[str, Any]:
    """Runs in a child process with the server's environment (bulk inserts: seconds, not minutes)."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(BASE_DIR))
    django.setup()
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from conversations.models import Conversation, Message, text_of

    user = get_user_model().objects.create(username="reader")
    now = timezone.now()
    with transaction.atomic():
        Conversation.objects.bulk_create(
            Conversation(owner=user, title=f"Conversation {index}", updated_at=now - timedelta(minutes=index))
            for index in range(conversations - 1)
        )
        long = Conversation.objects.create(owner=user, title="The long one", updated_at=now)
        rows = []
        for index in range(messages):
            role = Message.Role.USER if index % 2 == 0 else Message.Role.ASSISTANT
            parts = [{"type": "text", "text": f"Message {index}: " + "a few words of **markdown** " * 8}]
            rows.append(
                Message(
                    conversation=long,
                    role=role,
                    status=Message.Status.COMPLETE,
                    parts=parts,
                    text=text_of(parts),
                )
            )
        created = Message.objects.bulk_create(rows, batch_size=1000)
        if created[0].pk is None:  # SQLite before 3.35 returns no ids
            created = list(long.messages.order_by("pk"))
        for parent, child in itertools.pairwise(created):
            child.parent_id = parent.pk
        Message.objects.bulk_update(created[1:], ["parent"], batch_size=1000)
        long.current_leaf = created[-1]
        long.save(update_fields=["current_leaf"])
    return {"cookie": session_cookie(user), "conversation": str(long.public_id)}


def server_ms(response: httpx.Response) -> float:
    match = re.search(r"total;dur=([\d.]+)", response.headers.get("Server-Timing", ""))
    if response.status_code != 200 or not match:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.headers}")
    return float(match.group(1))


async def socket_times(
    url: str, origin: str, cookie: str, conversation: str, repeat: int
) -> dict[str, float]:
    from websockets.asyncio.client import connect

    async with connect(url, origin=origin, additional_headers={"Cookie": cookie}, max_size=None) as socket_:
        json.loads(await socket_.recv())  # hello
        snapshots, pages, shown = [], [], 0
        for _ in range(repeat):
            started = time.perf_counter()
            await socket_.send(json.dumps({"type": "subscribe", "conversation": conversation}))
            snapshot = await answer(socket_, "snapshot")
            snapshots.append((time.perf_counter() - started) * 1000)
            shown = len(snapshot["data"]["messages"])
            oldest = snapshot["data"]["messages"][0]["id"]
            started = time.perf_counter()
            await socket_.send(
                json.dumps({"type": "history", "conversation": conversation, "before": oldest})
            )
            await answer(socket_, "history")
            pages.append((time.perf_counter() - started) * 1000)
    return {"snapshot": statistics.median(snapshots), "history": statistics.median(pages), "shown": shown}


async def answer(socket_: Any, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await socket_.recv())
        if message["type"] == kind:
            return message
        if message["type"] == "error":
            raise RuntimeError(f"{kind}: {message}")


def measure(port: int, seeded: dict[str, Any], repeat: int) -> dict[str, float]:
    base = f"http://127.0.0.1:{port}"
    headers = {"Cookie": seeded["cookie"]}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        page = f"/c/{seeded['conversation']}/"
        server_ms(client.get(page))  # warm: imports, first queries, the model catalog
        page_ms = statistics.median(server_ms(client.get(page)) for _ in range(repeat))
        sidebar_ms = statistics.median(server_ms(client.get("/api/conversations/")) for _ in range(repeat))
    socket = asyncio.run(
        socket_times(
            f"ws://127.0.0.1:{port}/ws/chat/", base, seeded["cookie"], seeded["conversation"], repeat
        )
    )
    return {"page": page_ms, "sidebar": sidebar_ms, **socket}


def main() -> None:
    if sys.argv[1:2] == ["_seed"]:
        print(json.dumps(seed_in_django(int(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--pg-database", default="chatsite_history")
    args = parser.parse_args()
    database_url = os.environ.get("DATABASE_URL", "")
    with tempfile.TemporaryDirectory(prefix="chatsite-history-") as tmp:
        servers = Servers(Path(tmp))
        env = {
            **os.environ,
            "CHATSITE_DATA_DIR": str(Path(tmp) / "data"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # nothing is sent upstream here
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        }
        env.pop("SQLITE_PATH", None)
        try:
            if database_url:
                env["DATABASE_URL"] = bench_database_url(database_url, args.pg_database)
            for command in (
                [PYTHON, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
                [PYTHON, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            ):
                subprocess.run(command, cwd=BASE_DIR, env=env, check=True)
            started = time.monotonic()
            seeded = json.loads(
                subprocess.run(
                    [
                        PYTHON,
                        str(Path(__file__).resolve()),
                        "_seed",
                        str(args.conversations),
                        str(args.messages),
                    ],
                    cwd=BASE_DIR,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            print(f"seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
            port = free_port()
            servers.start(
                "chatsite",
                [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"],
                env,
                port,
            )
            figures = measure(port, seeded, args.repeat)
        finally:
            servers.stop()
            if database_url:
                drop_database(database_url, args.pg_database)
    engine = "PostgreSQL" if database_url else "SQLite"
    opened = figures["page"] + figures["snapshot"]
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M:%S %z')}, {engine}, {args.conversations:,} conversations, "
        f"{args.messages:,} messages in the long one, median of {args.repeat}\n"
    )
    print("| what | ms |\n|---|---|")
    print(f"| chat page of the long conversation (Server-Timing) | {figures['page']:.1f} |")
    print(
        f"| snapshot over the socket, {figures['shown']} newest messages (round trip) | {figures['snapshot']:.1f} |"
    )
    print(f"| one page of older messages, `history` (round trip) | {figures['history']:.1f} |")
    print(f"| sidebar's first page (Server-Timing) | {figures['sidebar']:.1f} |")
    print()
    for name, value, limit in (
        ("opening the long conversation, page + snapshot (ms)", opened, TARGET_OPEN_MS),
        (f"the sidebar of {args.conversations:,} conversations (ms)", figures["sidebar"], TARGET_SIDEBAR_MS),
    ):
        print(f"- {'met' if value <= limit else 'MISSED'}: {name} {value:.1f} <= {limit}")


if __name__ == "__main__":
    main()
