"""Accounts without e-mail: setup, invite and reset links, sessions, throttling, a member's settings.

Longer than most: every account flow in one place, in sections that follow conversations/accounts.py.
"""

import re
import threading
import uuid
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from conversations import accounts
from conversations.client_address import client_address
from conversations.models import AccountLink, ChatModel, MemberSession, Provider
from tests.fixtures.users import ALICE_PASSWORD, BOB_PASSWORD, CHARLIE_PASSWORD, make_user

User = get_user_model()

NEW_PASSWORD = "quiet-violet-harbour-42"
INVALID_PAGE_TEXT = "This link is no longer valid"


@pytest.fixture(autouse=True)
def own_cache(settings):
    # Login counters must neither leak into other tests nor be cleared from a cache others share.
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"accounts-{uuid.uuid4()}",
        }
    }


def setup_token() -> str:
    url = accounts.ensure_setup_link("http://testserver")
    assert url is not None
    return url.rstrip("/").rsplit("/", 1)[1]


def new_account_data(username: str, password: str = NEW_PASSWORD) -> dict[str, str]:
    return {"username": username, "password1": password, "password2": password}


def is_logged_in(client: Client) -> bool:
    return client.get(reverse("account_settings")).status_code == 200


def login(client: Client, username: str, password: str, address: str = "192.0.2.10", **extra: str):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **extra
    )


def shown_link(response) -> str:
    """The path of the one-time link an admin page shows."""
    match = re.search(r'id="account-link"[^>]*value="([^"]+)"', response.content.decode())
    assert match, "no link on the page"
    return urlparse(match.group(1)).path


# --- Setup ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ensure_setup_link_gives_a_link_while_no_admin_exists():
    url = accounts.ensure_setup_link("https://chat.example.org/")
    assert url is not None
    assert re.fullmatch(r"https://chat\.example\.org/setup/[\w-]{20,}/", url)


@pytest.mark.django_db
def test_a_new_setup_link_replaces_the_earlier_one():
    first = setup_token()
    second = setup_token()
    client = Client()
    assert client.get(reverse("setup", args=[first])).status_code == 404
    assert client.get(reverse("setup", args=[second])).status_code == 200


def test_ensure_setup_link_returns_none_once_an_admin_exists(alice):
    assert accounts.ensure_setup_link("http://testserver") is None


@pytest.mark.django_db
def test_setup_link_command_prints_the_link():
    from io import StringIO

    out = StringIO()
    call_command("setup_link", "--base-url", "http://example.test:8000", stdout=out)
    assert re.search(r"http://example\.test:8000/setup/[\w-]+/", out.getvalue())


@pytest.mark.django_db
def test_setup_link_creates_the_first_admin_and_logs_them_in():
    token = setup_token()
    client = Client()
    page = client.get(reverse("setup", args=[token]))
    html = page.content.decode()
    assert 'id="id_username"' in html
    assert 'autocomplete="new-password"' in html
    assert "Create admin account" in html

    response = client.post(reverse("setup", args=[token]), new_account_data("root"))

    assert response.status_code == 302
    assert response.url == reverse("admin:index")
    admin = User.objects.get(username="root")
    assert admin.is_superuser and admin.is_staff and admin.check_password(NEW_PASSWORD)
    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.django_db
def test_it_refuses_a_used_setup_link():
    token = setup_token()
    Client().post(reverse("setup", args=[token]), new_account_data("root"))

    again = Client().post(reverse("setup", args=[token]), new_account_data("intruder"))

    assert again.status_code == 404
    assert INVALID_PAGE_TEXT in again.content.decode()
    assert not User.objects.filter(username="intruder").exists()


