"""The admin of providers and models, and read-only views of usage and conversations.

A provider's API key is write-only here: the form never renders it back, change messages name the
field but not its value, and error reports mask the posted value.
"""

from typing import Any

from cryptography.fernet import InvalidToken
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.debug import sensitive_post_parameters

from conversations import registry, upstream
from conversations.admin_secrets import WriteOnlySecretForm, secret_field
from conversations.admin_statistics import UsageStatisticsAdmin
from conversations.models import ChatModel, Conversation, Message, Provider, UsageRecord


class ProviderForm(WriteOnlySecretForm):
    base_url = forms.URLField(
        label=gettext_lazy("Base URL"),
        max_length=500,
        assume_scheme="https",
        help_text=gettext_lazy("The address before /chat/completions, e.g. https://api.openai.com/v1"),
    )
    api_key = secret_field(gettext_lazy("API key"))
    remove_api_key = forms.BooleanField(label=gettext_lazy("Remove the stored API key"), required=False)

    secret_name, remove_name, address_name = "api_key", "remove_api_key", "base_url"
    encrypted_name, setter_name = "api_key_encrypted", "set_api_key"
    address_changed = gettext_lazy("The address changed: enter the API key again, or remove the stored one.")

    class Meta:
        model = Provider
        fields = ["name", "base_url", "api_key", "remove_api_key", "enabled"]


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ["name", "base_url", "stored_key", "enabled", "kind"]
    list_filter = ["enabled", "is_offline", "is_environment"]
    search_fields = ["name", "base_url"]
    readonly_fields = ["stored_key", "kind", "created_at"]
    fields = ["name", "base_url", "api_key", "stored_key", "remove_api_key", "enabled", "kind", "created_at"]
    actions = ["test_connection", "discover_models"]

    @method_decorator(sensitive_post_parameters("api_key"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(request, *args, **kwargs)

    @admin.display(description=gettext_lazy("Stored key"))
    def stored_key(self, provider: Provider) -> str:
        try:
            return provider.masked_api_key or "—"
        except InvalidToken:
            return _("unreadable: enter it again")

    @admin.display(description=gettext_lazy("Kind"))
    def kind(self, provider: Provider) -> str:
        if provider.is_offline:
            return _("Offline demo")
        if provider.is_environment:
            return _("From OPENAI_BASE_URL")
        return ""

    @admin.action(description=gettext_lazy("Test connection"))
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            ok, text = registry.test_connection(provider)
            self.message_user(request, f"{provider.name}: {text}", messages.SUCCESS if ok else messages.ERROR)

    @admin.action(description=gettext_lazy("Discover models"))
    def discover_models(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            before = provider.models.count()
            try:
                found = registry.discover_models(provider)
            except upstream.UpstreamError as error:
                self.message_user(request, f"{provider.name}: {error.user_message()}", messages.ERROR)
                continue
            except InvalidToken:
                self.message_user(
                    request,
                    _("%(name)s: the stored API key is unreadable.") % {"name": provider.name},
                    messages.ERROR,
                )
                continue
            added = provider.models.count() - before
            text = _("%(name)s: %(found)d models listed, %(added)d new.") % {
                "name": provider.name,
                "found": len(found),
                "added": added,
            }
            self.message_user(request, text, messages.SUCCESS)


@admin.register(ChatModel)
class ChatModelAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "provider",
        "upstream_id",
        "capabilities",
        "context_window",
        "input_price",
        "cached_input_price",
        "output_price",
        "enabled",
    ]
    list_editable = ["enabled"]
    list_filter = [
        "provider",
        "enabled",
        "supports_vision",
        "supports_tools",
        "supports_json",
        "supports_reasoning",
    ]
    list_select_related = ["provider"]
    search_fields = ["display_name", "upstream_id"]
    filter_horizontal = ["allowed_groups"]
    fieldsets = [
        (None, {"fields": ["provider", "upstream_id", "display_name", "enabled", "allowed_groups"]}),
        (
            gettext_lazy("Capabilities"),
            {
                "fields": [
                    "supports_vision",
                    "supports_tools",
                    "supports_json",
                    "supports_reasoning",
                    "context_window",
                    "supported_parameters",
                    "tokens_per_char",
                ]
            },
        ),
        (
            gettext_lazy("Prices per million tokens"),
            {"fields": ["input_price", "cached_input_price", "output_price"]},
        ),
    ]

    @admin.display(description=gettext_lazy("Capabilities"))
    def capabilities(self, model: ChatModel) -> str:
        names = [
            (model.supports_vision, _("vision")),
            (model.supports_tools, _("tools")),
            (model.supports_json, _("JSON")),
            (model.supports_reasoning, _("reasoning")),
        ]
        return ", ".join(name for supported, name in names if supported) or "—"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewing only: rows are written by the product, never by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(UsageStatisticsAdmin, ReadOnlyAdmin):
    list_display = [
        "started_at",
        "user",
        "model_name",
        "source",
        "status",
        "prompt_tokens",
        "cached_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "cost",
        "time_to_first_token_ms",
        "duration_ms",
    ]
    list_filter = ["status", "source", "estimated", "provider", "model"]
    list_select_related = ["user"]
    search_fields = ["model_name", "user__username", "request_id"]
    date_hierarchy = "started_at"


@admin.register(Conversation)
class ConversationAdmin(ReadOnlyAdmin):
    """What exists and whose it is; what members wrote stays out of the admin."""

    list_display = ["__str__", "owner", "model", "created_at", "updated_at", "deleted_at"]
    list_filter = [("deleted_at", admin.EmptyFieldListFilter), "created_at"]
    list_select_related = ["owner", "model"]
    search_fields = ["owner__username"]
    fields = ["public_id", "title", "owner", "model", "pinned", "created_at", "updated_at", "deleted_at"]
    date_hierarchy = "created_at"


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    """Status and errors of replies, for support; the text of a message is not shown."""

    list_display = ["__str__", "owner", "conversation", "role", "status", "model", "error_code", "created_at"]
    list_filter = ["role", "status", "error_code"]
    list_select_related = ["conversation__owner", "model"]
    search_fields = ["conversation__owner__username", "error_code"]
    fields = [
        "conversation",
        "role",
        "status",
        "model",
        "finish_reason",
        "error_code",
        "error_detail",
        "created_at",
        "lease_expires_at",
    ]
    date_hierarchy = "created_at"

    @admin.display(description=gettext_lazy("Owner"), ordering="conversation__owner__username")
    def owner(self, message: Message) -> Any:
        return message.conversation.owner
