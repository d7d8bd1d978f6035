"""The first run in a real browser: setup link, admin account, an invited member, the offline models."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from conversations import accounts, registry
from tests.fixtures.browser import shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ADMIN_PASSWORD = "admin-quiet-harbour-lantern"
MEMBER_PASSWORD = "grace-velvet-compass-orbit"


def fill_new_account(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password confirmation").fill(password)


@pytest.fixture
def setup_link(live_server_url, settings, offline_upstream) -> str:
    """What `manage.py serve` does on a first start: register the offline upstream, make the setup link."""
    assert not get_user_model().objects.exists()
    settings.OPENAI_BASE_URL = ""
    settings.OFFLINE_UPSTREAM_URL = offline_upstream.base_url
    registry.register_environment_providers()
    return accounts.ensure_setup_link(live_server_url)


def test_an_admin_sets_up_the_site_and_invites_a_member(live_server_url, setup_link, new_context):
    admin = new_context().new_page()
    admin.goto(setup_link)
    expect(admin.get_by_role("heading", name="Create the admin account")).to_be_visible()
    fill_new_account(admin, "ada", ADMIN_PASSWORD)
    shot(admin, "1-setup")
    admin.get_by_role("button", name="Create admin account").click()

    expect(admin).to_have_url(f"{live_server_url}/admin/")
    expect(admin.locator("#user-tools")).to_contain_text("ada")
    shot(admin, "2-admin")

    admin.get_by_role("link", name="Chat models").click()
    expect(admin.locator("#result_list")).to_contain_text("offline-chat")
    shot(admin, "3-models")

    admin.get_by_role("link", name="Home").click()
    admin.get_by_role("link", name="Users").click()
    admin.get_by_role("link", name="Invite a member").click()
    admin.get_by_role("button", name="Create invite link").click()
    invite_link = admin.get_by_label("Invite link").input_value()
    assert invite_link.startswith(f"{live_server_url}/invite/")
    shot(admin, "4-invite-link")

    # Another browser: nothing shared with the admin's.
    member = new_context().new_page()
    member.goto(invite_link)
    fill_new_account(member, "grace", MEMBER_PASSWORD)
    shot(member, "5-join")
    member.get_by_role("button", name="Create my account").click()
    expect(member).to_have_url(f"{live_server_url}/")

    member.get_by_role("button", name="Log out").click()
    expect(member.get_by_role("heading", name="Log in")).to_be_visible()
    member.get_by_label("Username").fill("grace")
    member.get_by_label("Password").fill(MEMBER_PASSWORD)
    member.get_by_role("button", name="Log in").click()
    expect(member).to_have_url(f"{live_server_url}/")
    expect(member.locator(".site-header")).to_contain_text("grace")
    expect(member.get_by_role("link", name="Admin")).to_have_count(0)
    shot(member, "6-member-logged-in")

    admin.goto(f"{live_server_url}/admin/auth/user/")
    expect(admin.locator("#result_list")).to_contain_text("grace")
    grace = get_user_model().objects.get(username="grace")
    assert not grace.is_staff
    # The invite link worked once.
    used = new_context().new_page()
    used.goto(invite_link)
    expect(used.get_by_role("heading", name="This link is no longer valid")).to_be_visible()
