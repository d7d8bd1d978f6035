"""The usage statistics in Chromium: the admin's page and a member's "My usage", in light and dark,
under the site's real CSP (a blocked inline style or script would show as a console error), and
checked by axe-core as tests/test_browser_a11y.py does."""

import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from conversations.models import Profile, UsageRecord
from tests.fixtures.browser import shot
from tests.fixtures.users import ALICE_PASSWORD, BOB_PASSWORD
from tests.test_browser_a11y import Audit, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def seeded(alice, bob) -> None:
    call_command("seed_usage", records=3000, days=40, users=12, models=4, stdout=io.StringIO())
    # Some of it is bob's, so that his own page has something to show.
    some = UsageRecord.objects.filter(user__username="usage-member-001").values("pk")[:400]
    UsageRecord.objects.filter(pk__in=some).update(user=bob)


def csp_violations(page) -> list[str]:
    found: list[str] = []
    page.on(
        "console",
        lambda message: found.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return found


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_statistics_pages_read_well_in_both_themes(
    live_server_url, new_context, seeded, alice, bob, theme
):
    audit = Audit()
    Profile.objects.filter(user__in=[alice, bob]).update(theme=theme)
    other = "dark" if theme == "light" else "light"

    # The admin: the real CSP (no bypass), so a blocked style or script would be reported.
    admin = new_context(color_scheme=other).new_page()
    blocked = csp_violations(admin)
    log_in(admin, live_server_url, "alice", ALICE_PASSWORD)
    admin.goto(f"{live_server_url}/account/")  # hands the theme to the admin (theme.js)
    admin.goto(f"{live_server_url}/admin/")
    admin.get_by_role("link", name="Usage statistics").click()
    expect(admin.get_by_role("heading", name="Usage statistics")).to_be_visible()
    expect(admin.locator(".usage-chart svg").first).to_be_visible()
    assert admin.locator(".usage-chart").first.locator("rect.bar").count() == 30
    # The bars take the theme's colour from the stylesheet.
    fill = admin.locator("rect.bar").first.evaluate("bar => getComputedStyle(bar).fill")
    assert fill not in ("", "none", "rgb(0, 0, 0)"), fill
    admin.get_by_label("Period", exact=True).select_option("7d")
    admin.get_by_role("button", name="Show").click()
    expect(admin).to_have_url(re.compile(r"period=7d"))
    assert admin.locator(".usage-chart").first.locator("rect.bar").count() == 7
    shot(admin, f"admin-{theme}")
    with admin.expect_download() as download:
        admin.get_by_role("link", name="Export CSV").click()
    assert download.value.suggested_filename.startswith("usage-")

    # Drill down: a top member's records, with the titles of their conversations.
    admin.locator("#usage-user").locator("..").get_by_role("link").first.click()
    expect(admin.locator("#result_list")).to_be_visible()
    expect(admin.locator("#result_list")).to_contain_text("Seeded conversation")
    shot(admin, f"admin-records-{theme}")

    # My usage, from the page header.
    member = new_context(color_scheme=other).new_page()
    blocked += csp_violations(member)
    log_in(member, live_server_url, "bob", BOB_PASSWORD)
    member.goto(f"{live_server_url}/account/")
    member.get_by_role("link", name="My usage").first.click()
    expect(member.get_by_role("heading", name="My usage")).to_be_visible()
    expect(member.locator("html")).to_have_attribute("data-theme", theme)
    expect(member.locator('[data-figure="requests"]')).not_to_have_text("0")
    expect(member.get_by_role("heading", name="Top members")).to_have_count(0)
    shot(member, f"my-usage-{theme}")
    assert not blocked, blocked

    # axe-core is injected, which the CSP rightly refuses: checked in contexts that bypass it.
    checker = new_context(color_scheme=other, bypass_csp=True).new_page()
    log_in(checker, live_server_url, "alice", ALICE_PASSWORD)
    checker.goto(f"{live_server_url}/account/")
    checker.goto(f"{live_server_url}/admin/conversations/usagerecord/statistics/")
    checker.locator(".usage-days summary").click()
    audit.check(checker, "admin usage statistics")
    checker.goto(f"{live_server_url}/admin/conversations/usagerecord/statistics/members/")
    audit.check(checker, "admin usage by member")
    own = new_context(color_scheme=other, bypass_csp=True).new_page()
    log_in(own, live_server_url, "bob", BOB_PASSWORD)
    own.goto(f"{live_server_url}/account/usage/")
    own.locator(".usage-days summary").click()
    audit.check(own, "my usage")
    audit.assert_clean()
