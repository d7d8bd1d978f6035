"""What chatsite's relay costs a member: time to first token, per-delta latency and server CPU, against
the floor of reading the same streams straight from the upstream.

    .venv/bin/python bench/relay.py            # 1, 50 and 200 streams, 100 deltas 20 ms apart
    .venv/bin/python bench/relay.py --quick    # a smoke run of a few seconds

One command starts the offline upstream and chatsite (daphne each) on free ports with a fresh data
directory, then for each level opens that many chat sockets, sends one `!offline {"timestamps": N}`
message on each at once and times every delta by the send time the upstream wrote into it.
bench/README.md explains the columns.

Longer than the usual 400 lines: the servers' setup, the two clients, the CPU accounting and the
report belong to one run that nothing else imports; split, each part would be read only with the others.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAPHNE = str(Path(PYTHON).parent / "daphne")
# Short replies sent at once: the server CPU a request costs apart from its deltas.
REQUEST_STREAMS = 50
REQUESTS_PATH = "requests"
REQUEST_PAUSE_MS = 1000
REQUESTS_PROFILE_LEVEL = 0  # the requests row's profile is PATH.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT = 60.0
OPEN_AT_ONCE = 25  # handshakes in flight; a browser crowd arrives spread out, not in one instant
CLIENT_BUSY_PERCENT = 50.0
SETTLE_SECONDS = 1.0

TARGETS = (
    "added TTFT p50 <= 10 ms at 1 stream and <= 250 ms at 50; server CPU per request <= 5 ms; "
    "added delta latency p50 <= 2 ms and p99 <= 15 ms at 50 streams; every stream complete at 200"
)


# --- Servers ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_ms(pid: int, main_thread: bool = False) -> float:
    """User plus system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15); with
    main_thread, of its main thread only: daphne's event loop, apart from the database threads."""
    stat = f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS


class Servers:
    """The subprocesses of one run; each is ended (SIGTERM, then SIGKILL) whatever ends the run."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}

    def start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        port: int,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("w")
        # A session of its own: a Ctrl-C reaches the benchmark, which then ends the servers itself.
        process = subprocess.Popen(
            command, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        deadline = time.monotonic() + startup_timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def bench_database_url(url: str, name: str) -> str:
    """Recreate database `name` beside DATABASE_URL's (PostgreSQL) and return its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urlsplit(url)._replace(path=f"/{name}").geturl()


def drop_database(url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def prepare(env: dict[str, str], conversations: int) -> dict[str, Any]:
    """Migrate, then create the bench user, its session, the provider and the conversations."""
    for command in (
        [PYTHON, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        [PYTHON, str(Path(__file__).resolve()), "_setup", str(conversations)],
    ):
        result = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command[1:3])} failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def session_cookie(user: Any) -> str:
    """The cookie of a new session of `user`, as logging in makes one (runs inside Django)."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from conversations.models import MemberSession

    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    MemberSession.objects.create(user=user, session_key=session.session_key)
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def setup_in_django(count: int) -> dict[str, Any]:
    """Runs in a child process with the servers' environment, so this process never loads Django's ORM."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(BASE_DIR))
    django.setup()

    from django.contrib.auth import get_user_model

    from conversations.models import ChatModel, Conversation
    from conversations.registry import register_environment_providers

    register_environment_providers()
    model = ChatModel.objects.get(provider__is_environment=True, upstream_id="offline-chat")
    # One member per stream, as in a team: a member's own events (the sidebar's) reach only their tabs.
    cookies, conversations = [], []
    for index in range(count):
        user, _created = get_user_model().objects.get_or_create(username=f"bench{index}")
        user.set_unusable_password()
        user.save()
        conversation = Conversation.objects.create(owner=user, title=f"bench {index}", model=model)
        cookies.append(session_cookie(user))
        conversations.append(str(conversation.public_id))
    return {"cookies": dict(zip(conversations, cookies, strict=True)), "conversations": conversations}


