"""A member over a limit, in a real browser: which limit, when to try again, and the text kept."""

import re
import time

import pytest
from playwright.sync_api import expect

from conversations.models import Limit
from tests.fixtures.browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_over_the_rate_the_member_is_told_and_keeps_the_text(open_chat, bob):
    Limit.objects.create(user=bob, kind=Limit.Kind.REQUESTS, period=Limit.Period.MINUTE, amount=1)
    # The window is the clock's minute: both sends must fall in the same one, however slow the machine.
    seconds_into_the_minute = time.time() % 60
    if seconds_into_the_minute > 30:
        time.sleep(60 - seconds_into_the_minute)
    chat = open_chat()
    chat.send("First question")
    expect(chat.last_reply).to_have_class(re.compile(r"status-complete"), timeout=15_000)
    chat.send("Second question, refused")
    error = chat.page.locator("#composer-error")
    expect(error).to_contain_text(
        re.compile(r"Rate limited: at most 1 request per minute\. Try again in \d+ s")
    )
    expect(chat.composer).to_have_value("Second question, refused")
    expect(chat.page.locator(".message-user")).to_have_count(1)  # nothing saved
    shot(chat.page, "rate-limited")


def test_out_of_budget_says_when_it_resets(open_chat, bob):
    Limit.objects.create(user=bob, kind=Limit.Kind.TOKENS, period=Limit.Period.DAY, amount=10)
    chat = open_chat(viewport={"width": 375, "height": 812})
    chat.send("Anything at all")
    error = chat.page.locator("#composer-error")
    expect(error).to_contain_text("Out of budget:")
    expect(error).to_contain_text("tokens per day used")
    expect(error).to_contain_text("It resets on")
    shot(chat.page, "out-of-budget-phone")
