"""The admin for members: no e-mail, invite links, password-reset links, deactivation that ends sessions.

A link's token exists only in the response that shows it: the database keeps its hash.
"""

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from conversations import accounts
from conversations.forms import InviteForm
from conversations.models import AccountLink, Profile

User = get_user_model()


class ProfileInline(admin.StackedInline):
    model = Profile
    can_delete = False
    fields = ["language", "time_zone", "default_model"]


@admin.register(AccountLink)
class AccountLinkAdmin(admin.ModelAdmin):
    """Read-only history; deleting an unused link revokes it. New links come from the member admin."""

    list_display = ["kind", "user", "make_staff", "created_by", "created_at", "expires_at", "state"]
    list_filter = ["kind"]
    list_select_related = ["user", "created_by"]
    ordering = ["-created_at"]

    @admin.display(description=gettext_lazy("state"))
    def state(self, link: AccountLink) -> str:
        if link.used_at:
            return _("used")
        return _("open") if link.expires_at > timezone.now() else _("expired")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AccountLink | None = None) -> bool:
        return False


admin.site.unregister(User)


@admin.register(User)
class MemberAdmin(UserAdmin):
    fieldsets = [
        (None, {"fields": ["username", "password"]}),
        (gettext_lazy("Name"), {"fields": ["first_name", "last_name"]}),
        (
            gettext_lazy("Permissions"),
            {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]},
        ),
        (gettext_lazy("Important dates"), {"fields": ["last_login", "date_joined"]}),
    ]
    list_display = ["username", "first_name", "last_name", "is_active", "is_staff", "last_login"]
    search_fields = ["username", "first_name", "last_name"]
    actions = ["issue_reset_links", "deactivate"]
    change_list_template = "accounts/admin/user_change_list.html"
    change_form_template = "accounts/admin/user_change_form.html"

    # Only a superuser decides who may open the admin and what anyone may do there: staff who may
    # change members cannot grant themselves (or an account they hold) more, nor take over a superuser.
    SUPERUSER_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")

    def has_change_permission(self, request: HttpRequest, obj: AbstractUser | None = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False  # also the password form, which Django guards with this check alone
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: AbstractUser | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return fields if request.user.is_superuser else [*fields, *self.SUPERUSER_FIELDS]

    def get_inlines(self, request: HttpRequest, obj: AbstractUser | None) -> list[type]:
        # A new user's profile comes from the post_save receiver; an inline would create a second one.
        return [ProfileInline] if obj else []

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("invite/", self.admin_site.admin_view(self.invite_view), name=f"{prefix}_invite"),
            path(
                "<path:object_id>/reset-link/",
                self.admin_site.admin_view(self.reset_link_view),
                name=f"{prefix}_reset_link",
            ),
            *super().get_urls(),
        ]

    def _may_reset(self, request: HttpRequest, user: AbstractUser) -> bool:
        # A reset link is the account: only a superuser may hold one for a superuser.
        return self.has_change_permission(request, user) and (
            request.user.is_superuser or not user.is_superuser
        )

    def _links_page(self, request: HttpRequest, title: str, links: list[dict[str, Any]]) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "links": links,
        }
        return TemplateResponse(request, "accounts/admin/links_issued.html", context)

    def _shown_link(self, request: HttpRequest, link: AccountLink, token: str) -> dict[str, Any]:
        url = request.build_absolute_uri(accounts.link_path(link.kind, token))
        return {"member": link.user, "url": url, "expires_at": link.expires_at}

    def _reset_link(self, request: HttpRequest, user: AbstractUser) -> dict[str, Any]:
        return self._shown_link(request, *accounts.issue_reset(user, created_by=request.user))

    def invite_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = InviteForm(
            data=request.POST if request.method == "POST" else None,
            initial={"hours": settings.ACCOUNT_LINK_HOURS},
        )
        if not request.user.is_superuser:
            # Only a superuser decides who may open the admin.
            del form.fields["make_staff"]
        if form.is_bound and form.is_valid():
            link, token = accounts.issue_invite(
                request.user,
                make_staff=form.cleaned_data.get("make_staff", False),
                hours=form.cleaned_data["hours"],
            )
            return self._links_page(
                request, _("Invite link created"), [self._shown_link(request, link, token)]
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Invite a member"),
            "form": form,
        }
        return TemplateResponse(request, "accounts/admin/invite.html", context)

    def reset_link_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        user = self.get_object(request, unquote(object_id))
        if user is None:
            raise Http404
        if not self._may_reset(request, user):
            raise PermissionDenied
        if not user.is_active:
            messages.error(request, _("Reactivate this member first: a reset link never revives an account."))
            return redirect(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", user.pk)
        if request.method == "POST":
            return self._links_page(
                request, _("Password-reset link created"), [self._reset_link(request, user)]
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Issue a password-reset link"),
            "member": user,
            "original": user,
        }
        return TemplateResponse(request, "accounts/admin/reset_confirm.html", context)

    @admin.action(description=gettext_lazy("Issue password-reset links"), permissions=["change"])
    def issue_reset_links(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        users = [user for user in queryset if user.is_active and self._may_reset(request, user)]
        if len(users) < len(queryset):
            messages.warning(
                request,
                _("No links for deactivated members, nor, unless you are a superuser, for superusers."),
            )
        if not users:
            return None
        links = [self._reset_link(request, user) for user in users]
        return self._links_page(request, _("Password-reset links created"), links)

    @admin.action(description=gettext_lazy("Deactivate and log out selected members"), permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = 0
        if not request.user.is_superuser:
            queryset = queryset.exclude(is_superuser=True)
        for user in queryset.filter(is_active=True).exclude(pk=request.user.pk):
            user.is_active = False
            # save(), not update(): the post_save receiver ends the member's sessions.
            user.save(update_fields=["is_active"])
            count += 1
        message = ngettext("%(count)d member deactivated.", "%(count)d members deactivated.", count)
        messages.success(request, message % {"count": count})
