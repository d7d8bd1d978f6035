"""Write-only secrets in admin forms: a provider's API key, a tool's secret header.

The value is typed into a password input that is never filled in again; left blank, the stored value
is kept; a box removes it. Whoever may edit the record may not read the secret, so a stored secret
never follows a changed address: pointing the record elsewhere would send the secret there.
"""

from typing import Any

from django import forms
from django.db import models
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy


def secret_field(label: Promise) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=gettext_lazy("Write-only: never shown again. Leave blank to keep the stored value."),
    )


class WriteOnlySecretForm(forms.ModelForm):
    """Subclasses name their fields: the secret, the box that removes it, the address it is sent to,
    and the model's encrypted field and setter."""

    secret_name: str
    remove_name: str
    address_name: str
    encrypted_name: str
    setter_name: str
    address_changed: Promise  # the error when the address changes and the secret is not given again

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if (
            self.instance.pk
            and self.address_name in self.changed_data
            and getattr(self.instance, self.encrypted_name)
            and not cleaned.get(self.secret_name)
            and not cleaned.get(self.remove_name)
        ):
            self.add_error(self.secret_name, self.address_changed)
        return cleaned

    def save(self, commit: bool = True) -> models.Model:
        set_secret = getattr(self.instance, self.setter_name)
        if self.cleaned_data.get(self.remove_name):
            set_secret("")
        elif self.cleaned_data.get(self.secret_name):
            set_secret(self.cleaned_data[self.secret_name])
        return super().save(commit)