def serve_profiled(out: str, argv: list[str]) -> None:
    """daphne under cProfile in every thread (the ORM runs in database_sync_to_async's thread).

    Timed by each thread's CPU clock: a socket call or query that releases the GIL and waits for
    it again would otherwise be charged with the other thread's work.

    SIGUSR1 empties the profiles, SIGUSR2 writes them to `out`: the benchmark brackets each level's
    chatsite measurement with the two, so startup and connection setup stay out of the numbers.
    """
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []

    def profile_thread(*_args: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    class Snapshot:
        def __init__(self, profile: cProfile.Profile) -> None:
            profile.snapshot_stats()
            self.stats = profile.stats

        def create_stats(self) -> None:
            pass

    def clear(*_args: Any) -> None:
        # Safe across threads: the profiles' state changes only under the GIL.
        for profile in profiles:
            profile.clear()

    def dump(*_args: Any) -> None:
        stats = pstats.Stats(Snapshot(profiles[0]))
        for profile in profiles[1:]:
            stats.add(Snapshot(profile))
        stats.dump_stats(f"{out}.tmp")
        os.replace(f"{out}.tmp", out)

    signal.signal(signal.SIGUSR1, clear)
    signal.signal(signal.SIGUSR2, dump)
    threading.setprofile(profile_thread)
    from daphne.cli import CommandLineInterface

    sys.argv = ["daphne", *argv]
    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    main.enable()
    CommandLineInterface.entrypoint()


def collect_profile(pid: int, out: str, level: int) -> None:
    """Have the profiled server write its profile of the level just measured, kept as `out`.<level>."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(out)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not os.path.exists(out):
        if time.monotonic() > deadline:
            raise RuntimeError("the profiled server wrote no profile")
        time.sleep(0.05)
    os.replace(out, f"{out}.{level}")


# --- Clients ----------------------------------------------------------------------------------------


@dataclass
class Stream:
    """What one stream received. Times are time.time_ns(), the clock the upstream stamps deltas with."""

    sent_at: int = 0
    first_at: int = 0
    latencies: list[int] = field(default_factory=list)
    last_seq: int = 0
    gaps: int = 0
    status: str = ""
    error: str = ""

    def complete(self, deltas: int) -> bool:
        return self.status == "complete" and self.gaps == 0 and len(self.latencies) == deltas


def directive(run: "Run") -> str:
    options: dict[str, Any] = {"timestamps": run.deltas, "pace_ms": run.pace_ms}
    if run.pause_after_first_ms:
        options |= {"stall_after": 1, "stall_ms": run.pause_after_first_ms}
    return "!offline " + json.dumps(options)


async def open_socket(url: str, origin: str, cookie: str, conversation: str) -> Any:
    """A chat socket subscribed to one conversation, its hello and snapshot read."""
    from websockets.asyncio.client import connect

    # No compression: daphne does not negotiate permessage-deflate, so browsers get none either.
    socket_ = await connect(
        url, origin=origin, additional_headers={"Cookie": cookie}, compression=None, open_timeout=60
    )
    hello = json.loads(await socket_.recv())
    if hello.get("type") != "hello":
        raise RuntimeError(f"expected hello, got {hello.get('type')}")
    await socket_.send(json.dumps({"type": "subscribe", "conversation": conversation}))
    while True:
        message = json.loads(await socket_.recv())
        if message.get("type") == "snapshot":
            return socket_
        if message.get("type") == "error":
            raise RuntimeError(f"subscribe refused: {message.get('code')}")


async def chatsite_stream(
    socket_: Any, conversation: str, text: str, stream: Stream, go: asyncio.Event
) -> None:
    loads, now = json.loads, time.time_ns
    await go.wait()
    await socket_.send(json.dumps({"type": "send", "conversation": conversation, "text": text}))
    stream.sent_at = now()
    try:
        while True:
            raw = await socket_.recv()
            arrived = now()
            message = loads(raw)
            kind = message["type"]
            if kind == "reply.delta":
                if not stream.first_at:
                    stream.first_at = arrived
                seq = message["seq"]
                if seq != stream.last_seq + 1:
                    stream.gaps += 1
                stream.last_seq = seq
                # A busy server sends the pieces that piled up as one delta: each keeps its stamp.
                for stamp in message["content"].split():
                    stream.latencies.append(arrived - int(stamp))
            elif kind == "reply.done":
                stream.status = message["data"]["status"]
                if message["seq"] != stream.last_seq:
                    stream.gaps += 1
                return
            elif kind == "error":
                stream.error = message.get("code") or "error"
                return
    except Exception as error:
        stream.error = f"{type(error).__name__}: {error}"


async def floor_stream(base_url: str, text: str, stream: Stream, go: asyncio.Event) -> None:
    """The same request through chatsite's own upstream client, straight from the upstream."""
    from conversations import upstream

    endpoint = upstream.Endpoint(base_url=base_url)
    payload = {"model": "offline-chat", "messages": [{"role": "user", "content": text}]}
    now = time.time_ns
    await go.wait()
    stream.sent_at = now()
    try:
        async for chunk in upstream.stream_chat(endpoint, payload, request_id=f"bench-{uuid.uuid4().hex}"):
            arrived = now()
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if not stream.first_at:
                        stream.first_at = arrived
                    stream.last_seq += 1
                    for stamp in content.split():
                        stream.latencies.append(arrived - int(stamp))
        stream.status = "complete"
    except Exception as error:
        stream.error = f"{type(error).__name__}: {error}"


def configure_floor_client() -> None:
    """upstream.py reads only its timeouts from Django's settings: the same ones chatsite uses."""
    sys.path.insert(0, str(BASE_DIR))
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            USE_I18N=False,
            UPSTREAM_CONNECT_TIMEOUT=float(os.environ.get("UPSTREAM_CONNECT_TIMEOUT", 10)),
            UPSTREAM_FIRST_BYTE_TIMEOUT=float(os.environ.get("UPSTREAM_FIRST_BYTE_TIMEOUT", 60)),
            UPSTREAM_IDLE_TIMEOUT=float(os.environ.get("UPSTREAM_IDLE_TIMEOUT", 60)),
            UPSTREAM_TOTAL_TIMEOUT=float(os.environ.get("UPSTREAM_TOTAL_TIMEOUT", 600)),
            UPSTREAM_MAX_RETRIES=int(os.environ.get("UPSTREAM_MAX_RETRIES", 2)),
        )


