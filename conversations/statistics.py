"""Usage statistics: what the admin's statistics page and a member's "My usage" page show.

Every figure is aggregated in the database (Count, Sum, GROUP BY), never by looping over rows in
Python. Days are the viewer's days: the range starts and ends at local midnights and the chart groups
by the local date (TruncDate with the viewer's tzinfo). docs/usage.md gives the SQL whose result
equals the totals shown, and what each figure means.

Percentiles: PostgreSQL computes them with percentile_cont, in a query apart from the sums so that
those run in parallel, and on a connection of its own beside them (report()). SQLite has no
percentile function, so there each one is read as the one or two values around its position in the
sorted column (ORDER BY … LIMIT 2 OFFSET k) and interpolated as percentile_cont does; both engines
give the same numbers.

On PostgreSQL report() reads its tables in two passes (TABLES_SQL, MEMBERS_SQL); on SQLite each table
is one ORM query (by_day(), by_model() …). A little over 400 lines: the two ways sit side by side so
that they are read, and kept equal, together.
"""

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import Aggregate, Count, DecimalField, FloatField, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils.translation import gettext as _

from conversations.models import ChatModel, Provider, UsageRecord

PERIODS = {"today": 1, "7d": 7, "30d": 30}
TOP_USERS = 10
PERCENTILE_WORK_MEM = "64MB"
ERROR = UsageRecord.Status.ERROR
# The figures summed per row of every table; the totals add the percentiles.
COUNTED = ["prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"]


class Percentile(Aggregate):
    """PostgreSQL's percentile_cont(fraction) WITHIN GROUP (ORDER BY column); NULLs are skipped."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class Filters:
    """What is counted: [start, end) in the viewer's time zone, narrowed by the optional filters."""

    start: datetime
    end: datetime
    tz: tzinfo
    period: str = "30d"
    user_id: int | None = None
    model_id: int | None = None
    provider_id: int | None = None
    source: str = ""
    group_id: int | None = None

    @classmethod
    def for_days(cls, first: date, last: date, tz: tzinfo, **filters: Any) -> "Filters":
        """From local midnight of `first` to local midnight after `last` (a DST day is 23 or 25 h)."""
        # In UTC: arithmetic between two times of one zone ignores its clock changes.
        start = datetime.combine(first, time.min, tzinfo=tz).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
        return cls(start=start, end=end, tz=tz, **filters)

    @classmethod
    def for_period(cls, period: str, today: date, tz: tzinfo, **filters: Any) -> "Filters":
        """today, 7d, 30d: that many days ending with today."""
        days = PERIODS[period]
        return cls.for_days(today - timedelta(days=days - 1), today, tz, period=period, **filters)

    @property
    def first_day(self) -> date:
        return self.start.astimezone(self.tz).date()

    @property
    def last_day(self) -> date:
        return (self.end.astimezone(self.tz) - timedelta(microseconds=1)).date()

    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=index) for index in range(count)]

    def day_starts(self) -> list[datetime]:
        """The local midnight starting each day, and the one after the last day (in UTC)."""
        return [
            datetime.combine(day, time.min, tzinfo=self.tz).astimezone(UTC)
            for day in [*self.days(), self.last_day + timedelta(days=1)]
        ]

    def records(self) -> QuerySet[UsageRecord]:
        """The usage rows counted; the range's index (usage_by_time, usage_by_user) narrows them."""
        rows = UsageRecord.objects.filter(started_at__gte=self.start, started_at__lt=self.end)
        if self.user_id is not None:
            rows = rows.filter(user_id=self.user_id)
        if self.model_id is not None:
            rows = rows.filter(model_id=self.model_id)
        if self.provider_id is not None:
            rows = rows.filter(provider_id=self.provider_id)
        if self.source:
            rows = rows.filter(source=self.source)
        if self.group_id is not None:
            # A subquery, not a join: a member of the group counts once, whatever else they belong to.
            members = get_user_model().groups.through.objects.filter(group_id=self.group_id)
            rows = rows.filter(user_id__in=members.values("user_id"))
        return rows


@dataclass
class Row:
    """One line of a table: a day, a model, a member… and its sums."""

    key: Any
    label: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    url: str = ""  # where the admin drills down from this row, if anywhere

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def error_percent(self) -> float:
        return self.error_rate * 100


@dataclass
class Totals(Row):
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    duration_p50: float | None = None
    duration_p95: float | None = None


