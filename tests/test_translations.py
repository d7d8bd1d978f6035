"""The Simplified Chinese catalog: complete, compiled, and used on pages and on the chat socket."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse
from django.utils import translation

from conversations.models import Profile
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

BASE_DIR = Path(django_settings.BASE_DIR)
PO_FILE = Path(django_settings.LOCALE_PATHS[0]) / "zh_Hans" / "LC_MESSAGES" / "django.po"
PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|\{\w*\}|</?[a-zA-Z][^>]*>")
CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class Entry:
    msgid: str
    msgid_plural: str
    msgstrs: list[str]
    fuzzy: bool


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file, header left out; enough of the format for the files makemessages writes."""
    entries = []
    for block in path.read_text(encoding="utf-8").strip().split("\n\n"):
        fields: dict[str, str] = {}
        current = ""
        fuzzy = False
        for line in block.splitlines():
            if line.startswith("#,"):
                fuzzy = fuzzy or "fuzzy" in line
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                fields[current] += ast.literal_eval(line)
            else:
                current, _, value = line.partition(" ")
                fields[current] = ast.literal_eval(value)
        if fields.get("msgid"):
            msgstrs = [value for key, value in fields.items() if key.startswith("msgstr")]
            entries.append(Entry(fields["msgid"], fields.get("msgid_plural", ""), msgstrs, fuzzy))
    return entries


ENTRIES = read_po(PO_FILE)


@pytest.fixture
def plain_static_files(settings):
    # The manifest storage needs collectstatic; these pages only need {% static %} to produce a URL.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def zh(message: str) -> str:
    with translation.override("zh-hans"):
        return translation.gettext(message)


def test_every_message_has_a_chinese_translation():
    assert len(ENTRIES) > 100
    assert [entry.msgid for entry in ENTRIES if entry.fuzzy] == []
    assert [entry.msgid for entry in ENTRIES if not all(entry.msgstrs)] == []
    # Names like "JSON" stay as they are; anything longer is written in Chinese.
    assert [
        entry.msgid for entry in ENTRIES if len(entry.msgid) > 8 and not CJK.search(entry.msgstrs[0])
    ] == []


def test_translations_keep_every_placeholder():
    for entry in ENTRIES:
        # Chinese has one plural form, which stands for the English plural: it may name the count
        # that a singular like "One member used…" leaves out.
        english = set(PLACEHOLDER.findall(entry.msgid_plural or entry.msgid))
        for msgstr in entry.msgstrs:
            assert set(PLACEHOLDER.findall(msgstr)) == english, entry.msgid


def test_the_compiled_catalog_matches_the_po_file():
    """django.mo is committed; a .po edited without compilemessages shows up here."""
    stale = []
    with translation.override("zh-hans"):
        for entry in ENTRIES:
            if entry.msgid_plural:
                translated = translation.ngettext(entry.msgid, entry.msgid_plural, 2)
            else:
                translated = translation.gettext(entry.msgid)
            if translated != entry.msgstrs[0]:
                stale.append(entry.msgid)
    assert stale == []


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (apt-get install gettext)")
def test_the_catalog_holds_every_marked_string(tmp_path):
    """makemessages run on a copy of the sources finds nothing the catalog lacks, nor anything it no longer needs."""
    shutil.copy(BASE_DIR / "manage.py", tmp_path)
    for name in ["chatsite", "conversations", "templates", "locale"]:
        shutil.copytree(BASE_DIR / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    environment = {**os.environ, "CHATSITE_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": "x" * 50}
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-l", "zh_Hans", "--no-location"],
        cwd=tmp_path,
        env=environment,
        check=True,
        capture_output=True,
    )
    fresh = read_po(tmp_path / PO_FILE.relative_to(BASE_DIR))
    assert sorted(entry.msgid for entry in fresh) == sorted(entry.msgid for entry in ENTRIES)


def test_the_login_page_follows_the_browser_language(db, plain_static_files):
    chinese = Client().get(reverse("login"), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert '<html lang="zh-hans" ' in chinese
    assert '<h1 id="page-heading">登录</h1>' in chinese
    assert "还没有账户" in chinese  # a sentence only chatsite's catalog has; Django's own knows "Log in"
    assert "Log in" not in chinese


def test_the_login_page_is_in_english_by_default(db, plain_static_files):
    english = Client().get(reverse("login")).content.decode()
    assert '<html lang="en" ' in english
    assert '<h1 id="page-heading">Log in</h1>' in english
    assert not CJK.search(english)


def test_the_chat_page_and_its_script_strings_follow_the_member_language(
    client_bob, bob, offline_model, plain_static_files
):
    Profile.objects.filter(user=bob).update(language="zh-hans")
    html = client_bob.get(reverse("chat")).content.decode()
    assert "新对话" in html and "停止" in html
    # The strings chat.js shows arrive in the page's json_script block.
    data = re.search(r'<script id="chat-data" type="application/json">(.*?)</script>', html, re.S)
    strings = json.loads(data.group(1))["strings"]
    assert strings["regenerate"] == "重新生成" and strings["stopped"] == "已停止"


@pytest.mark.django_db(transaction=True)
async def test_socket_errors_are_in_the_member_language(bob, charlie):
    await database_sync_to_async(Profile.objects.filter(user=bob).update)(language="zh-hans")
    bob_socket = Socket(await database_sync_to_async(session_cookie)(bob))
    charlie_socket = Socket(await database_sync_to_async(session_cookie)(charlie))
    details = {}
    for name, socket in {"bob": bob_socket, "charlie": charlie_socket}.items():
        assert await socket.open()
        await socket.communicator.send_to(text_data="[not json")
        error = await socket.until("error")
        await socket.close()
        assert error["code"] == "bad_json"
        details[name] = error["detail"]
    assert details["bob"] == zh("The frame is not a JSON object.") and CJK.search(details["bob"])
    assert details["charlie"] == "The frame is not a JSON object."


@pytest.mark.django_db(transaction=True)
async def test_an_upstream_error_reaches_the_member_in_their_language(bob, bob_conversation, settings):
    settings.UPSTREAM_MAX_RETRIES = 0
    await database_sync_to_async(Profile.objects.filter(user=bob).update)(language="zh-hans")
    socket = Socket(await database_sync_to_async(session_cookie)(bob))
    assert await socket.open()
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(type="send", conversation=conversation, text=offline(status=429))
    done = await socket.until("reply.done")
    await socket.close()
    error = done["data"]["error"]
    assert error["code"] == "rate_limited"
    assert error["detail"] == zh("The provider is limiting requests (%(status)s). Try again in a moment.") % {
        "status": 429
    }
    assert CJK.search(error["detail"])