# --- One level ------------------------------------------------------------------------------------

StreamStart = Callable[[Stream, asyncio.Event], Awaitable[None]]


@dataclass
class Run:
    chatsite_pid: int
    upstream_pid: int
    ws_url: str
    origin: str
    cookies: dict[str, str]
    upstream_url: str
    deltas: int
    pace_ms: float
    timeout: float
    profile: str = ""  # where a profiled chatsite writes its profiles
    pause_after_first_ms: float = 0  # the upstream's pause after the first delta


@dataclass
class Measured:
    streams: list[Stream]
    wall_s: float
    server_ms: float | None
    upstream_ms: float
    client_ms: float
    connect_server_ms: float | None = None
    # The server's CPU from the sends until every stream had its first delta (or failed).
    first_token_server_ms: float | None = None
    event_loop_ms: float | None = None  # of server_ms, the main thread's: all but the database work


async def measure(run: Run, starts: list[StreamStart], profile_level: int | None = None) -> Measured:
    """Start every stream at once; CPU is counted from just before the start to the last reply's end."""
    profiled = bool(run.profile) and profile_level is not None
    go = asyncio.Event()
    streams = [Stream() for _ in starts]
    tasks = [asyncio.create_task(start(stream, go)) for start, stream in zip(starts, streams, strict=True)]
    await asyncio.sleep(0)  # every task now waits on `go`
    if profiled:
        os.kill(run.chatsite_pid, signal.SIGUSR1)
    server_before, upstream_before = cpu_ms(run.chatsite_pid), cpu_ms(run.upstream_pid)
    loop_before = cpu_ms(run.chatsite_pid, main_thread=True)
    client_before, wall_before = time.process_time(), time.monotonic()
    go.set()
    first_tokens = asyncio.create_task(cpu_at_first_tokens(run.chatsite_pid, streams, tasks))
    _done, pending = await asyncio.wait(tasks, timeout=run.timeout)
    wall = time.monotonic() - wall_before
    client = (time.process_time() - client_before) * 1000
    server = cpu_ms(run.chatsite_pid) - server_before
    event_loop = cpu_ms(run.chatsite_pid, main_thread=True) - loop_before
    upstream_cpu = cpu_ms(run.upstream_pid) - upstream_before
    if profiled:
        collect_profile(run.chatsite_pid, run.profile, profile_level)
    for task, stream in zip(tasks, streams, strict=True):
        if task in pending:
            task.cancel()
            stream.error = stream.error or "timed out"
    await asyncio.gather(*pending, return_exceptions=True)
    first_tokens.cancel()
    first_token_cpu = None
    with contextlib.suppress(asyncio.CancelledError):
        first_token_cpu = await first_tokens
    if first_token_cpu is not None:
        first_token_cpu -= server_before
    return Measured(
        streams,
        wall,
        server,
        upstream_cpu,
        client,
        first_token_server_ms=first_token_cpu,
        event_loop_ms=event_loop,
    )


