"""The chat in Chinese, in a real browser: the page's words, the script's words and the server's
errors all follow the member's language."""

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, expect

from conversations.models import Profile
from tests.fixtures.browser import shot
from tests.fixtures.chat_page import Chat
from tests.websocket_client import offline

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chinese_chat(
    new_context: Callable[..., BrowserContext], live_server_url: str, bob, offline_model
) -> Chat:
    chat = Chat(new_context(locale="en-US").new_page(), live_server_url)
    chat.log_in()
    Profile.objects.filter(user=bob).update(language="zh-hans", theme="dark")
    chat.page.reload()
    return chat


def test_a_chinese_member_chats_in_chinese(chinese_chat):
    page = chinese_chat.page
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.get_by_role("link", name="新对话")).to_be_visible()
    composer = page.get_by_placeholder("发送消息…")
    expect(composer).to_be_visible()

    composer.fill(offline(reply="北京今天晴 最高气温 **25°C**。", pace_ms=300))
    composer.press("Enter")
    expect(page.get_by_role("button", name="停止")).to_be_visible()  # a string of the script's
    reply = page.locator(".message-assistant").last
    expect(reply).to_contain_text("北京今天晴")
    expect(reply).to_have_class(re.compile("status-complete"), timeout=15_000)
    expect(reply.get_by_role("button", name="重新生成")).to_be_visible()

    composer.fill(offline(status=429))
    composer.press("Enter")
    failed = page.locator(".message-assistant").last
    expect(failed.get_by_role("alert")).to_contain_text("请求")  # the server's error, in Chinese
    shot(page, "chinese-dark")
