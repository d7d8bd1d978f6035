"""Account pages: log in and out, the one-time link pages, a member's own settings and password."""

from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.contrib.auth.models import AbstractUser
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from conversations import accounts
from conversations.forms import AccountSettingsForm, LoginForm, NewAccountForm, ThemeForm
from conversations.models import AccountLink, Profile


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
            response["Retry-After"] = str(settings.LOGIN_THROTTLE_WINDOW)
        return response


class LogoutView(auth_views.LogoutView):
    """POST only (Django's default); the session's record goes with it."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        accounts.forget_session(request.session.session_key)
        return super().post(request, *args, **kwargs)


login = LoginView.as_view()
logout = LogoutView.as_view()


def _link_invalid(request: HttpRequest) -> HttpResponse:
    # One page for unknown, used and expired links alike: which one it was is nobody's business.
    return render(request, "accounts/link_invalid.html", status=404)


def _new_account_page(
    request: HttpRequest,
    token: str,
    kind: str,
    create: Callable[[str, str, str], AbstractUser | None],
    template_name: str,
    success_url: str,
) -> HttpResponse:
    if accounts.find_link(kind, token) is None:
        return _link_invalid(request)
    form = NewAccountForm(data=request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        try:
            user = create(token, form.cleaned_data["username"], form.cleaned_data["password1"])
        except IntegrityError:
            form.add_error("username", _("Someone took this username a moment ago. Choose another."))
        else:
            if user is None:
                return _link_invalid(request)
            auth_login(request, user)
            return redirect(success_url)
    return render(request, template_name, {"form": form})


@never_cache
@sensitive_post_parameters("password1", "password2")
def setup(request: HttpRequest, token: str) -> HttpResponse:
    return _new_account_page(
        request,
        token,
        AccountLink.Kind.SETUP,
        accounts.create_first_admin,
        "accounts/setup.html",
        "admin:index",
    )


@never_cache
@sensitive_post_parameters("password1", "password2")
def accept_invite(request: HttpRequest, token: str) -> HttpResponse:
    return _new_account_page(
        request, token, AccountLink.Kind.INVITE, accounts.accept_invite, "accounts/invite.html", "chat"
    )


@never_cache
@sensitive_post_parameters("new_password1", "new_password2")
def reset_password(request: HttpRequest, token: str) -> HttpResponse:
    link = accounts.find_link(AccountLink.Kind.RESET, token)
    if link is None:
        return _link_invalid(request)
    form = SetPasswordForm(
        link.user, data=request.POST if request.method == "POST" else None, label_suffix=""
    )
    if form.is_bound and form.is_valid():
        user = accounts.reset_password(token, form.cleaned_data["new_password1"])
        if user is None:
            return _link_invalid(request)
        auth_login(request, user)
        messages.success(request, _("Your new password is set."))
        return redirect("chat")
    return render(request, "accounts/reset.html", {"form": form, "member": link.user})


def _apply_language(request: HttpRequest, response: HttpResponse, language: str) -> None:
    """Use the chosen language from this response on, and remember it for pages before login."""
    if language:
        translation.activate(language)
        request.LANGUAGE_CODE = language
        response.set_cookie(
            settings.LANGUAGE_COOKIE_NAME,
            language,
            max_age=settings.LANGUAGE_COOKIE_AGE,
            path=settings.LANGUAGE_COOKIE_PATH,
            domain=settings.LANGUAGE_COOKIE_DOMAIN,
            secure=settings.LANGUAGE_COOKIE_SECURE,
            httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
            samesite=settings.LANGUAGE_COOKIE_SAMESITE,
        )
    else:
        # Following the browser means no cookie may override its Accept-Language.
        response.delete_cookie(
            settings.LANGUAGE_COOKIE_NAME,
            path=settings.LANGUAGE_COOKIE_PATH,
            domain=settings.LANGUAGE_COOKIE_DOMAIN,
            samesite=settings.LANGUAGE_COOKIE_SAMESITE,
        )


@login_required
def account_settings(request: HttpRequest) -> HttpResponse:
    profile, _created = Profile.objects.get_or_create(user=request.user)
    form = AccountSettingsForm(data=request.POST if request.method == "POST" else None, instance=profile)
    if form.is_bound and form.is_valid():
        profile = form.save()
        response = redirect("account_settings")
        _apply_language(request, response, profile.language)
        messages.success(request, _("Your settings are saved."))
        return response
    return render(request, "accounts/settings.html", {"form": form})


@login_required
@require_POST
def choose_theme(request: HttpRequest) -> HttpResponse:
    """The header's theme switch: JSON for its script, a redirect back for a form posted without it."""
    profile, _created = Profile.objects.get_or_create(user=request.user)
    form = ThemeForm(request.POST, instance=profile)
    wants_page = request.accepts("text/html")
    if not form.is_valid():
        if wants_page:
            return HttpResponseBadRequest(_("Choose one of the themes offered."))
        return JsonResponse({"errors": form.errors}, status=400)
    form.save(commit=False).save(update_fields=["theme"])
    if not wants_page:
        return JsonResponse({"theme": profile.theme})
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, require_https=request.is_secure()):
        back = reverse("account_settings")
    return redirect(back)


@login_required
@sensitive_post_parameters("old_password", "new_password1", "new_password2")
def change_password(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(
        request.user, data=request.POST if request.method == "POST" else None, label_suffix=""
    )
    if form.is_bound and form.is_valid():
        user = form.save()
        accounts.password_changed(request, user)
        messages.success(request, _("Your password is changed. Your other sessions have ended."))
        return redirect("account_settings")
    return render(request, "accounts/change_password.html", {"form": form})
