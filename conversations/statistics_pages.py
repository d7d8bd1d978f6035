"""The pages over conversations/statistics.py: the filter form, the SVG charts, the CSV export, and a
member's "My usage" page. The admin's pages (conversations/admin_statistics.py) use the same pieces.

Charts are drawn here as SVG geometry and rendered inline by the template: no script, no inline
style (the CSP allows neither); static/conversations/statistics.css colours them with the page's own
variables, so they read in light and dark alike.
"""

import csv
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group
from django.db.models import QuerySet
from django.forms.utils import flatatt
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from conversations import statistics
from conversations.models import ChatModel, Provider, UsageRecord
from conversations.statistics import Filters, Report, Row

MAX_DAYS = 366


class ListSelect(forms.Select):
    """A select written in one pass: Django's renders each option through a template include, which
    for a team of 200 members took most of the filters' 48 ms."""

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> str:
        widget = self.get_context(name, value, attrs)["widget"]
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            (
                (option["value"], " selected" if option["selected"] else "", option["label"])
                for _group, choices, _index in widget["optgroups"]
                for option in choices
            ),
        )
        return format_html('<select name="{}"{}>{}</select>', name, flatatt(widget["attrs"]), options)


class StatisticsForm(forms.Form):
    """The period and filters, read from the query string; an invalid choice falls back to 30 days."""

    period = forms.ChoiceField(
        label=gettext_lazy("Period"),
        required=False,
        initial="30d",
        choices=[
            ("today", gettext_lazy("Today")),
            ("7d", gettext_lazy("Last 7 days")),
            ("30d", gettext_lazy("Last 30 days")),
            ("custom", gettext_lazy("Chosen range")),
        ],
    )
    first = forms.DateField(
        label=gettext_lazy("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    last = forms.DateField(
        label=gettext_lazy("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    user = forms.ModelChoiceField(
        label=gettext_lazy("Member"),
        required=False,
        queryset=get_user_model().objects.order_by("username"),
        widget=ListSelect,
    )
    group = forms.ModelChoiceField(
        label=gettext_lazy("Group"),
        required=False,
        queryset=Group.objects.order_by("name"),
        widget=ListSelect,
    )
    model = forms.ModelChoiceField(
        label=gettext_lazy("Model"),
        required=False,
        queryset=ChatModel.objects.order_by("display_name"),
        widget=ListSelect,
    )
    provider = forms.ModelChoiceField(
        label=gettext_lazy("Provider"),
        required=False,
        queryset=Provider.objects.order_by("name"),
        widget=ListSelect,
    )
    source = forms.ChoiceField(
        label=gettext_lazy("Source"),
        required=False,
        choices=[("", gettext_lazy("All sources")), *UsageRecord.Source.choices],
    )

    def __init__(self, data: Any, *, everyone: bool, models: QuerySet[ChatModel] | None = None) -> None:
        super().__init__(data)
        for name in ("user", "group", "model", "provider"):
            self.fields[name].empty_label = _("All")
        if not everyone:
            # A member's page is about themselves only: no member or group to choose.
            del self.fields["user"]
            del self.fields["group"]
        if models is not None:
            self.fields["model"].queryset = models

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("period") == "custom":
            first, last = data.get("first"), data.get("last")
            if not first or not last:
                raise forms.ValidationError(_("Choose the first and the last day of the range."))
            if last < first:
                raise forms.ValidationError(_("The last day comes before the first."))
            if (last - first).days >= MAX_DAYS:
                raise forms.ValidationError(
                    _("Choose a range of at most %(days)d days.") % {"days": MAX_DAYS}
                )
        return data

    def filters(self, *, user_id: int | None = None) -> Filters:
        """The filters chosen; `user_id` (a member's own page) wins over any member in the form."""
        tz = timezone.get_current_timezone()
        today = timezone.localdate()
        data = self.cleaned_data if self.is_valid() else {}
        chosen = {
            "user_id": user_id if user_id is not None else _pk(data.get("user")),
            "group_id": _pk(data.get("group")),
            "model_id": _pk(data.get("model")),
            "provider_id": _pk(data.get("provider")),
            "source": data.get("source") or "",
        }
        period = data.get("period") or "30d"
        if period == "custom":
            return Filters.for_days(data["first"], data["last"], tz, period=period, **chosen)
        return Filters.for_period(period, today, tz, **chosen)


def _pk(instance: Any) -> int | None:
    return instance.pk if instance is not None else None


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass
class Chart:
    """A bar chart's geometry in a viewBox of WIDTH x HEIGHT user units."""

    WIDTH = 900
    HEIGHT = 180
    LEFT = 64  # room for the scale's numbers
    BOTTOM = 24  # room for the day labels
    TOP = 8

    title: str
    bars: list[Bar]
    ticks: list[tuple[float, str]]  # (y, label) of the scale's lines
    labels: list[tuple[float, str]]  # (x, label) under some bars

    @property
    def baseline(self) -> int:
        return self.HEIGHT - self.BOTTOM


def bar_chart(rows: list[Row], value: str, title: str, decimals: int = 0) -> Chart:
    """Bars of `value` per day; the scale's top is a round number above the largest bar."""
    values = [float(getattr(row, value)) for row in rows]
    top = _round_up(max(values, default=0))
    plot_height = Chart.HEIGHT - Chart.BOTTOM - Chart.TOP
    slot = (Chart.WIDTH - Chart.LEFT) / max(len(rows), 1)
    bars = []
    for index, (row, amount) in enumerate(zip(rows, values, strict=True)):
        height = plot_height * amount / top if top else 0
        bars.append(
            Bar(
                x=round(Chart.LEFT + index * slot + slot * 0.1, 2),
                y=round(Chart.TOP + plot_height - height, 2),
                width=round(slot * 0.8, 2),
                height=round(height, 2),
                title=f"{row.label}: {amount:,.{decimals}f}",
            )
        )
    # The scale's numbers as short as they can be: 0, 0.05, 0.1 rather than 0.0000, 0.0500, 0.1000.
    ticks = [
        (
            round(Chart.TOP + plot_height * (1 - share), 2),
            f"{Decimal(str(round(top * share, 6))).normalize():,f}",
        )
        # With nothing to show, one line at 0 rather than three that all read 0.
        for share in ((0, 0.5, 1) if top else (0,))
        if decimals or float(top * share).is_integer()  # no half a request on a scale of counts
    ]
    every = max(1, round(len(rows) / 8))  # at most about eight day labels
    labels = [
        (round(Chart.LEFT + index * slot + slot / 2, 2), row.key.strftime("%m-%d"))
        for index, row in enumerate(rows)
        if index % every == 0
    ]
    return Chart(title=title, bars=bars, ticks=ticks, labels=labels)


def _round_up(value: float) -> float:
    """1, 2 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 0
    power = 10 ** _floor_log10(value)
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _floor_log10(value: float) -> int:
    exponent = 0
    while value >= 10:
        value /= 10
        exponent += 1
    while value < 1:
        value *= 10
        exponent -= 1
    return exponent


def page_context(report: Report) -> dict[str, Any]:
    return {
        "report": report,
        "sections": _sections(report),
        "charts": [
            bar_chart(report.days, "requests", _("Requests by day")),
            bar_chart(report.days, "cost", _("Cost by day"), decimals=4),
        ],
        "first_day": report.filters.first_day,
        "last_day": report.filters.last_day,
        "time_zone": str(report.filters.tz),
    }


def _sections(report: Report) -> list[tuple[str, str, str, list[Row]]]:
    """(key, heading, column heading, rows) of each table shown below the totals, in the order shown and exported."""
    headings = {
        "model": (_("By model"), _("Model")),
        "provider": (_("By provider"), _("Provider")),
        "source": (_("By source"), _("Source")),
        "group": (_("By group"), _("Group")),
    }
    sections = [(key, *headings[key], rows) for key, rows in report.breakdowns.items()]
    if report.top_users:
        sections.append(("user", _("Top members"), _("Member"), report.top_users))
    return sections


CSV_COLUMNS = [
    "section",
    "name",
    "requests",
    "errors",
    "error_rate",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cost",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "duration_p50_ms",
    "duration_p95_ms",
]


def csv_response(report: Report, filename: str, extra: list[tuple[str, list[Row]]] = ()) -> HttpResponse:
    """The figures shown, one table: the totals, each day, then every breakdown's rows."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    totals = report.totals
    span = f"{report.filters.first_day.isoformat()}..{report.filters.last_day.isoformat()}"
    writer.writerow(
        [
            *_csv_row("total", span, totals),
            *(
                _ms(value)
                for value in (totals.ttft_p50, totals.ttft_p95, totals.duration_p50, totals.duration_p95)
            ),
        ]
    )
    for row in report.days:
        writer.writerow(_csv_row("day", row.label, row))
    for key, _heading, _column, rows in _sections(report):
        for row in rows:
            writer.writerow(_csv_row(key, row.label, row))
    for key, rows in extra:
        for row in rows:
            writer.writerow(_csv_row(key, row.label, row))
    return response


def _csv_row(section: str, name: str, row: Row) -> list[Any]:
    return [
        section,
        name,
        row.requests,
        row.errors,
        f"{row.error_rate:.4f}",
        row.prompt_tokens,
        row.cached_tokens,
        row.completion_tokens,
        row.reasoning_tokens,
        f"{Decimal(row.cost):.8f}",
    ]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


@login_required
def my_usage(request: HttpRequest) -> HttpResponse:
    """The member's own figures; whatever the query string says, only their rows are counted."""
    own_models = ChatModel.objects.filter(
        pk__in=UsageRecord.objects.filter(user=request.user).values("model_id")
    ).order_by("display_name")
    form = StatisticsForm(request.GET or None, everyone=False, models=own_models)
    filters = form.filters(user_id=request.user.pk)
    report = statistics.report(filters, everyone=False)
    if request.GET.get("export") == "csv":
        return csv_response(report, f"my-usage-{filters.first_day}-{filters.last_day}.csv")
    query = request.GET.copy()
    query.pop("export", None)
    context = {
        **page_context(report),
        "form": form,
        "export_query": query.urlencode(),
    }
    return render(request, "statistics/my_usage.html", context)
