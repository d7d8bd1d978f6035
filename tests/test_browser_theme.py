"""Light and dark in a real browser: the header's switch, the system's scheme, the admin, and contrast."""

import json
import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from conversations.models import Conversation, Profile
from tests.fixtures.browser import shot
from tests.fixtures.users import ALICE_PASSWORD, BOB_PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIGHT_BG = "rgb(255, 255, 255)"
DARK_BG = "rgb(21, 23, 27)"
PHONE = {"viewport": {"width": 375, "height": 812}, "has_touch": True, "is_mobile": True}

REPLY = """Here is some code:

```python
def greet(name):
    # Say hello.
    return f"Hello, {name}!" if name else None
```

| Theme | Background |
| --- | --- |
| light | white |
| dark | near black |

> `inline code` in a quote."""

# The contrast ratio (WCAG 2) of an element's text with the first opaque background behind it.
CONTRAST = """element => {
    const rgb = value => value.match(/[\\d.]+/g).map(Number);
    const luminance = ([r, g, b]) => {
        const [R, G, B] = [r, g, b].map(c => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        });
        return 0.2126 * R + 0.7152 * G + 0.0722 * B;
    };
    let node = element;
    let background = null;
    while (node) {
        const color = rgb(getComputedStyle(node).backgroundColor);
        if (color.length === 3 || color[3] === 1) { background = color; break; }
        node = node.parentElement;
    }
    const [a, b] = [luminance(rgb(getComputedStyle(element).color)), luminance(background)];
    return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""

# What a member reads on the chat page; each must stand out from what is behind it (WCAG AA: 4.5).
READABLE = [
    ".site-header .brand",
    "#theme-choice",
    ".conversation-link",
    ".conversation-title",
    ".message-user .message-body",
    ".message-assistant .markdown p",
    ".code-block pre code",
    ".markdown td",
    ".composer-input",
    ".send-button",
]


def offline(**directive: object) -> str:
    return "!offline " + json.dumps(directive)


def log_in(page: Page, base_url: str, username: str = "bob", password: str = BOB_PASSWORD) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(re.escape(base_url) + "/(admin/)?$"))


def background(page: Page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def assert_readable(page: Page) -> None:
    for selector in READABLE:
        element = page.locator(selector).first
        expect(element).to_be_attached()
        ratio = element.evaluate(CONTRAST)
        assert ratio >= 4.5, (
            f"{selector}: contrast {ratio:.2f} in {page.evaluate('document.documentElement.dataset.theme')}"
        )
    # Highlighted code: tokens may be softer than body text, never faint.
    for token in page.locator(".code-block pre code span").all():
        ratio = token.evaluate(CONTRAST)
        assert ratio >= 3, f"code token {token.inner_text()!r}: contrast {ratio:.2f}"


def choose_theme(page: Page, theme: str) -> None:
    """Pick a theme in the header and wait until the server has it."""
    with page.expect_response(lambda response: "/account/theme/" in response.url) as saved:
        page.locator("#theme-switch").get_by_label("Theme").select_option(theme)
    assert saved.value.ok


@pytest.fixture
def chat_with_content(bob, offline_model) -> None:
    """A few conversations in the sidebar; the page sends a reply with code and a table."""
    for title in ["Trip to Lisbon", "Quarterly numbers", "Regex help"]:
        Conversation.objects.create(owner=bob, title=title, model=offline_model)


def open_chat(new_context: Callable[..., BrowserContext], base_url: str, **options: object) -> Page:
    page = new_context(**options).new_page()
    log_in(page, base_url)
    composer = page.get_by_label("Message", exact=True)
    expect(composer).to_have_attribute("maxlength", re.compile(r"\d+"))
    composer.fill(offline(reply=REPLY))
    composer.press("Enter")
    expect(page.locator(".message-assistant").last).to_have_class(re.compile(r"status-complete"))
    expect(page.locator(".code-block pre code")).to_contain_text("Hello")
    # A draft, so that the composer shows text and its send button is enabled.
    composer.fill("A draft, not sent yet")
    return page


def test_choosing_dark_turns_the_page_dark_at_once_and_after_reload(
    new_context, live_server_url, bob, chat_with_content
):
    page = open_chat(new_context, live_server_url, color_scheme="light")
    expect(page.locator("html")).to_have_attribute("data-theme", "system")
    assert background(page) == LIGHT_BG
    assert_readable(page)
    shot(page, "1-light")

    page.evaluate("window.samePage = true")
    choose_theme(page, "dark")

    # The same page, no reload, already dark; and stored for the member.
    assert page.evaluate("window.samePage") is True
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert background(page) == DARK_BG
    bob.profile.refresh_from_db()
    assert bob.profile.theme == "dark"

    page.reload()
    expect(page.locator(".message-assistant").last).to_have_class(re.compile(r"status-complete"))
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    expect(page.locator("#theme-choice")).to_have_value("dark")
    assert background(page) == DARK_BG
    assert_readable(page)
    shot(page, "2-dark")

    # And back, without reloading.
    choose_theme(page, "light")
    assert background(page) == LIGHT_BG


def test_system_follows_a_dark_browser(new_context, live_server_url, bob, chat_with_content):
    page = open_chat(new_context, live_server_url, color_scheme="dark")
    expect(page.locator("html")).to_have_attribute("data-theme", "system")
    assert background(page) == DARK_BG
    assert_readable(page)

    choose_theme(page, "light")
    assert background(page) == LIGHT_BG
    assert_readable(page)

    choose_theme(page, "system")
    assert background(page) == DARK_BG
    bob.profile.refresh_from_db()
    assert bob.profile.theme == "system"


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_a_phone_shows_each_theme(new_context, live_server_url, bob, chat_with_content, theme):
    Profile.objects.filter(user=bob).update(theme=theme)
    # The browser says the opposite: the member's choice wins.
    page = open_chat(
        new_context, live_server_url, color_scheme="dark" if theme == "light" else "light", **PHONE
    )

    assert background(page) == (LIGHT_BG if theme == "light" else DARK_BG)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375, "nothing is wider than the phone"
    expect(page.locator("#theme-choice")).to_be_in_viewport()
    assert_readable(page)
    shot(page, "1-conversation")

    page.get_by_role("button", name="Show conversations").click()
    page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left === 0")
    shot(page, "2-sidebar")


def test_the_admin_follows_the_members_choice(new_context, live_server_url, alice):
    page = new_context(color_scheme="light").new_page()
    log_in(page, live_server_url, "alice", ALICE_PASSWORD)
    page.goto(f"{live_server_url}/account/")

    choose_theme(page, "dark")
    # The settings form on the same page shows the new choice, so saving it keeps it.
    expect(page.get_by_role("combobox", name="Theme").last).to_have_value("dark")
    shot(page, "settings-dark")

    page.get_by_role("navigation", name="Account").get_by_role("link", name="Admin").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    admin_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert admin_background != LIGHT_BG
    shot(page, "admin-dark")


def test_a_phone_header_fits_and_the_account_page_leads_everywhere(new_context, live_server_url, alice):
    page = new_context(**PHONE).new_page()
    log_in(page, live_server_url, "alice", ALICE_PASSWORD)
    page.goto(live_server_url)
    header = page.locator(".site-header")
    # One row: the brand, the theme and the member's name; nothing wider than the phone.
    assert header.evaluate("element => element.getBoundingClientRect().height") < 60
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    account = page.get_by_role("navigation", name="Account")
    expect(account.get_by_role("link", name="My usage")).to_be_hidden()
    expect(account.get_by_role("button", name="Log out")).to_be_hidden()
    shot(page, "phone-header")

    account.get_by_role("link", name="alice").click()
    card = page.locator("main")
    for name in ("My usage", "My shared links", "Admin", "Change your password"):
        expect(card.get_by_role("link", name=name)).to_be_visible()
    shot(page, "phone-account")
    card.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(re.escape(live_server_url) + "/login/"))