@dataclass
class Report:
    filters: Filters
    totals: Totals
    days: list[Row]
    breakdowns: dict[str, list[Row]] = field(default_factory=dict)
    top_users: list[Row] = field(default_factory=list)


def sums() -> dict[str, Any]:
    """The aggregates of one row; COALESCE so that an empty range sums to 0, as in docs/usage.md."""
    figures: dict[str, Any] = {
        "requests": Count("*"),
        "errors": Count("status", filter=Q(status=ERROR)),
    }
    for name in COUNTED:
        figures[name] = Coalesce(Sum(name), 0)
    figures["cost"] = Coalesce(
        Sum("cost"), Value(Decimal(0)), output_field=DecimalField(max_digits=20, decimal_places=8)
    )
    return figures


def _row(key: Any, label: str, values: dict[str, Any]) -> Row:
    return Row(
        key=key, label=label, **{name: values[name] for name in ("requests", "errors", *COUNTED, "cost")}
    )


def totals(
    filters: Filters, summed: dict[str, Any] | None = None, percentiles: dict[str, Any] | None = None
) -> Totals:
    """The sums and the percentiles (or those given, already read with the tables)."""
    result = Totals(**vars(_row(None, "", summed or filters.records().aggregate(**sums()))))
    for name, value in (percentiles or latency_percentiles(filters)).items():
        setattr(result, name, value)
    return result


def latency_percentiles(filters: Filters) -> dict[str, float | None]:
    """Time to first token and duration, p50 and p95, as ttft_p50, ttft_p95, duration_p50, duration_p95."""
    rows = filters.records()
    if connection.vendor != "postgresql":
        ttft = ordered_percentiles(rows, "time_to_first_token_ms", (0.5, 0.95))
        duration = ordered_percentiles(rows, "duration_ms", (0.5, 0.95))
        return dict(
            zip(("ttft_p50", "ttft_p95", "duration_p50", "duration_p95"), ttft + duration, strict=True)
        )
    # A query of their own: an ordered-set aggregate would keep the sums from running in parallel.
    figures = {}
    for column, name in (("time_to_first_token_ms", "ttft"), ("duration_ms", "duration")):
        figures[f"{name}_p50"] = Percentile(column, 0.5)
        figures[f"{name}_p95"] = Percentile(column, 0.95)
    with transaction.atomic(), connection.cursor() as cursor:
        # The sorts of a month of records (a few MB) in memory, not in temporary files: a third
        # faster (measured: 324 → 211 ms for 320,000 records).
        cursor.execute("SET LOCAL work_mem = %s", [PERCENTILE_WORK_MEM])
        return rows.aggregate(**figures)


def _on_own_connection(function: Callable[..., Any], *args: Any) -> Any:
    """For a worker thread: run `function` on the thread's own database connection, then close it."""
    try:
        return function(*args)
    finally:
        connection.close()


def ordered_percentiles(
    rows: QuerySet[UsageRecord], column: str, fractions: Iterable[float]
) -> list[float | None]:
    """percentile_cont without a percentile function: the values around each position, interpolated.
    One COUNT and one two-row query per percentile, whatever the number of rows."""
    present = rows.exclude(**{f"{column}__isnull": True})
    count = present.count()
    results: list[float | None] = []
    ordered = present.order_by(column).values_list(column, flat=True)
    for fraction in fractions:
        if not count:
            results.append(None)
            continue
        position = fraction * (count - 1)
        lower = math.floor(position)
        values = list(ordered[lower : lower + 2])
        upper = values[1] if len(values) > 1 else values[0]
        results.append(values[0] + (upper - values[0]) * (position - lower))
    return results


def _day_rows(filters: Filters, found: list[dict[str, Any]]) -> list[Row]:
    """Every day of the range, empty days included."""
    by_date = {values["day"]: values for values in found}
    empty = {"requests": 0, "errors": 0, **dict.fromkeys(COUNTED, 0), "cost": Decimal(0)}
    return [_row(day, day.isoformat(), by_date.get(day, empty)) for day in filters.days()]


def by_day(filters: Filters) -> list[Row]:
    """Grouped by the viewer's local date."""
    found = (
        filters.records()
        .annotate(day=TruncDate("started_at", tzinfo=filters.tz))
        .values("day")
        .annotate(**sums())
        .order_by("day")
    )
    return _day_rows(filters, list(found))


