"""Settings chosen from the environment, the deployment checks, the CSP header and SQLite under load.

Each environment is tried in a fresh interpreter, since settings are read once per process.
"""

import asyncio
import hashlib
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.test import override_settings
from django.urls import path

from conversations.models import Conversation

BASE_DIR = Path(__file__).resolve().parent.parent
OPERATIONS_DOC = BASE_DIR / "docs" / "operations.md"

# The variables that choose engines, keys and security settings: cleared so that the caller's
# environment cannot leak into what these tests check.
SETTINGS_VARIABLES = [
    "CHATSITE_DATA_DIR",
    "SECRET_KEY",
    "ENCRYPTION_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "TRUSTED_PROXIES",
    "BEHIND_TLS_PROXY",
    "DATABASE_URL",
    "SQLITE_PATH",
    "SQLITE_TEST_PATH",
    "REDIS_URL",
    "CHANNEL_CAPACITY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OFFLINE_UPSTREAM_URL",
    "OFFLINE_UPSTREAM_PORT",
    "SECURE_SSL_REDIRECT",
    "SECURE_COOKIES",
    "SECURE_HSTS_SECONDS",
    "STATIC_ROOT",
]

PRINT_SETTINGS = """
import hashlib, json
from django.conf import settings
database = settings.DATABASES["default"]
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "ENGINE": database["ENGINE"],
    "OPTIONS": database.get("OPTIONS", {}),
    "CACHE": settings.CACHES["default"]["BACKEND"],
    "CHANNEL_LAYER": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "SECRET_KEY_SHA256": hashlib.sha256(settings.SECRET_KEY.encode()).hexdigest(),
    "SECRET_KEY_LENGTH": len(settings.SECRET_KEY),
}))
"""


def run_python(args: list[str], data_dir: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    environment.update(DJANGO_SETTINGS_MODULE="chatsite.settings", CHATSITE_DATA_DIR=str(data_dir))
    environment.update(variables)
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=environment, capture_output=True, text=True, timeout=120
    )


def settings_under(data_dir: Path, **variables: str) -> dict:
    result = run_python(["-c", PRINT_SETTINGS], data_dir, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def production_variables() -> dict[str, str]:
    """The KEY=value lines of the production block in docs/operations.md, with a real secret key."""
    text = OPERATIONS_DOC.read_text()
    block = re.search(r"<!-- production variables -->\s*```\w*\n(.*?)```", text, re.S)
    assert block, "docs/operations.md lost its production variables block"
    variables = dict(re.findall(r"^([A-Z_]+)=(\S*)", block.group(1), re.M))
    variables["SECRET_KEY"] = secrets.token_urlsafe(64)
    return variables


def test_it_needs_no_service_by_default(tmp_path):
    chosen = settings_under(tmp_path)

    assert chosen["DEBUG"] is False
    assert chosen["ENGINE"] == "django.db.backends.sqlite3"
    assert chosen["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in chosen["OPTIONS"]["init_command"]
    assert chosen["CACHE"] == "django.core.cache.backends.locmem.LocMemCache"
    assert chosen["CHANNEL_LAYER"] == "conversations.channel_layer.LocalChannelLayer"


def test_it_uses_postgresql_from_database_url(tmp_path):
    chosen = settings_under(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test")

    assert chosen["ENGINE"] == "django.db.backends.postgresql"


def test_it_uses_redis_for_cache_and_channel_layer_from_redis_url(tmp_path):
    chosen = settings_under(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0")

    assert chosen["CACHE"] == "django.core.cache.backends.redis.RedisCache"
    assert chosen["CHANNEL_LAYER"] == "channels_redis.pubsub.RedisPubSubChannelLayer"


def test_it_generates_the_secret_key_once_and_keeps_it_private(tmp_path):
    first = settings_under(tmp_path)
    second = settings_under(tmp_path)

    key_file = tmp_path / "secret_key"
    assert first["SECRET_KEY_SHA256"] == second["SECRET_KEY_SHA256"]
    assert first["SECRET_KEY_LENGTH"] >= 50
    assert hashlib.sha256(key_file.read_text().strip().encode()).hexdigest() == first["SECRET_KEY_SHA256"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_it_passes_the_deployment_checks_with_the_documented_variables(tmp_path):
    result = run_python(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **production_variables()
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_it_fails_the_deployment_checks_without_them(tmp_path):
    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path)

    assert result.returncode != 0
    assert "security.W004" in result.stderr  # no HSTS


# --- Content-Security-Policy ----------------------------------------------------------------------


def page_with_a_script(request: HttpRequest) -> HttpResponse:
    template = engines["django"].from_string(
        '<!doctype html><script type="importmap" nonce="{{ CSP_NONCE }}">{}</script>'
    )
    return HttpResponse(template.render({}, request))


urlpatterns = [path("page-with-a-script/", page_with_a_script)]


def directives(response: HttpResponse) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    parts = [part.split() for part in policy.split(";") if part.strip()]
    return {part[0]: part[1:] for part in parts}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/login/", "/login/"])
def test_it_sends_a_strict_policy_with_every_page(client, url):
    response = client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = directives(response)
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'self'" in policy["script-src"]
    assert not {"'unsafe-inline'", "'unsafe-eval'"} & set(policy["script-src"])


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_it_puts_the_page_nonce_in_script_src(client):
    first = client.get("/page-with-a-script/")
    second = client.get("/page-with-a-script/")

    nonce = re.search(r'nonce="([^"]+)"', first.content.decode()).group(1)
    assert f"'nonce-{nonce}'" in directives(first)["script-src"]
    assert f"'nonce-{nonce}'" not in directives(second)["script-src"]


# --- SQLite with concurrent writers ----------------------------------------------------------------

WRITERS = 20
WRITES_PER_WRITER = 5


@pytest.mark.django_db(transaction=True)
def test_sqlite_takes_twenty_concurrent_writers_without_locking_errors(django_user_model):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite settings only")
    owner = django_user_model.objects.create_user("writer")
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def write(writer: int) -> None:
        try:
            start.wait()
            for number in range(WRITES_PER_WRITER):
                # Read, then write: the upgrade from a read lock is what fails without IMMEDIATE.
                with transaction.atomic():
                    count = Conversation.objects.filter(owner=owner).count()
                    Conversation.objects.create(owner=owner, title=f"{writer}-{number} after {count}")
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Conversation.objects.filter(owner=owner).count() == WRITERS * WRITES_PER_WRITER
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        assert cursor.fetchone()[0] == "wal"


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (REDIS_URL)")
async def test_a_burst_of_sends_arrives_whole_through_redis():
    """300 group sends at once, as when 200 replies start together: redis-py 8's pool raises past 100
    connections instead of waiting, which is why pyproject.toml holds it below 8."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("burst", channel)
    await asyncio.gather(*(layer.group_send("burst", {"type": "x", "n": n}) for n in range(300)))
    received = {(await layer.receive(channel))["n"] for _ in range(300)}
    assert received == set(range(300))
    await layer.group_discard("burst", channel)
