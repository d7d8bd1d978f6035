"""axe-core finds no serious or critical accessibility issue on any page, in light and dark.

axe-core comes from npm (package.json) for these tests only; it is injected into each page checked,
in a context that bypasses the site's CSP, which would rightly refuse an injected script.
"""

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from conversations import accounts
from conversations.models import ChatModel, Conversation, Profile, Provider, UsageRecord
from tests.fixtures.browser import shot
from tests.fixtures.users import ALICE_PASSWORD, BOB_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"
SEVERE = ("serious", "critical")
PHONE = {"viewport": {"width": 375, "height": 812}, "has_touch": True, "is_mobile": True}
THEMES = ["light", "dark"]

# A reply with everything the renderer does: a heading, code, math and a table.
RICH_REPLY = """## Results

```python
def area(radius):
    return 3.14159 * radius ** 2  # a comment long enough to scroll sideways on a phone
```

Inline math $e^{i\\pi} + 1 = 0$ and a display wider than a phone:

$$\\int_0^1 x^2\\,dx = \\frac{1}{3} = \\sum_{n=1}^{\\infty} \\frac{1}{n^2} - \\frac{\\pi^2}{6} + \\frac{1}{3} + a + b + c + d + e + f + g + h + i + j + k + l$$

| Shape | Area | Perimeter | Corners | Example | Notes |
| --- | --- | --- | --- | --- | --- |
| circle | $\\pi r^2$ | $2 \\pi r$ | none | a coin | round |
| square | $a^2$ | $\\frac{a + a + a + a + a + a + a + a + a + a + a + a + a + a + a + a}{4}$ | four | a tile | equal sides |

> A quote with a [link](https://example.com/)."""
SIXTY_WORDS = " ".join(f"word{number:02d}" for number in range(1, 61))

# Lists the serious and critical violations of the whole page, in the words axe uses.
RUN_AXE = """async ([impacts, disabled]) => {
    const rules = Object.fromEntries(disabled.map(id => [id, { enabled: false }]));
    const results = await axe.run(document, { resultTypes: ["violations"], rules });
    return results.violations
        .filter(violation => impacts.includes(violation.impact))
        .map(violation => ({
            id: violation.id,
            impact: violation.impact,
            help: violation.help,
            targets: violation.nodes.slice(0, 4).map(node => node.target.join(" ")),
            count: violation.nodes.length,
        }));
}"""


def offline(**directive: object) -> str:
    return "!offline " + json.dumps(directive)


class Audit:
    """Runs axe on page after page and keeps what it finds, so that one run lists every problem."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked: list[str] = []

    def check(self, page: Page, name: str, disabled: tuple[str, ...] = ()) -> None:
        """disabled: rules not run on this page; only for the Django admin's own markup (say why)."""
        if not page.evaluate("typeof window.axe === 'object'"):
            page.add_script_tag(path=str(AXE))
        theme = page.evaluate("document.documentElement.dataset.theme || ''")
        label = f"{name} [{theme}, {page.viewport_size['width']}px]"
        self.checked.append(label)
        for violation in page.evaluate(RUN_AXE, [list(SEVERE), list(disabled)]):
            targets = ", ".join(violation["targets"])
            more = violation["count"] - len(violation["targets"])
            self.problems.append(
                f"{label}: {violation['id']} ({violation['impact']}) {violation['help']}: {targets}"
                + (f" and {more} more" if more > 0 else "")
            )

    def assert_clean(self) -> None:
        assert self.checked, "no page was checked"
        assert not self.problems, "axe found:\n" + "\n".join(self.problems)


@pytest.fixture
def audit() -> Audit:
    return Audit()


@pytest.fixture
def open_page(new_context: Callable[..., BrowserContext]) -> Callable[..., Page]:
    def open_one(**options: object) -> Page:
        return new_context(bypass_csp=True, **options).new_page()

    return open_one


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(base_url) + "/(admin/)?$"))


def wait_until_connected(page: Page) -> None:
    # hello arrives once the socket is open; the page sets the composer's limit from it.
    expect(page.get_by_label("Message", exact=True)).to_have_attribute("maxlength", re.compile(r"\d+"))


def send(page: Page, text: str) -> None:
    composer = page.get_by_label("Message", exact=True)
    composer.fill(text)
    composer.press("Enter")


def last_reply(page: Page):
    return page.locator(".message-assistant").last