async def cpu_at_first_tokens(pid: int, streams: list[Stream], tasks: list[asyncio.Task]) -> float:
    """The server's CPU total once every stream has its first delta: what requests cost before any
    reply is seen (some early streams' later deltas are in it too, so it errs high)."""
    while not all(stream.first_at or task.done() for stream, task in zip(streams, tasks, strict=True)):
        await asyncio.sleep(0.001)
    return cpu_ms(pid)


async def chatsite_level(run: Run, conversations: list[str], level: int | None = None) -> Measured:
    text = directive(run)
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def opened(conversation: str) -> Any:
        async with gate:
            return await open_socket(run.ws_url, run.origin, run.cookies[conversation], conversation)

    before = cpu_ms(run.chatsite_pid)
    sockets = await asyncio.gather(*(opened(c) for c in conversations))
    connect_ms = cpu_ms(run.chatsite_pid) - before
    try:
        measured = await measure(
            run,
            [partial(chatsite_stream, s, c, text) for s, c in zip(sockets, conversations, strict=True)],
            profile_level=level,
        )
    finally:
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    measured.connect_server_ms = connect_ms
    return measured


async def floor_level(run: Run, count: int) -> Measured:
    text = directive(run)
    measured = await measure(run, [partial(floor_stream, run.upstream_url, text)] * count)
    measured.server_ms = measured.event_loop_ms = None  # chatsite is idle meanwhile
    return measured


async def run_levels(run: Run, conversations: list[str], levels: list[int]) -> list[dict[str, Any]]:
    from conversations import upstream

    # Warm both paths (imports, first queries, pooled connections) outside the measurements.
    warm = replace(run, deltas=5, pace_ms=0)
    await chatsite_level(warm, conversations[:1])
    await floor_level(warm, 1)
    rows: list[dict[str, Any]] = []
    offset = 1  # each level's sends go into conversations of their own
    for level in levels:
        floor = summarize(level, "floor", await floor_level(run, level), run.deltas)
        await asyncio.sleep(SETTLE_SECONDS)
        site = summarize(
            level,
            "chatsite",
            await chatsite_level(run, conversations[offset : offset + level], level),
            run.deltas,
        )
        offset += level
        await asyncio.sleep(SETTLE_SECONDS)
        for name in ("ttft_p50", "delta_p50", "delta_p99"):
            if site[name] is not None and floor[name] is not None:
                site[f"added_{name}"] = site[name] - floor[name]
        rows += [site, floor]
        print(f"level {level}: done", file=sys.stderr, flush=True)
    # What a request costs apart from its deltas: replies of two deltas, all at once. The upstream
    # pauses after the first, so that no reply is finishing while others still wait for theirs.
    short = replace(run, deltas=2, pace_ms=0, pause_after_first_ms=REQUEST_PAUSE_MS)
    requests = conversations[offset : offset + REQUEST_STREAMS]
    measured = await chatsite_level(short, requests, REQUESTS_PROFILE_LEVEL)
    rows.append(summarize(REQUEST_STREAMS, REQUESTS_PATH, measured, 2))
    await upstream.close_client()
    return rows


