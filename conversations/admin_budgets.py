"""Budgets and rate limits in the admin: set them, and see who is near one."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.db.models import DecimalField, ExpressionWrapper, F, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy

from conversations import budgets
from conversations.models import Limit, LimitUsage


@admin.register(Limit)
class LimitAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "group", "kind", "period", "amount", "created_at"]
    list_filter = ["kind", "period", "group"]
    list_select_related = ["user", "group"]
    search_fields = ["user__username", "group__name"]
    autocomplete_fields = ["user", "group"]
    fields = ["user", "group", "kind", "period", "amount"]


class CurrentWindowFilter(admin.SimpleListFilter):
    title = gettext_lazy("window")
    parameter_name = "window"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [("current", gettext_lazy("Current")), ("all", gettext_lazy("All"))]

    def choices(self, changelist: Any) -> Any:
        # "Current" is the default: the question asked here is who is near a limit now.
        for lookup, title in self.lookup_choices:
            yield {
                "selected": (self.value() or "current") == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "all":
            return queryset
        now = timezone.now()
        current = [
            row.pk
            for row in queryset.filter(window_start__gte=now - timedelta(days=32)).select_related("limit")
            if budgets.window(row.limit.period, now)[0] == row.window_start
        ]
        return queryset.filter(pk__in=current)


@admin.register(LimitUsage)
class LimitUsageAdmin(admin.ModelAdmin):
    """Each member's use of each limit per window, fullest first."""

    list_display = ["user", "limit", "window_start", "used", "reserved", "percent_used"]
    list_filter = [CurrentWindowFilter, "limit__kind", "limit__period"]
    list_select_related = ["user", "limit", "limit__group", "limit__user"]
    search_fields = ["user__username"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        fullness = ExpressionWrapper(
            (F("used") + F("reserved")) * 100 / F("limit__amount"),
            output_field=DecimalField(max_digits=20, decimal_places=4),
        )
        return super().get_queryset(request).alias(fullness=fullness).order_by("-fullness", "user")

    @admin.display(description=gettext_lazy("Percent used"))
    def percent_used(self, row: LimitUsage) -> Decimal:
        return budgets.near_limit(row)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
