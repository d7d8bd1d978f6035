"""`manage.py serve`: what `bootstrap.py run` ends in.

Migrates, collects static files, starts the offline upstream when no OPENAI_BASE_URL is set,
registers the providers, then runs daphne for the app as a child process. The children run in
their own sessions so that Ctrl-C reaches them once, through this process, which forwards SIGINT
and SIGTERM, waits for them, and stops the other one when either dies.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from conversations import accounts, registry

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 20.0


def daphne_command(app: str, host: str, port: int, *options: str) -> list[str]:
    """daphne from the same environment as this interpreter."""
    return [str(Path(sys.executable).parent / "daphne"), "-b", host, "-p", str(port), *options, app]


def url_host(host: str) -> str:
    """The host part of a URL a person can open for a daphne bound to `host`."""
    if host in {"", "0.0.0.0", "::"}:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Stopped(Exception):
    """A signal arrived while the children were starting."""


class Command(BaseCommand):
    help = "Set up the database and static files, then serve chatsite with daphne (and the offline upstream)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("PORT", 8000)), help="port (default $PORT or 8000)"
        )

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        signal.signal(signal.SIGINT, self.forward)
        signal.signal(signal.SIGTERM, self.forward)
        try:
            self.start(host, port)
            code = self.supervise()
        except Stopped:
            code = 0
        finally:
            self.stop_children()
        if code:
            sys.exit(code)

    def start(self, host: str, port: int) -> None:
        call_command("migrate", interactive=False, verbosity=1)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write("Static files collected.")

        app_env = dict(os.environ)
        if not settings.OPENAI_BASE_URL:
            offline = urlsplit(settings.OFFLINE_UPSTREAM_URL)
            offline_process = self.spawn(
                "offline upstream",
                daphne_command(
                    "conversations.offline_upstream:application",
                    offline.hostname or "127.0.0.1",
                    offline.port or 80,
                    # Warnings and errors only: an access line per demo reply is noise.
                    "-v",
                    "0",
                ),
                os.environ,
            )
            models_url = f"{settings.OFFLINE_UPSTREAM_URL}/models"
            self.wait_until(lambda: answers_http(models_url), offline_process, "the offline upstream")
            self.stdout.write(f"Offline upstream answering at {settings.OFFLINE_UPSTREAM_URL}")
            # The app reaches the offline upstream through the provider registry, not the environment.
            app_env.pop("OPENAI_BASE_URL", None)
        registry.register_environment_providers()
        # Children open their own connections; this process needs none while it waits.
        connections.close_all()

        app = self.spawn("chatsite", daphne_command("chatsite.asgi:application", host, port), app_env)
        connect_host = "127.0.0.1" if host in {"", "0.0.0.0"} else "::1" if host == "::" else host
        self.wait_until(lambda: accepts_connections(connect_host, port), app, "chatsite")

        base_url = f"http://{url_host(host)}:{port}/"
        setup_link = accounts.ensure_setup_link(base_url)
        connections.close_all()
        if setup_link:
            rule = "=" * 72
            self.stdout.write(
                self.style.WARNING(
                    f"\n{rule}\n  No admin yet. Open this one-time link to create the admin account:\n\n"
                    f"  {setup_link}\n{rule}\n"
                )
            )
        self.stdout.write(self.style.SUCCESS(f"chatsite is running at {base_url}"))
        self.stdout.write("Press Ctrl-C to stop.")

    def spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        # A session of its own: a terminal's Ctrl-C reaches the child once, forwarded from here.
        process = subprocess.Popen(command, env=env, start_new_session=True)
        self.children.append((name, process))
        return process

    def wait_until(self, ready: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
        """Poll `ready()` until it is true; fail if the process exits or time runs out."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready():
            if self.stopping:
                raise Stopped
            if process.poll() is not None:
                raise CommandError(f"{what} exited with code {process.returncode} while starting")
            if time.monotonic() > deadline:
                raise CommandError(f"{what} did not answer within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.2)

    def forward(self, signum: int, frame: FrameType | None) -> None:
        if not self.children:
            # Nothing to hand the signal to yet: stop the way Python stops by default.
            raise SystemExit(128 + signum)
        self.stopping = True
        for _name, process in self.children:
            if process.poll() is None:
                process.send_signal(signum)

    def supervise(self) -> int:
        """Wait until a signal arrives or a child dies; return the exit code for this process."""
        while not self.stopping:
            for name, process in self.children:
                if process.poll() is not None:
                    self.stderr.write(f"{name} exited with code {process.returncode}; stopping.")
                    # A negative code means a signal killed it; either way this is a failure.
                    return process.returncode if process.returncode > 0 else 1
            time.sleep(0.2)
        return 0

    def stop_children(self) -> None:
        """SIGTERM whatever still runs, wait for it, and kill what outlives the timeout."""
        for _name, process in self.children:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT
        for name, process in self.children:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop within {SHUTDOWN_TIMEOUT:.0f} s; killing it.")
                process.kill()
                process.wait()