# --- Report -----------------------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest rank of an already sorted list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None


def summarize(level: int, path: str, measured: Measured, deltas: int) -> dict[str, Any]:
    streams = measured.streams
    ttft = sorted((s.first_at - s.sent_at) / 1e6 for s in streams if s.first_at)
    latencies = sorted(ns / 1e6 for s in streams for ns in s.latencies)
    received = len(latencies)
    errors = sorted({s.error for s in streams if s.error})
    server = measured.server_ms
    return {
        "level": level,
        "path": path,
        "streams": len(streams),
        "complete": sum(s.complete(deltas) for s in streams),
        "deltas_received": received,
        "gaps": sum(s.gaps for s in streams),
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p95": percentile(ttft, 0.95),
        "added_ttft_p50": None,
        "delta_p50": percentile(latencies, 0.5),
        "delta_p99": percentile(latencies, 0.99),
        "added_delta_p50": None,
        "added_delta_p99": None,
        "server_cpu_ms_per_1k_deltas": server / received * 1000 if server is not None and received else None,
        "server_cpu_ms_per_request": server / len(streams) if server is not None else None,
        "server_cpu_ms_per_request_to_first_token": (
            measured.first_token_server_ms / len(streams)
            if measured.first_token_server_ms is not None and server is not None
            else None
        ),
        "server_event_loop_cpu_percent": (
            measured.event_loop_ms / server * 100 if measured.event_loop_ms is not None and server else None
        ),
        "server_connect_cpu_ms_per_socket": (
            measured.connect_server_ms / len(streams) if measured.connect_server_ms is not None else None
        ),
        "upstream_cpu_ms_per_1k_deltas": measured.upstream_ms / received * 1000 if received else None,
        "client_cpu_percent": measured.client_ms / (measured.wall_s * 1000) * 100,
        "wall_s": measured.wall_s,
        "errors": errors[:5],
    }


