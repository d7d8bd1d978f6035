"""Share links in the admin: every member's, with their state, and a "Revoke" action. A link's address
is never shown here (its token is neither listed nor a field): admins revoke links, they need not open
them."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy, ngettext

from conversations import sharing
from conversations.models import ShareLink


class StateFilter(admin.SimpleListFilter):
    title = gettext_lazy("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("active", gettext_lazy("active")),
            ("expired", gettext_lazy("expired")),
            ("revoked", gettext_lazy("revoked")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        chosen = {"active": queryset.usable, "expired": queryset.expired, "revoked": queryset.revoked}
        return chosen[self.value()]() if self.value() in chosen else queryset


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    """Read-only, like the conversations; revoking is the one change an admin makes."""

    list_display = [
        "__str__",
        "owner",
        "conversation",
        "audience",
        "created_at",
        "updated_at",
        "expires_at",
        "state",
    ]
    list_filter = [StateFilter, "audience", "created_at"]
    list_select_related = ["conversation__owner"]
    search_fields = ["conversation__owner__username"]
    fields = ["conversation", "audience", "title", "created_at", "updated_at", "expires_at", "revoked_at"]
    ordering = ["-created_at"]
    actions = ["revoke"]

    @admin.display(description=gettext_lazy("Owner"), ordering="conversation__owner__username")
    def owner(self, link: ShareLink) -> Any:
        return link.conversation.owner

    @admin.display(description=gettext_lazy("state"))
    def state(self, link: ShareLink) -> str:
        return {"active": gettext_lazy("active"), "expired": gettext_lazy("expired")}.get(
            sharing.state_of(link), gettext_lazy("revoked")
        )

    @admin.action(description=gettext_lazy("Revoke the selected links"), permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = sharing.revoke_all(queryset)
        message = ngettext("%(count)d link revoked.", "%(count)d links revoked.", count) % {"count": count}
        self.message_user(request, message, messages.SUCCESS)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        # Revoking changes a link: staff who may only view the list may not.
        return request.user.has_perm("conversations.change_sharelink")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ShareLink | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ShareLink | None = None) -> bool:
        return False