@pytest.mark.django_db
def test_a_link_is_claimed_only_once():
    token = setup_token()
    assert accounts.claim_link(AccountLink.Kind.SETUP, token) is not None
    assert accounts.claim_link(AccountLink.Kind.SETUP, token) is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_use_of_one_setup_link_creates_one_admin():
    token = setup_token()
    barrier = threading.Barrier(2)
    results = {}

    def use(name: str) -> None:
        try:
            barrier.wait()
            results[name] = accounts.create_first_admin(token, name, NEW_PASSWORD)
        finally:
            connection.close()

    threads = [threading.Thread(target=use, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(user is None for user in results.values()) == [False, True]
    assert User.objects.filter(is_superuser=True).count() == 1


def test_a_setup_link_stops_working_once_an_admin_exists(db):
    token = setup_token()
    make_user("alice", NEW_PASSWORD, is_staff=True, is_superuser=True)
    response = Client().get(reverse("setup", args=[token]))
    assert response.status_code == 404


@pytest.mark.django_db
def test_setup_checks_the_password():
    token = setup_token()
    response = Client().post(reverse("setup", args=[token]), new_account_data("root", "password"))
    assert response.status_code == 200
    assert "too common" in response.content.decode()
    assert not User.objects.exists()
    assert accounts.find_link(AccountLink.Kind.SETUP, token) is not None


# --- Invites --------------------------------------------------------------------------------------


def test_an_invite_creates_a_member_who_can_log_in(alice):
    link, token = accounts.issue_invite(alice)
    client = Client()

    response = client.post(reverse("accept_invite", args=[token]), new_account_data("dora"))

    assert response.status_code == 302
    assert response.url == reverse("chat")
    dora = User.objects.get(username="dora")
    assert not dora.is_staff and not dora.is_superuser
    assert is_logged_in(client)
    link.refresh_from_db()
    assert link.used_at is not None and link.user == dora
    assert login(Client(), "dora", NEW_PASSWORD).status_code == 302


def test_an_invite_can_make_staff(alice):
    _, token = accounts.issue_invite(alice, make_staff=True)
    Client().post(reverse("accept_invite", args=[token]), new_account_data("dora"))
    dora = User.objects.get(username="dora")
    assert dora.is_staff and not dora.is_superuser


def test_it_refuses_a_used_invite(alice):
    _, token = accounts.issue_invite(alice)
    Client().post(reverse("accept_invite", args=[token]), new_account_data("dora"))
    response = Client().post(reverse("accept_invite", args=[token]), new_account_data("eve"))
    assert response.status_code == 404
    assert not User.objects.filter(username="eve").exists()


def test_it_refuses_an_expired_invite(alice):
    link, token = accounts.issue_invite(alice, hours=1)
    AccountLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = Client().post(reverse("accept_invite", args=[token]), new_account_data("dora"))

    assert response.status_code == 404
    assert INVALID_PAGE_TEXT in response.content.decode()
    assert not User.objects.filter(username="dora").exists()


def test_unknown_used_and_expired_links_look_the_same(alice):
    _, used = accounts.issue_invite(alice)
    Client().post(reverse("accept_invite", args=[used]), new_account_data("dora"))
    expired_link, expired = accounts.issue_invite(alice)
    AccountLink.objects.filter(pk=expired_link.pk).update(expires_at=timezone.now())

    pages = [Client().get(reverse("accept_invite", args=[token])) for token in (used, expired, "nonsense")]

    assert {page.status_code for page in pages} == {404}
    assert len({page.content for page in pages}) == 1


def test_an_invite_refuses_a_taken_username(alice, bob):
    _, token = accounts.issue_invite(alice)
    response = Client().post(reverse("accept_invite", args=[token]), new_account_data("BOB"))
    assert response.status_code == 200
    assert accounts.find_link(AccountLink.Kind.INVITE, token) is not None


def test_an_invite_link_is_not_a_reset_link(alice):
    _, token = accounts.issue_invite(alice)
    assert Client().get(reverse("reset_password", args=[token])).status_code == 404


# --- Password reset -------------------------------------------------------------------------------


def reset_data(password: str = NEW_PASSWORD) -> dict[str, str]:
    return {"new_password1": password, "new_password2": password}


def test_a_reset_link_works_once_and_ends_other_sessions(alice, bob, client_bob):
    _, token = accounts.issue_reset(bob, created_by=alice)
    client = Client()

    response = client.post(reverse("reset_password", args=[token]), reset_data())

    assert response.status_code == 302
    assert not is_logged_in(client_bob)
    assert is_logged_in(client)
    bob.refresh_from_db()
    assert bob.check_password(NEW_PASSWORD)
    again = Client().post(reverse("reset_password", args=[token]), reset_data("another-" + NEW_PASSWORD))
    assert again.status_code == 404
    bob.refresh_from_db()
    assert bob.check_password(NEW_PASSWORD)


def test_a_new_reset_link_replaces_the_earlier_one(alice, bob):
    _, first = accounts.issue_reset(bob, created_by=alice)
    _, second = accounts.issue_reset(bob, created_by=alice)
    assert Client().get(reverse("reset_password", args=[first])).status_code == 404
    assert Client().get(reverse("reset_password", args=[second])).status_code == 200


def test_a_reset_link_does_not_revive_a_deactivated_member(alice, bob):
    _, token = accounts.issue_reset(bob, created_by=alice)
    bob.is_active = False
    bob.save()
    response = Client().post(reverse("reset_password", args=[token]), reset_data())
    assert response.status_code == 404


# --- Sessions -------------------------------------------------------------------------------------


def test_a_deactivated_member_loses_the_session(bob, client_bob):
    session_key = client_bob.session.session_key
    assert MemberSession.objects.filter(user=bob, session_key=session_key).exists()

    bob.is_active = False
    bob.save()

    assert not Session.objects.filter(session_key=session_key).exists()
    assert not MemberSession.objects.filter(user=bob).exists()
    response = client_bob.get(reverse("account_settings"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))
    # The session is gone for good, not merely refused while inactive.
    bob.is_active = True
    bob.save()
    assert not is_logged_in(client_bob)


def test_a_member_changes_password_and_stays_logged_in(bob, client_bob):
    other_device = Client()
    other_device.force_login(bob)

    response = client_bob.post(
        reverse("change_password"),
        {"old_password": BOB_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 302
    assert is_logged_in(client_bob)
    assert not is_logged_in(other_device)
    assert MemberSession.objects.filter(user=bob, session_key=client_bob.session.session_key).exists()
    assert login(Client(), "bob", NEW_PASSWORD).status_code == 302


def test_changing_password_needs_the_old_one(bob, client_bob):
    response = client_bob.post(
        reverse("change_password"),
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    bob.refresh_from_db()
    assert bob.check_password(BOB_PASSWORD)


def test_logout_is_post_only_and_forgets_the_session(bob, client_bob):
    session_key = client_bob.session.session_key
    assert client_bob.get(reverse("logout")).status_code == 405

    response = client_bob.post(reverse("logout"))

    assert response.status_code == 302
    assert not MemberSession.objects.filter(session_key=session_key).exists()
    assert not is_logged_in(client_bob)


# --- Login and throttling -------------------------------------------------------------------------


def test_the_login_page_is_accessible_and_csp_clean(db):
    html = Client().get(reverse("login")).content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert 'autocomplete="username"' in html
    assert 'autocomplete="current-password"' in html
    assert "csrfmiddlewaretoken" in html
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert "style=" not in html


def test_a_member_logs_in(bob):
    response = login(Client(), "bob", BOB_PASSWORD)
    assert response.status_code == 302
    assert response.url == reverse("chat")


@override_settings(LOGIN_THROTTLE_ATTEMPTS=3)
def test_it_throttles_logins_per_account(bob, charlie):
    for number in range(3):
        assert login(Client(), "bob", "wrong", address=f"198.51.100.{number}").status_code == 200

    response = login(Client(), "bob", BOB_PASSWORD, address="198.51.100.99")

    assert response.status_code == 429
    assert "Too many failed attempts" in response.content.decode()
    assert "_auth_user_id" not in response.wsgi_request.session
    # Another account is not held back.
    assert login(Client(), "charlie", CHARLIE_PASSWORD, address="198.51.100.99").status_code == 302


@override_settings(LOGIN_THROTTLE_ATTEMPTS=3)
def test_it_throttles_logins_per_address(bob, charlie):
    for name in ("x", "y", "z"):
        login(Client(), name, "wrong", address="203.0.113.5")

    assert login(Client(), "bob", BOB_PASSWORD, address="203.0.113.5").status_code == 429
    assert login(Client(), "bob", BOB_PASSWORD, address="203.0.113.6").status_code == 302


@override_settings(LOGIN_THROTTLE_ATTEMPTS=3)
def test_a_successful_login_clears_the_account_counter(bob):
    for number in range(2):
        login(Client(), "bob", "wrong", address=f"198.51.100.{number}")
    assert login(Client(), "bob", BOB_PASSWORD, address="198.51.100.50").status_code == 302
    for number in range(2):
        login(Client(), "bob", "wrong", address=f"198.51.100.{10 + number}")
    assert login(Client(), "bob", BOB_PASSWORD, address="198.51.100.51").status_code == 302


@override_settings(LOGIN_THROTTLE_ATTEMPTS=2)
def test_the_account_counter_ignores_case(bob):
    login(Client(), "BOB", "wrong", address="198.51.100.1")
    login(Client(), "Bob", "wrong", address="198.51.100.2")
    assert login(Client(), "bob", BOB_PASSWORD, address="198.51.100.3").status_code == 429


def forwarded_request(remote: str, forwarded: str = ""):
    extra = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **extra)


@override_settings(TRUSTED_PROXIES=["10.0.0.1", "fd00::/8"])
def test_x_forwarded_for_is_honoured_only_from_trusted_proxies():
    assert client_address(forwarded_request("10.0.0.1", "198.51.100.7")) == "198.51.100.7"
    assert client_address(forwarded_request("fd00::5", "198.51.100.7")) == "198.51.100.7"
    assert client_address(forwarded_request("203.0.113.9", "198.51.100.7")) == "203.0.113.9"
    # A client's own header is left of what the trusted proxy appended.
    assert client_address(forwarded_request("10.0.0.1", "1.2.3.4, 198.51.100.7")) == "198.51.100.7"
    assert client_address(forwarded_request("10.0.0.1", "198.51.100.7, 10.0.0.1")) == "198.51.100.7"
    assert client_address(forwarded_request("10.0.0.1")) == "10.0.0.1"


@override_settings(TRUSTED_PROXIES=["10.0.0.1"], LOGIN_THROTTLE_ATTEMPTS=2)
def test_throttling_by_address_sees_through_a_trusted_proxy_only(bob):
    def attempt(username: str, password: str, peer: str, forwarded: str) -> int:
        return login(Client(), username, password, address=peer, HTTP_X_FORWARDED_FOR=forwarded).status_code

    for name in ("x", "y"):
        attempt(name, "wrong", "10.0.0.1", "198.51.100.7")
    assert attempt("bob", BOB_PASSWORD, "10.0.0.1", "198.51.100.7") == 429
    assert attempt("bob", BOB_PASSWORD, "10.0.0.1", "198.51.100.8") == 302

    # An untrusted peer cannot dodge its counter with a made-up header.
    for forwarded in ("192.0.2.1", "192.0.2.2"):
        attempt(f"user-{forwarded}", "wrong", "203.0.113.9", forwarded)
    assert attempt("bob", BOB_PASSWORD, "203.0.113.9", "192.0.2.200") == 429


# --- A member's settings --------------------------------------------------------------------------


def settings_data(**fields: object) -> dict[str, object]:
    """The settings form as a browser posts it: every field, the given ones changed."""
    return {"language": "", "time_zone": "", "default_model": "", "theme": "system", **fields}


def test_a_member_chooses_a_language(bob, client_bob):
    response = client_bob.post(reverse("account_settings"), settings_data(language="zh-hans"))

    assert response.status_code == 302
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    bob.profile.refresh_from_db()
    assert bob.profile.language == "zh-hans"
    assert '<html lang="zh-hans" ' in client_bob.get(reverse("account_settings")).content.decode()

    response = client_bob.post(reverse("account_settings"), settings_data())

    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == ""  # deleted
    page = client_bob.get(reverse("account_settings"), HTTP_ACCEPT_LANGUAGE="en")
    assert '<html lang="en" ' in page.content.decode()


def test_a_member_chooses_a_time_zone(bob, client_bob):
    client_bob.post(reverse("account_settings"), settings_data(time_zone="Asia/Shanghai"))

    bob.profile.refresh_from_db()
    assert bob.profile.time_zone == "Asia/Shanghai"
    assert (
        "Times are now shown in Asia/Shanghai" in client_bob.get(reverse("account_settings")).content.decode()
    )


def test_it_refuses_an_unknown_time_zone(bob, client_bob):
    response = client_bob.post(reverse("account_settings"), settings_data(time_zone="Mars/Olympus"))
    assert response.status_code == 200
    bob.profile.refresh_from_db()
    assert bob.profile.time_zone == ""


def test_the_default_model_is_limited_to_usable_models(bob, client_bob):
    provider = Provider.objects.create(name="p", base_url="http://127.0.0.1:9/v1")
    open_model = ChatModel.objects.create(provider=provider, upstream_id="open", display_name="Open")
    closed_model = ChatModel.objects.create(provider=provider, upstream_id="closed", display_name="Closed")
    closed_model.allowed_groups.add(Group.objects.create(name="insiders"))

    refused = client_bob.post(reverse("account_settings"), settings_data(default_model=closed_model.pk))
    accepted = client_bob.post(reverse("account_settings"), settings_data(default_model=open_model.pk))

    assert refused.status_code == 200
    assert accepted.status_code == 302
    bob.profile.refresh_from_db()
    assert bob.profile.default_model == open_model


def test_account_pages_need_a_login(db):
    for name in ("account_settings", "change_password"):
        response = Client().get(reverse(name))
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


# --- The admin ------------------------------------------------------------------------------------


def test_an_admin_invites_a_member_from_the_admin(alice, client_alice):
    changelist = client_alice.get(reverse("admin:auth_user_changelist")).content.decode()
    assert f'href="{reverse("admin:auth_user_invite")}"' in changelist
    assert "Invite a member" in changelist

    form = client_alice.get(reverse("admin:auth_user_invite"))
    assert form.status_code == 200
    response = client_alice.post(reverse("admin:auth_user_invite"), {"hours": 2, "make_staff": "on"})

    assert response.status_code == 200
    link = AccountLink.objects.get(kind=AccountLink.Kind.INVITE)
    assert link.make_staff and link.created_by == alice
    assert timedelta(hours=1) < link.expires_at - timezone.now() <= timedelta(hours=2)
    invite_path = shown_link(response)
    assert Client().post(invite_path, new_account_data("dora")).status_code == 302
    assert User.objects.get(username="dora").is_staff


def test_an_admin_issues_a_reset_link_from_the_member_page(alice, bob, client_alice):
    change_page = client_alice.get(reverse("admin:auth_user_change", args=[bob.pk])).content.decode()
    reset_url = reverse("admin:auth_user_reset_link", args=[bob.pk])
    assert f'href="{reset_url}"' in change_page
    assert client_alice.get(reset_url).status_code == 200
    assert not AccountLink.objects.exists()  # a GET issues nothing

    response = client_alice.post(reset_url)

    reset_path = shown_link(response)
    assert Client().post(reset_path, reset_data()).status_code == 302
    bob.refresh_from_db()
    assert bob.check_password(NEW_PASSWORD)


def test_an_admin_issues_reset_links_with_an_action(alice, bob, client_alice):
    response = client_alice.post(
        reverse("admin:auth_user_changelist"),
        {"action": "issue_reset_links", "_selected_action": [bob.pk]},
    )
    assert response.status_code == 200
    assert Client().get(shown_link(response)).status_code == 200


def test_an_admin_deactivates_members_with_an_action(alice, bob, client_alice, client_bob):
    client_alice.post(
        reverse("admin:auth_user_changelist"),
        {"action": "deactivate", "_selected_action": [bob.pk, alice.pk]},
    )
    bob.refresh_from_db()
    alice.refresh_from_db()
    assert not bob.is_active
    assert alice.is_active  # never oneself
    assert not is_logged_in(client_bob)


def test_an_admin_gets_no_reset_link_for_a_deactivated_member(alice, bob, client_alice):
    bob.is_active = False
    bob.save()
    response = client_alice.post(reverse("admin:auth_user_reset_link", args=[bob.pk]))
    assert response.status_code == 302
    assert not AccountLink.objects.exists()


def test_a_member_cannot_issue_links(bob, charlie, client_bob):
    for url in (reverse("admin:auth_user_invite"), reverse("admin:auth_user_reset_link", args=[charlie.pk])):
        response = client_bob.post(url, {"hours": 2})
        assert response.status_code == 302
        assert response.url.startswith(reverse("admin:login"))
    assert not AccountLink.objects.exists()


def test_staff_without_permissions_cannot_issue_links(charlie, bob):
    charlie.is_staff = True
    charlie.save()
    client = Client()
    client.force_login(charlie)
    assert client.post(reverse("admin:auth_user_invite"), {"hours": 2}).status_code == 403
    assert client.post(reverse("admin:auth_user_reset_link", args=[bob.pk])).status_code == 403
    assert not AccountLink.objects.exists()


def test_staff_who_may_change_members_cannot_raise_themselves_or_take_over_a_superuser(alice, charlie, bob):
    from django.contrib.auth.models import Permission

    charlie.is_staff = True
    charlie.save()
    charlie.user_permissions.add(
        *Permission.objects.filter(codename__in=["change_user", "view_user"], content_type__app_label="auth")
    )
    client = Client()
    client.force_login(charlie)
    change = reverse("admin:auth_user_change", args=[charlie.pk])
    page = client.get(change)
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert not {"is_staff", "is_superuser", "groups", "user_permissions"} & set(form.fields)
    client.post(
        change,
        {
            "username": "charlie",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "profile-TOTAL_FORMS": "0",
            "profile-INITIAL_FORMS": "0",
        },
    )
    charlie.refresh_from_db()
    assert not charlie.is_superuser

    # A superuser's page, password form and deactivation are out of reach; another member's are not.
    assert (
        client.post(reverse("admin:auth_user_change", args=[alice.pk]), {"username": "x"}).status_code == 403
    )
    password = reverse("admin:auth_user_password_change", args=[alice.pk])
    assert (
        client.post(password, {"password1": "new-pass-9f3k", "password2": "new-pass-9f3k"}).status_code == 403
    )
    assert client.get(reverse("admin:auth_user_change", args=[bob.pk])).status_code == 200
    client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "deactivate", "_selected_action": [alice.pk, bob.pk]},
    )
    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.is_active and alice.check_password(ALICE_PASSWORD)
    assert not bob.is_active