COLUMNS = [
    ("streams", "streams", "{}"),
    ("complete", "complete", "{}"),
    ("TTFT p50", "ttft_p50", "{:.1f}"),
    ("TTFT p95", "ttft_p95", "{:.1f}"),
    ("added TTFT p50", "added_ttft_p50", "{:+.1f}"),
    ("delta p50", "delta_p50", "{:.2f}"),
    ("delta p99", "delta_p99", "{:.2f}"),
    ("added p50", "added_delta_p50", "{:+.2f}"),
    ("added p99", "added_delta_p99", "{:+.2f}"),
    ("server CPU ms/1k deltas", "server_cpu_ms_per_1k_deltas", "{:.0f}"),
    ("server CPU ms/request", "server_cpu_ms_per_request", "{:.1f}"),
    ("… to first token", "server_cpu_ms_per_request_to_first_token", "{:.1f}"),
    ("… on the event loop %", "server_event_loop_cpu_percent", "{:.0f}"),
    ("upstream CPU ms/1k deltas", "upstream_cpu_ms_per_1k_deltas", "{:.0f}"),
    ("client CPU %", "client_cpu_percent", "{:.0f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| level | path | " + " | ".join(title for title, _key, _f in COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 2),
    ]
    for row in rows:
        cells = ["-" if row[key] is None else fmt.format(row[key]) for _title, key, fmt in COLUMNS]
        lines.append(f"| {row['level']} | {row['path']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_targets(rows: list[dict[str, Any]], pace_ms: float) -> list[str]:
    site = {row["level"]: row for row in rows if row["path"] == "chatsite"}
    checks: list[tuple[str, float | None, float]] = []
    if 1 in site:
        checks.append(("added TTFT p50 at 1 stream (ms)", site[1]["added_ttft_p50"], 10))
    if 50 in site:
        checks += [
            ("added TTFT p50 at 50 streams (ms)", site[50]["added_ttft_p50"], 250),
            ("added delta latency p50 at 50 streams (ms)", site[50]["added_delta_p50"], 2),
            ("added delta latency p99 at 50 streams (ms)", site[50]["added_delta_p99"], 15),
        ]
    for row in rows:
        if row["path"] == REQUESTS_PATH:
            name = f"server CPU per request, {row['level']} two-delta replies at once (ms)"
            checks.append((name, row["server_cpu_ms_per_request"], 5))
            name = f"server CPU per request before its first token, {row['level']} at once (ms)"
            checks.append((name, row["server_cpu_ms_per_request_to_first_token"], 5))
    lines = [
        f"- {'met' if value is not None and value <= limit else 'MISSED'}: {name} "
        f"{'-' if value is None else f'{value:.1f}'} <= {limit}"
        for name, value, limit in checks
    ]
    if 200 in site:
        row = site[200]
        ok = row["complete"] == row["streams"]
        lines.append(
            f"- {'met' if ok else 'MISSED'}: complete at 200 streams {row['complete']}/{row['streams']}"
        )
    floor = min((row for row in rows if row["path"] == "floor"), key=lambda row: row["level"], default=None)
    if floor and pace_ms and floor["delta_p50"] is not None and floor["delta_p50"] > pace_ms / 2:
        lines.append(
            f"- note: the floor's delta latency p50 ({floor['delta_p50']:.1f} ms at {floor['level']}) is near "
            f"the pace ({pace_ms:g} ms): the upstream seems to stamp a delta before its pause, not when it "
            "is sent; the added columns are still comparable, the absolute ones are not"
        )
    for row in rows:
        if row["client_cpu_percent"] > CLIENT_BUSY_PERCENT:
            lines.append(
                f"- note: the client used {row['client_cpu_percent']:.0f}% of a core at {row['level']} "
                f"({row['path']}); its own delay is in the latencies"
            )
        if row["errors"]:
            lines.append(f"- errors at {row['level']} ({row['path']}): {'; '.join(row['errors'])}")
    return lines


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {core_speed():.2f} s per calibration loop"


def core_speed() -> float:
    """CPU seconds of a fixed pure-Python loop: the same VM model name can hide hosts of quite
    different speed, and every figure here scales with it; compare runs by this first."""
    started = time.process_time()
    sum(number * number for number in range(10_000_000))
    return time.process_time() - started


# --- The run ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="chatsite relay benchmark (bench/README.md).")
    parser.add_argument(
        "--levels", default="1,50,200", help="concurrent streams per level (default 1,50,200)"
    )
    parser.add_argument("--deltas", type=int, default=100, help="deltas per reply (default 100)")
    parser.add_argument(
        "--pace-ms", type=float, default=20, help="upstream pause between deltas (default 20)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: levels 1,5 and 20 deltas")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="profile chatsite (all threads) during each level's measurement: PATH.<level>",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="seconds a level may take before its streams count as incomplete",
    )
    parser.add_argument("--logs", metavar="DIR", help="keep the servers' logs in DIR")
    parser.add_argument("--pg-database", default="chatsite_bench", help="database created with DATABASE_URL")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.deltas = "1,5", 20
    args.levels = [int(level) for level in args.levels.split(",")]
    return args


LevelsRunner = Callable[[Run, list[str], list[int]], Awaitable[list[dict[str, Any]]]]


def benchmark(
    args: argparse.Namespace,
    runner: LevelsRunner = run_levels,
    conversations: int = 0,
    launcher: tuple[str, ...] = (),
    application: str = "chatsite.asgi:application",
) -> dict[str, Any]:
    """Start the servers, run `runner` against them, stop them. bench/instructions.py runs chatsite
    (or another application) under `launcher`, with `conversations` ready for its own rounds."""
    database_url = os.environ.get("DATABASE_URL", "")
    engines = ("PostgreSQL" if database_url else "SQLite") + (
        " + Redis" if os.environ.get("REDIS_URL") else " + in-memory channel layer"
    )
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="chatsite-bench-") as tmp:
        log_dir = Path(args.logs or tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        servers = Servers(log_dir)
        bench_url = ""
        try:
            upstream_port, chatsite_port = free_port(), free_port()
            upstream_env = {**os.environ}
            for name in ("OFFLINE_UPSTREAM_API_KEY", "OFFLINE_UPSTREAM_PACE_MS"):
                upstream_env.pop(name, None)
            address = ["-b", "127.0.0.1", "-p"]
            upstream_process = servers.start(
                "upstream",
                [DAPHNE, *address, str(upstream_port), "conversations.offline_upstream:application"],
                upstream_env,
                upstream_port,
            )
            upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
            env = {
                **os.environ,
                "CHATSITE_DATA_DIR": str(Path(tmp) / "data"),
                "OPENAI_BASE_URL": upstream_url,
                "OPENAI_API_KEY": "",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "LOG_LEVEL": "WARNING",
                "DEBUG": "0",
                "DJANGO_SETTINGS_MODULE": "chatsite.settings",
            }
            env.pop("SQLITE_PATH", None)
            if database_url:
                bench_url = env["DATABASE_URL"] = bench_database_url(database_url, args.pg_database)
            prepared = prepare(env, conversations or 1 + sum(args.levels) + REQUEST_STREAMS)
            serve = [*address, str(chatsite_port), application]
            if args.profile:
                command = [PYTHON, str(Path(__file__).resolve()), "_profiled", args.profile, *serve]
            else:
                command = [*launcher, PYTHON, DAPHNE, *serve] if launcher else [DAPHNE, *serve]
            # Under a launcher (valgrind) the server starts many times slower.
            startup = STARTUP_TIMEOUT * (10 if launcher else 1)
            chatsite_process = servers.start("chatsite", command, env, chatsite_port, startup)
            run = Run(
                chatsite_pid=chatsite_process.pid,
                upstream_pid=upstream_process.pid,
                ws_url=f"ws://127.0.0.1:{chatsite_port}/ws/chat/",
                origin=f"http://127.0.0.1:{chatsite_port}",
                cookies=prepared["cookies"],
                upstream_url=upstream_url,
                deltas=args.deltas,
                pace_ms=args.pace_ms,
                timeout=args.timeout,
                profile=str(Path(args.profile).resolve()) if args.profile else "",
            )
            configure_floor_client()
            rows = asyncio.run(runner(run, prepared["conversations"], args.levels))
        except Exception:
            for name in servers.processes:
                print(f"--- {name} log (last lines) ---\n{servers.log_tail(name)}", file=sys.stderr)
            raise
        finally:
            servers.stop()
            if bench_url:
                drop_database(database_url, args.pg_database)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine(),
        "load_average_before": round(load, 2),
        "engines": engines,
        "deltas": args.deltas,
        "pace_ms": args.pace_ms,
        "rows": rows,
    }


def main() -> None:
    if sys.argv[1:2] == ["_setup"]:
        print(json.dumps(setup_in_django(int(sys.argv[2]))))
        return
    if sys.argv[1:2] == ["_profiled"]:
        serve_profiled(sys.argv[2], sys.argv[3:])
        return
    args = parse_args()
    # SIGTERM ends the run like Ctrl-C does, through the `finally` that stops the servers; SIGINT is
    # restored because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        report = benchmark(args)
    except KeyboardInterrupt:
        sys.exit("interrupted; the servers were stopped")
    report["targets"] = check_targets(report["rows"], report["pace_ms"])
    print(
        f"\n{report['date']}, {report['machine']}, {report['engines']}, "
        f"{report['deltas']} deltas {report['pace_ms']:g} ms apart, load average before {report['load_average_before']}\n"
    )
    print(table(report["rows"]))
    print("\nTargets (" + TARGETS + "):")
    print("\n".join(report["targets"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
