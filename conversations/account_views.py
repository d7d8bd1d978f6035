"""Account pages. Placeholder: implemented by the accounts work."""

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

login = auth_views.LoginView.as_view()
logout = auth_views.LogoutView.as_view()


def setup(request: HttpRequest, token: str) -> HttpResponse:
    raise NotImplementedError


accept_invite = reset_password = setup
account_settings = change_password = setup