@pytest.mark.parametrize("theme", THEMES)
def test_account_pages_have_no_serious_issue(live_server_url, open_page, audit, bob, alice, theme):
    # Logged out, the pages follow the browser's scheme.
    page = open_page(color_scheme=theme)
    page.goto(f"{live_server_url}/login/")
    audit.check(page, "login")
    page.get_by_label("Username").fill("bob")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-errors")).to_be_visible()
    audit.check(page, "login with an error")

    _, invite = accounts.issue_invite(alice)
    page.goto(f"{live_server_url}{accounts.link_path('invite', invite)}")
    expect(page.get_by_role("button", name="Create my account")).to_be_visible()
    audit.check(page, "invite link")
    _, reset = accounts.issue_reset(bob, alice)
    page.goto(f"{live_server_url}{accounts.link_path('reset', reset)}")
    expect(page.get_by_role("button", name="Set new password")).to_be_visible()
    audit.check(page, "reset link")
    page.goto(f"{live_server_url}{accounts.link_path('setup', 'no-such-token')}")
    expect(page.get_by_role("heading", name="This link is no longer valid")).to_be_visible()
    audit.check(page, "used link")

    # Logged in, the member's choice wins over the browser's.
    Profile.objects.filter(user=bob).update(theme=theme)
    member = open_page(color_scheme="dark" if theme == "light" else "light")
    log_in(member, live_server_url, "bob", BOB_PASSWORD)
    member.goto(f"{live_server_url}/account/")
    expect(member.locator("html")).to_have_attribute("data-theme", theme)
    audit.check(member, "settings")
    member.goto(f"{live_server_url}/account/password/")
    member.get_by_label("Old password").fill("wrong")
    member.get_by_label("New password", exact=True).fill("tangerine-lighthouse-2")
    member.get_by_label("New password confirmation").fill("tangerine-lighthouse-2")
    member.get_by_role("button", name="Change password").click()
    expect(member.locator(".errorlist").first).to_be_visible()
    audit.check(member, "change password with an error")
    shot(member, "change-password")
    audit.assert_clean()


def test_the_setup_page_has_no_serious_issue(live_server_url, open_page, audit):
    # Only while no admin exists.
    setup_link = accounts.ensure_setup_link(live_server_url)
    for theme in THEMES:
        page = open_page(color_scheme=theme)
        page.goto(setup_link)
        expect(page.get_by_role("heading", name="Create the admin account")).to_be_visible()
        audit.check(page, "setup link")
    audit.assert_clean()


@pytest.fixture
def other_conversations(bob, offline_model) -> None:
    Conversation.objects.create(owner=bob, title="Trip to Lisbon", model=offline_model, pinned=True)
    Conversation.objects.create(owner=bob, title="Quarterly numbers", model=offline_model)