def _grouped(filters: Filters, column: str) -> list[dict[str, Any]]:
    return list(filters.records().values(column).annotate(**sums()).order_by("-cost", "-requests", column))


def _model_rows(found: list[dict[str, Any]]) -> list[Row]:
    names = dict(
        ChatModel.objects.filter(pk__in=[v["model_id"] for v in found]).values_list("pk", "display_name")
    )
    return [_row(v["model_id"], names.get(v["model_id"], _("(deleted model)")), v) for v in found]


def _provider_rows(found: list[dict[str, Any]]) -> list[Row]:
    names = dict(Provider.objects.filter(pk__in=[v["provider_id"] for v in found]).values_list("pk", "name"))
    return [_row(v["provider_id"], names.get(v["provider_id"], _("(deleted provider)")), v) for v in found]


def _source_rows(found: list[dict[str, Any]]) -> list[Row]:
    labels = {
        UsageRecord.Source.CHAT: _("Chat"),
        UsageRecord.Source.TITLE: _("Titles"),
        UsageRecord.Source.TOOL_STEP: _("Tool steps"),
        UsageRecord.Source.API: _("API"),
    }
    return [_row(v["source"], str(labels.get(v["source"], v["source"])), v) for v in found]


def _group_rows(found: list[dict[str, Any]]) -> list[Row]:
    names = dict(Group.objects.filter(pk__in=[v["group_id"] for v in found]).values_list("pk", "name"))
    return [_row(v["group_id"], names.get(v["group_id"], _("(no group)")), v) for v in found]


def _user_rows(found: list[dict[str, Any]]) -> list[Row]:
    User = get_user_model()
    names = dict(User.objects.filter(pk__in=[v["user_id"] for v in found]).values_list("pk", "username"))
    return [_row(v["user_id"], names.get(v["user_id"], _("(deleted member)")), v) for v in found]


def by_model(filters: Filters) -> list[Row]:
    return _model_rows(_grouped(filters, "model_id"))


def by_provider(filters: Filters) -> list[Row]:
    return _provider_rows(_grouped(filters, "provider_id"))


def by_source(filters: Filters) -> list[Row]:
    return _source_rows(_grouped(filters, "source"))


def by_group(filters: Filters) -> list[Row]:
    """A record counts once in each group its member belongs to, so the groups can add up to more than
    the total; members in no group (and deleted members) are one row of their own."""
    found = _grouped(filters, "user__groups")
    return _group_rows([{**values, "group_id": values["user__groups"]} for values in found])


def by_user(filters: Filters, limit: int | None = None) -> list[Row]:
    """Members by cost, most first; `limit` None lists everyone with usage in the range (one row per
    member, so a team's list is paged in memory, not in SQL)."""
    found = _grouped(filters, "user_id")
    return _user_rows(found[:limit] if limit is not None else found)


def report(filters: Filters, *, everyone: bool) -> Report:
    """The whole page. `everyone`: the admin's view, with groups and top members; a member's own page
    has neither."""
    if connection.vendor == "postgresql":
        with ThreadPoolExecutor(max_workers=1) as worker:
            # The percentiles' sorts on a connection of their own while the sums are read on this one:
            # the page waits for the longer, not for both (measured with 320,000 records in the month:
            # 900 → 557 ms for the page, with PERCENTILE_WORK_MEM). Not inside a transaction (a
            # test's): another connection would not see its rows.
            pending = (
                None
                if connection.in_atomic_block
                else worker.submit(_on_own_connection, latency_percentiles, filters)
            )
            found = rollup(filters, TABLES_SQL)
            members = rollup(filters, MEMBERS_SQL) if everyone else None
            percentiles = pending.result() if pending else latency_percentiles(filters)
        result = Report(
            filters=filters,
            totals=totals(filters, found["total"][0], percentiles),
            days=_day_rows(filters, found["day"]),
        )
        result.breakdowns = {
            "model": _model_rows(found["model"]),
            "provider": _provider_rows(found["provider"]),
            "source": _source_rows(found["source"]),
        }
        if members is not None:
            result.breakdowns["group"] = _group_rows(members["group"])
            result.top_users = _user_rows(members["user"][:TOP_USERS])
        return result
    result = Report(filters=filters, totals=totals(filters), days=by_day(filters))
    result.breakdowns = {
        "model": by_model(filters),
        "provider": by_provider(filters),
        "source": by_source(filters),
    }
    if everyone:
        result.breakdowns["group"] = by_group(filters)
        result.top_users = by_user(filters, TOP_USERS)
    return result


