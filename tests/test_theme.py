"""A member's theme: stored on the profile, chosen in settings or in the header, on every page's <html>."""

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations.models import Profile

JSON = {"HTTP_ACCEPT": "application/json"}


def html_theme(response) -> str:
    match = re.search(r'<html [^>]*data-theme="([^"]*)"', response.content.decode())
    assert match, "no data-theme on <html>"
    return match.group(1)


def test_a_new_member_follows_the_system(bob):
    assert bob.profile.theme == Profile.Theme.SYSTEM


def test_every_page_carries_the_members_theme(bob, client_bob):
    Profile.objects.filter(user=bob).update(theme="dark")

    assert html_theme(client_bob.get(reverse("chat"))) == "dark"
    page = client_bob.get(reverse("account_settings"))
    assert html_theme(page) == "dark"
    # The header's switch shows the choice.
    assert re.search(r'<option value="dark" selected>', page.content.decode())


def test_pages_before_login_follow_the_system(db):
    assert html_theme(Client().get(reverse("login"))) == "system"


def test_the_theme_costs_no_query_of_its_own(bob, client_bob):
    Profile.objects.filter(user=bob).update(theme="light")

    with CaptureQueriesContext(connection) as queries:
        response = client_bob.get(reverse("chat"))

    assert html_theme(response) == "light"
    # The preferences middleware reads the profile once; the template reuses it.
    profile_table = Profile._meta.db_table
    assert len([query for query in queries if profile_table in query["sql"]]) == 1


def test_the_settings_form_saves_the_theme(bob, client_bob):
    data = {"language": "", "time_zone": "", "default_model": "", "theme": "dark"}
    response = client_bob.post(reverse("account_settings"), data)

    assert response.status_code == 302
    bob.profile.refresh_from_db()
    assert bob.profile.theme == "dark"


def test_the_switch_saves_the_theme_for_its_script(bob, client_bob):
    response = client_bob.post(reverse("account_theme"), {"theme": "light"}, **JSON)

    assert response.status_code == 200
    assert response.json() == {"theme": "light"}
    bob.profile.refresh_from_db()
    assert bob.profile.theme == "light"


def test_the_switch_changes_nothing_else(bob, client_bob):
    Profile.objects.filter(user=bob).update(language="zh-hans", time_zone="Asia/Shanghai")

    client_bob.post(reverse("account_theme"), {"theme": "dark"}, **JSON)

    bob.profile.refresh_from_db()
    assert (bob.profile.theme, bob.profile.language, bob.profile.time_zone) == (
        "dark",
        "zh-hans",
        "Asia/Shanghai",
    )


def test_the_switch_refuses_an_unknown_theme(bob, client_bob):
    response = client_bob.post(reverse("account_theme"), {"theme": "sepia"}, **JSON)

    assert response.status_code == 400
    assert "theme" in response.json()["errors"]
    bob.profile.refresh_from_db()
    assert bob.profile.theme == "system"


def test_without_script_the_switch_returns_to_the_page(bob, client_bob):
    response = client_bob.post(reverse("account_theme"), {"theme": "dark", "next": "/account/password/"})

    assert response.status_code == 302
    assert response.url == "/account/password/"
    bob.profile.refresh_from_db()
    assert bob.profile.theme == "dark"


def test_the_switch_never_sends_a_member_to_another_site(client_bob):
    response = client_bob.post(reverse("account_theme"), {"theme": "dark", "next": "https://evil.example/"})

    assert response.status_code == 302
    assert response.url == reverse("account_settings")


def test_the_switch_needs_a_login(db):
    response = Client().post(reverse("account_theme"), {"theme": "dark"})

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_the_switch_takes_posts_only(client_bob):
    assert client_bob.get(reverse("account_theme")).status_code == 405


def test_the_switch_needs_the_csrf_token(bob):
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)

    refused = client.post(reverse("account_theme"), {"theme": "dark"}, **JSON)
    page = client.get(reverse("account_settings"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    accepted = client.post(reverse("account_theme"), {"theme": "dark", "csrfmiddlewaretoken": token}, **JSON)

    assert refused.status_code == 403
    assert accepted.status_code == 200


@pytest.mark.parametrize("choice", ["system", "light", "dark"])
def test_each_choice_renders_as_itself(bob, client_bob, choice):
    client_bob.post(reverse("account_theme"), {"theme": choice}, **JSON)

    assert html_theme(client_bob.get(reverse("chat"))) == choice
