"""Account forms: login with throttling, new accounts from links, a member's own settings."""

import zoneinfo
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations import accounts
from conversations.client_address import client_address
from conversations.models import ChatModel, Profile


class LoginForm(AuthenticationForm):
    """Django's login form, refusing without a password check while the account or address is throttled."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "throttled": _("Too many failed attempts. Wait a few minutes, then try again."),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request else ""
        if accounts.login_throttled(username, address):
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            cleaned_data = super().clean()
        except ValidationError:
            if username and self.cleaned_data.get("password"):
                accounts.record_login_failure(username, address)
            raise
        if self.user_cache is not None:
            accounts.clear_login_failures(username)
        return cleaned_data

    @property
    def throttled(self) -> bool:
        return self.has_error(NON_FIELD_ERRORS, "throttled")


class NewAccountForm(UserCreationForm):
    """Username and password twice, checked by the password validators; used by setup and invites."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)


class AccountSettingsForm(forms.ModelForm):
    language = forms.ChoiceField(label=_("Language"), required=False)
    time_zone = forms.ChoiceField(label=_("Time zone"), required=False)
    default_model = forms.ModelChoiceField(
        label=_("Default model"),
        queryset=ChatModel.objects.none(),
        required=False,
        empty_label=_("No preference"),
        help_text=_("Used for new conversations."),
    )

    class Meta:
        model = Profile
        fields = ["language", "time_zone", "default_model", "theme"]
        labels = {"theme": _("Theme")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["language"].choices = [("", _("Follow my browser")), *settings.LANGUAGES]
        server_zone = _("Server default (%(zone)s)") % {"zone": settings.TIME_ZONE}
        zones = sorted(zoneinfo.available_timezones())
        self.fields["time_zone"].choices = [("", server_zone), *((zone, zone) for zone in zones)]
        self.fields["time_zone"].help_text = _("Times are now shown in %(zone)s.") % {
            "zone": timezone.get_current_timezone_name()
        }
        self.fields["default_model"].queryset = ChatModel.objects.usable_by(self.instance.user)


class ThemeForm(forms.ModelForm):
    """The theme alone, for the switch in the page header."""

    class Meta:
        model = Profile
        fields = ["theme"]


class InviteForm(forms.Form):
    make_staff = forms.BooleanField(
        label=_("Make this member staff"),
        required=False,
        help_text=_("Staff can open the admin; what they may do there depends on their permissions."),
    )
    hours = forms.IntegerField(
        label=_("Valid for (hours)"),
        min_value=1,
        max_value=24 * 30,
        help_text=_("The link stops working after this time, or once it has been used."),
    )