# PostgreSQL reads the page's tables in two passes over the range instead of one per table. `{rows}`
# is the ORM's SELECT of the filtered rows (Filters.records()), so both engines count the same rows;
# on SQLite the tables come from the ORM's queries one by one (by_model() …), and a test holds the
# two equal. The percentiles take a pass of their own (totals()).
SUMS = """
    COUNT(*) AS requests,
    COUNT(status) FILTER (WHERE status = %s) AS errors,
    SUM(prompt_tokens) AS prompt_tokens,
    SUM(cached_tokens) AS cached_tokens,
    SUM(completion_tokens) AS completion_tokens,
    SUM(reasoning_tokens) AS reasoning_tokens,
    SUM(cost) AS cost"""
SUMS_OF_SUMS = """
    COALESCE(SUM(requests), 0)::bigint AS requests,
    COALESCE(SUM(errors), 0)::bigint AS errors,
    COALESCE(SUM(prompt_tokens), 0)::bigint AS prompt_tokens,
    COALESCE(SUM(cached_tokens), 0)::bigint AS cached_tokens,
    COALESCE(SUM(completion_tokens), 0)::bigint AS completion_tokens,
    COALESCE(SUM(reasoning_tokens), 0)::bigint AS reasoning_tokens,
    COALESCE(SUM(cost), 0) AS cost"""

# The totals and the day, model, provider and source tables: sums per (day, model, provider,
# source), a few thousand, then added up per table by GROUPING SETS. The days are joined as ranges
# [local midnight, next local midnight) rather than computed per row with AT TIME ZONE: the planner
# cannot tell how few dates such an expression gives and would sort every row to group them, while
# per day range it reads the time index in order and keeps a small hash table.
TABLES_SQL = f"""
WITH base AS (
    SELECT days.day, model_id, provider_id, source, {SUMS}
    FROM unnest(%s::date[], %s::timestamptz[], %s::timestamptz[]) AS days(day, day_start, day_end)
    JOIN ({{rows}}) AS usage ON usage.started_at >= days.day_start AND usage.started_at < days.day_end
    GROUP BY days.day, model_id, provider_id, source
)
SELECT
    CASE WHEN GROUPING(day) = 0 THEN 'day' WHEN GROUPING(model_id) = 0 THEN 'model'
         WHEN GROUPING(provider_id) = 0 THEN 'provider' WHEN GROUPING(source) = 0 THEN 'source'
         ELSE 'total' END AS dimension,
    day, model_id, provider_id, source, {SUMS_OF_SUMS}
FROM base
GROUP BY GROUPING SETS ((day), (model_id), (provider_id), (source), ())
ORDER BY dimension, cost DESC, requests DESC
"""

# The members and the groups: a group's sums are its members' sums added up, the same as joining
# each record to its member's groups; deleted members and members of no group make the NULL group.
MEMBERS_SQL = f"""
WITH members AS (
    SELECT user_id, {SUMS}
    FROM ({{rows}}) AS usage
    GROUP BY user_id
)
SELECT 'user' AS dimension, user_id, NULL AS group_id, {SUMS_OF_SUMS}
FROM members
GROUP BY user_id
UNION ALL
SELECT 'group', NULL, member_groups.group_id, {SUMS_OF_SUMS}
FROM members LEFT JOIN auth_user_groups AS member_groups ON member_groups.user_id = members.user_id
GROUP BY member_groups.group_id
ORDER BY dimension, cost DESC, requests DESC
"""


def rollup(filters: Filters, sql: str) -> dict[str, list[dict[str, Any]]]:
    """PostgreSQL: TABLES_SQL or MEMBERS_SQL over the filtered rows; their rows by table, each most
    cost first (the days in date order)."""
    columns = ["started_at", "model_id", "provider_id", "source", "user_id", "status", *COUNTED, "cost"]
    inner, params = filters.records().values(*columns).query.sql_with_params()
    starts = filters.day_starts()
    days = [filters.days(), starts[:-1], starts[1:]] if sql is TABLES_SQL else []
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with connection.cursor() as cursor:
        cursor.execute(sql.format(rows=inner), [ERROR, *days, *params])
        names = [column[0] for column in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            found[row["dimension"]].append(row)
    found["day"].sort(key=lambda row: row["day"])
    return found
