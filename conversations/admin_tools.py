"""The admin of HTTP tools (conversations/tools.py runs them).

The parameters schema must be a valid JSON schema of an object, as function calling needs. The secret
header's value is write-only, like a provider's API key: never rendered back, masked in the list and
in error reports.
"""

from typing import Any

from cryptography.fernet import InvalidToken
from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.debug import sensitive_post_parameters

from conversations import tools
from conversations.admin_secrets import WriteOnlySecretForm, secret_field
from conversations.models import Tool


class ToolForm(WriteOnlySecretForm):
    endpoint = forms.URLField(
        label=gettext_lazy("Endpoint"),
        max_length=500,
        assume_scheme="https",
        help_text=gettext_lazy("The model's arguments are POSTed here as JSON; the response is the result."),
    )
    secret_header_value = secret_field(gettext_lazy("Secret header value"))
    remove_secret = forms.BooleanField(label=gettext_lazy("Remove the stored secret"), required=False)

    secret_name, remove_name, address_name = "secret_header_value", "remove_secret", "endpoint"
    encrypted_name, setter_name = "secret_header_value_encrypted", "set_secret_header_value"
    address_changed = gettext_lazy("The endpoint changed: enter the secret again, or remove the stored one.")

    class Meta:
        model = Tool
        fields = [
            "name",
            "description",
            "parameters_schema",
            "endpoint",
            "secret_header_name",
            "secret_header_value",
            "remove_secret",
            "allow_private_address",
            "timeout_seconds",
            "enabled",
        ]
        help_texts = {
            "allow_private_address": gettext_lazy(
                "Let calls reach a private, loopback or link-local address for this endpoint's host "
                "(a service on the server's own network). Redirects to other hosts are still checked."
            ),
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if name in tools.BUILTINS:
            raise forms.ValidationError(_("%(name)s is a built-in tool's name.") % {"name": name})
        return name

    def clean_parameters_schema(self) -> Any:
        schema = self.cleaned_data["parameters_schema"]
        problem = tools.schema_problem(schema)
        if problem:
            raise forms.ValidationError(problem)
        return schema

    def clean_timeout_seconds(self) -> float:
        timeout = self.cleaned_data["timeout_seconds"]
        if not 0 < timeout <= 120:
            raise forms.ValidationError(_("The timeout must be between 0 and 120 seconds."))
        return timeout


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    form = ToolForm
    list_display = [
        "name",
        "endpoint",
        "stored_secret",
        "allow_private_address",
        "timeout_seconds",
        "enabled",
    ]
    list_filter = ["enabled", "allow_private_address"]
    search_fields = ["name", "description", "endpoint"]
    readonly_fields = ["stored_secret", "created_at"]
    fields = [
        "name",
        "description",
        "parameters_schema",
        "endpoint",
        "secret_header_name",
        "secret_header_value",
        "stored_secret",
        "remove_secret",
        "allow_private_address",
        "timeout_seconds",
        "enabled",
        "created_at",
    ]

    @method_decorator(sensitive_post_parameters("secret_header_value"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(request, *args, **kwargs)

    @admin.display(description=gettext_lazy("Stored secret"))
    def stored_secret(self, tool: Tool) -> str:
        try:
            value = tool.secret_header_value
        except InvalidToken:
            return _("unreadable: enter it again")
        return f"…{value[-4:]}" if len(value) > 8 else ("set" if value else "—")