def check_all_in_view(page: Page, audit: Audit, name: str) -> None:
    """Check again with every message in view: axe judges the contrast of text it can see only, and the
    messages scroll inside the page."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 4000})
    page.wait_for_function(
        "() => { const el = document.querySelector('#messages-scroller');"
        " return el.scrollHeight <= el.clientHeight; }"
    )
    audit.check(page, f"{name}, all in view")
    page.set_viewport_size(size)


@pytest.mark.parametrize("theme", THEMES)
def test_the_chat_page_has_no_serious_issue(
    live_server_url, open_page, audit, bob, offline_model, other_conversations, theme
):
    Profile.objects.filter(user=bob).update(theme=theme)
    page = open_page(color_scheme="dark" if theme == "light" else "light")
    log_in(page, live_server_url, "bob", BOB_PASSWORD)
    wait_until_connected(page)
    audit.check(page, "chat, empty")

    # One conversation with every kind of reply: rich and regenerated, stopped, failed.
    send(page, offline(reply=RICH_REPLY))
    expect(last_reply(page)).to_have_class(re.compile(r"status-complete"))
    last_reply(page).get_by_role("button", name="Regenerate").click()
    expect(last_reply(page).locator(".version-label")).to_have_text("2/2")
    expect(last_reply(page)).to_have_class(re.compile(r"status-complete"))
    expect(last_reply(page).locator(".katex").first).to_be_visible()
    send(page, offline(reply=SIXTY_WORDS, pace_ms=100))
    expect(last_reply(page).locator(".markdown")).to_contain_text("word03")
    audit.check(page, "chat, a reply streaming")
    page.get_by_role("button", name="Stop").click()
    expect(last_reply(page).locator(".notice-stopped")).to_be_visible()
    send(page, offline(status=400, fail_times=5, fail_key=f"a11y-{theme}", reply="never"))
    expect(last_reply(page).get_by_role("button", name="Retry")).to_be_visible()
    audit.check(page, "chat, a conversation")
    shot(page, "1-conversation")
    check_all_in_view(page, audit, "chat, a conversation")

    search = page.get_by_label("Search conversations")
    search.fill("Lisbon")
    expect(page.locator("#search-results .conversation-item")).to_have_count(1)
    audit.check(page, "chat, search results by title")
    # Found in a message: the result shows a snippet with the word marked.
    search.fill("word03")
    expect(page.locator("#search-results .result-snippet mark").first).to_be_visible()
    audit.check(page, "chat, search results in messages")
    shot(page, "2-search")
    search.press("Escape")

    page.get_by_role("button", name="More").click()
    expect(page.locator("#more-panel")).to_be_visible()
    audit.check(page, "chat, More menu open")
    shot(page, "3-more-menu")
    page.keyboard.press("Escape")
    expect(page.locator("#more-panel")).to_be_hidden()

    page.locator(".message-user").first.get_by_role("button", name="Edit", exact=True).click()
    expect(page.get_by_label("Edit your message")).to_be_focused()
    audit.check(page, "chat, message editor open")
    shot(page, "4-editor")

    phone = open_page(color_scheme="dark" if theme == "light" else "light", **PHONE)
    log_in(phone, live_server_url, "bob", BOB_PASSWORD)
    wait_until_connected(phone)
    audit.check(phone, "phone chat, empty")
    phone.goto(page.url)
    wait_until_connected(phone)
    expect(last_reply(phone).get_by_role("button", name="Retry")).to_be_visible()
    # The phone is narrow enough for every kind of sideways scrolling a reply has.
    scrolling = phone.evaluate(
        """() => [...document.querySelectorAll('.markdown :is(pre, .table-scroll, .katex-display)')]
            .filter(element => element.scrollWidth > element.clientWidth)
            .map(element => element.matches('pre') ? 'pre' : element.className)"""
    )
    assert {"pre", "table-scroll", "katex-display"} <= set(scrolling), scrolling
    audit.check(phone, "phone chat, a conversation")
    check_all_in_view(phone, audit, "phone chat, a conversation")
    shot(phone, "5-phone")
    phone.get_by_role("button", name="Show conversations").click()
    phone.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left === 0")
    audit.check(phone, "phone chat, conversations shown")
    shot(phone, "6-phone-sidebar")
    audit.assert_clean()


@pytest.fixture
def usage_rows(alice, bob, offline_model) -> None:
    conversation = Conversation.objects.create(owner=bob, title="Bob's", model=offline_model)
    for status in [UsageRecord.Status.COMPLETE, UsageRecord.Status.ERROR]:
        UsageRecord.objects.create(
            user=bob,
            conversation=conversation,
            provider=offline_model.provider,
            model=offline_model,
            model_name=offline_model.upstream_id,
            status=status,
            prompt_tokens=12,
            completion_tokens=34,
            finished_at=timezone.now(),
            duration_ms=120,
        )


# Rules not run on some admin pages, for markup that is the Django admin's own (Django 5.2), which
# chatsite does not override; never for chatsite's own pages.
ADMIN_EXCEPTIONS: dict[str, tuple[str, ...]] = {
    # aria-prohibited-attr: SelectFilter2.js (groups, permissions) draws its search icon as a <span>
    # with an aria-label and no role. label: the last login and date joined fields are
    # AdminSplitDateTime, whose date and time inputs have a text before them, not a <label>.
    "admin user change": ("aria-prohibited-attr", "label"),
    # label: the checkboxes of list_editable ("enabled") in the changelist's rows have no <label>.
    "admin chat models": ("label",),
    # aria-prohibited-attr: SelectFilter2.js again (allowed groups).
    "admin chat model change": ("aria-prohibited-attr",),
}


@pytest.mark.parametrize("theme", THEMES)
def test_the_admin_pages_have_no_serious_issue(
    live_server_url, open_page, audit, alice, bob, usage_rows, theme
):
    Profile.objects.filter(user=alice).update(theme=theme)
    page = open_page(color_scheme="dark" if theme == "light" else "light")
    log_in(page, live_server_url, "alice", ALICE_PASSWORD)
    # A chatsite page hands the member's theme to the admin (static/conversations/theme.js).
    page.goto(f"{live_server_url}/account/")
    model = ChatModel.objects.get()
    provider = Provider.objects.get()
    pages = {
        "admin index": "/admin/",
        "admin users": "/admin/auth/user/",
        "admin user change": f"/admin/auth/user/{bob.pk}/change/",
        "admin invite": "/admin/auth/user/invite/",
        "admin conversations": "/admin/conversations/conversation/",
        "admin chat models": "/admin/conversations/chatmodel/",
        "admin chat model change": f"/admin/conversations/chatmodel/{model.pk}/change/",
        "admin providers": "/admin/conversations/provider/",
        "admin provider change": f"/admin/conversations/provider/{provider.pk}/change/",
        "admin usage": "/admin/conversations/usagerecord/",
        "admin messages": "/admin/conversations/message/",
        "admin account links": "/admin/conversations/accountlink/",
    }
    for name, path in pages.items():
        page.goto(f"{live_server_url}{path}")
        expect(page.locator("#content")).to_be_visible()
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        audit.check(page, name, ADMIN_EXCEPTIONS.get(name, ()))
    shot(page, "usage")
    page.goto(f"{live_server_url}/admin/auth/user/invite/")
    page.get_by_role("button", name="Create invite link").click()
    expect(page.get_by_label("Invite link")).to_be_visible()
    audit.check(page, "admin invite link issued")
    audit.assert_clean()
