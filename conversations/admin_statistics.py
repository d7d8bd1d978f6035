"""The admin's usage statistics: pages under the usage records' admin, for staff who may view them.

- statistics/: totals, the daily charts, the breakdowns and the top members, with CSV export;
- statistics/members/: every member with usage in the range and their totals, paged, with CSV export.

A member's name leads to their records in the usage records' changelist, filtered by member and by
the same range and filters, where each row shows its conversation's title.
"""

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations import statistics
from conversations.models import UsageRecord
from conversations.statistics import Filters, Row
from conversations.statistics_pages import StatisticsForm, csv_response, page_context

MEMBERS_PER_PAGE = 100


class UsageStatisticsAdmin(admin.ModelAdmin):
    """Mixed into the usage records' ModelAdmin (admin_registry.py): the statistics pages, a link to them
    above the changelist and the conversation's title in each row."""

    change_list_template = "statistics/usagerecord_change_list.html"

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "statistics/", self.admin_site.admin_view(self.statistics_view), name=f"{prefix}_statistics"
            ),
            path(
                "statistics/members/",
                self.admin_site.admin_view(self.members_view),
                name=f"{prefix}_statistics_members",
            ),
            *super().get_urls(),
        ]

    def get_list_display(self, request: HttpRequest) -> list[str]:
        shown = list(super().get_list_display(request))
        return [*shown[:2], "conversation_title", *shown[2:]]

    def get_list_select_related(self, request: HttpRequest) -> Any:
        return ["user", "conversation"]

    @admin.display(description=gettext_lazy("Conversation"), ordering="conversation__title")
    def conversation_title(self, record: UsageRecord) -> str:
        return str(record.conversation) if record.conversation else "—"

    def _form(self, request: HttpRequest) -> tuple[StatisticsForm, Filters]:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = StatisticsForm(request.GET or None, everyone=True)
        return form, form.filters()

    def _context(self, request: HttpRequest, title: str, form: StatisticsForm) -> dict[str, Any]:
        query = request.GET.copy()
        query.pop("export", None)
        query.pop("page", None)
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "form": form,
            "export_query": query.urlencode(),
            "filter_query": query.urlencode(),
        }

    def records_url(self, filters: Filters, user_id: int | None) -> str:
        """The changelist of one member's records in the range and filters shown."""
        query: dict[str, Any] = {
            "started_at__gte": filters.start.isoformat(),
            "started_at__lt": filters.end.isoformat(),
        }
        if user_id is None:
            query["user__isnull"] = "True"
        else:
            query["user__id__exact"] = user_id
        if filters.model_id is not None:
            query["model__id__exact"] = filters.model_id
        if filters.provider_id is not None:
            query["provider__id__exact"] = filters.provider_id
        if filters.source:
            query["source__exact"] = filters.source
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        return f"{url}?{urlencode(query)}"

    def _link_members(self, filters: Filters, rows: list[Row]) -> None:
        for row in rows:
            row.url = self.records_url(filters, row.key)

    def statistics_view(self, request: HttpRequest) -> HttpResponse:
        form, filters = self._form(request)
        report = statistics.report(filters, everyone=True)
        if request.GET.get("export") == "csv":
            return csv_response(report, f"usage-{filters.first_day}-{filters.last_day}.csv")
        self._link_members(filters, report.top_users)
        context = {**self._context(request, _("Usage statistics"), form), **page_context(report)}
        return TemplateResponse(request, "statistics/admin_statistics.html", context)

    def members_view(self, request: HttpRequest) -> HttpResponse:
        """Every member with usage in the range, most cost first, with their totals."""
        form, filters = self._form(request)
        if request.GET.get("export") == "csv":
            report = statistics.Report(filters=filters, totals=statistics.totals(filters), days=[])
            return csv_response(
                report,
                f"usage-members-{filters.first_day}-{filters.last_day}.csv",
                extra=[("user", statistics.by_user(filters))],
            )
        try:
            number = max(1, int(request.GET.get("page") or 1))
        except ValueError:
            number = 1
        # One aggregated row per member: the team's list is paged here, not in SQL.
        everyone = statistics.by_user(filters)
        page = Paginator(everyone, MEMBERS_PER_PAGE).get_page(number)
        rows = list(page.object_list)
        self._link_members(filters, rows)
        context = {
            **self._context(request, _("Usage by member"), form),
            "rows": rows,
            "page": page,
            "member_count": len(everyone),
            "first_day": filters.first_day,
            "last_day": filters.last_day,
            "time_zone": str(filters.tz),
        }
        return TemplateResponse(request, "statistics/admin_members.html", context)
