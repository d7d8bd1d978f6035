"""Usage statistics: the figures equal the SQL in docs/usage.md, days are the viewer's, filters narrow,
the admin's pages are staff only, the CSV is what is shown, and a member sees their own usage only."""

import csv
import io
import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import statistics, statistics_pages
from conversations.models import ChatModel, Conversation, Profile, Provider, UsageRecord
from conversations.statistics import Filters
from tests.fixtures.chat import session_cookie
from tests.fixtures.users import logged_in_client, make_user
from tests.websocket_client import Socket, offline

DOCS = Path(__file__).resolve().parents[1] / "docs" / "usage.md"
STATISTICS = "/admin/conversations/usagerecord/statistics/"
MEMBERS = "/admin/conversations/usagerecord/statistics/members/"
MY_USAGE = "/account/usage/"
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
# A fixed range far from today, so that "now" never moves a row in or out.
FIRST, LAST = date(2026, 3, 1), date(2026, 3, 10)
RANGE = {"period": "custom", "first": FIRST.isoformat(), "last": LAST.isoformat()}


def documented_sql(marker: str) -> str:
    text = DOCS.read_text()
    block = re.search(rf"<!-- {marker} -->\s*```sql\n(.*?)```", text, re.S)
    assert block, f"no {marker} block in docs/usage.md"
    return block.group(1)


def run_sql(sql: str, *params: object) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return dict(zip(names, cursor.fetchone(), strict=True))


@pytest.fixture
def provider(db) -> Provider:
    return Provider.objects.create(name="Acme", base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def gpt(provider) -> ChatModel:
    return ChatModel.objects.create(provider=provider, upstream_id="gpt-x", display_name="GPT X")


@pytest.fixture
def other_model(db) -> ChatModel:
    other = Provider.objects.create(name="Other", base_url="http://127.0.0.1:9/v2")
    return ChatModel.objects.create(provider=other, upstream_id="other-y", display_name="Other Y")


def record(user, model: ChatModel, started_at: datetime, **fields: object) -> UsageRecord:
    values = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "cost": Decimal("0.00125000"),
        "status": UsageRecord.Status.COMPLETE,
        "time_to_first_token_ms": 200,
        "duration_ms": 1000,
        **fields,
    }
    return UsageRecord.objects.create(
        user=user,
        provider_id=model.provider_id,
        model=model,
        model_name=model.upstream_id,
        started_at=started_at,
        **values,
    )


def at(day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def usage(alice, bob, charlie, gpt, other_model) -> None:
    """Bob and charlie in March (with every kind of token, an error, a running request), and rows
    just outside the range on both sides."""
    conversation = Conversation.objects.create(owner=bob, title="Bob's budget plan", model=gpt)
    secret = Conversation.objects.create(owner=charlie, title="Charlie's secret plan", model=other_model)
    record(bob, gpt, at(1, 9), conversation=conversation, cached_tokens=40, reasoning_tokens=7)
    record(bob, gpt, at(2), status=UsageRecord.Status.ERROR, completion_tokens=0, time_to_first_token_ms=None)
    record(bob, other_model, at(5), source=UsageRecord.Source.TITLE, cost=Decimal("0.5"), duration_ms=3000)
    record(charlie, other_model, at(3), conversation=secret, prompt_tokens=999, cost=Decimal("2.25"))
    record(
        charlie,
        gpt,
        at(10, 23),
        status=UsageRecord.Status.STARTED,
        time_to_first_token_ms=None,
        duration_ms=None,
    )
    record(bob, gpt, at(11, 0, 30), prompt_tokens=5000)  # the day after the range (UTC)
    record(bob, gpt, at(1, 0) - timedelta(seconds=1), prompt_tokens=7000)  # the day before


def utc_filters(**filters: object) -> Filters:
    return Filters.for_days(FIRST, LAST, UTC, **filters)


@pytest.mark.django_db
def test_the_totals_equal_the_documented_sql(usage):
    filters = utc_filters()
    totals = statistics.totals(filters)
    expected = run_sql(documented_sql("totals-sql"), filters.start, filters.end)
    assert expected["requests"] == totals.requests == 5
    assert expected["errors"] == totals.errors == 1
    for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "reasoning_tokens"):
        assert expected[name] == getattr(totals, name), name
    assert totals.prompt_tokens == 100 * 4 + 999
    # SQLite sums decimals as floats; both engines agree to the stored 8 places.
    assert Decimal(str(expected["cost"])).quantize(Decimal("1e-8")) == totals.cost.quantize(Decimal("1e-8"))
    assert totals.cost == Decimal("0.00125") * 3 + Decimal("0.5") + Decimal("2.25")
    if connection.vendor == "postgresql":
        percentiles = run_sql(documented_sql("percentiles-sql"), filters.start, filters.end)
        for name, value in percentiles.items():
            assert value == pytest.approx(getattr(totals, name)), name


@pytest.mark.django_db
def test_percentiles_interpolate_as_percentile_cont(bob, gpt):
    for value in range(1, 101):
        record(bob, gpt, at(4), time_to_first_token_ms=value, duration_ms=value * 10)
    record(bob, gpt, at(4), time_to_first_token_ms=None, duration_ms=None)  # left out, not a zero
    totals = statistics.totals(utc_filters())
    assert totals.ttft_p50 == pytest.approx(50.5)
    assert totals.ttft_p95 == pytest.approx(95.05)
    assert totals.duration_p50 == pytest.approx(505)
    assert totals.duration_p95 == pytest.approx(950.5)


@pytest.mark.django_db
def test_an_empty_range_has_zeros_and_no_percentiles(db):
    totals = statistics.totals(utc_filters())
    assert (totals.requests, totals.cost, totals.error_rate) == (0, Decimal(0), 0.0)
    assert totals.ttft_p50 is None and totals.duration_p95 is None


@pytest.mark.django_db
def test_days_are_the_viewers_local_days(bob, gpt):
    # 15:59 UTC is 23:59 in Shanghai, 16:00 UTC is already the next day there.
    record(bob, gpt, at(1, 15, 59))
    record(bob, gpt, at(1, 16, 0))
    record(bob, gpt, at(1, 16, 1))
    local = statistics.by_day(Filters.for_days(date(2026, 3, 1), date(2026, 3, 2), SHANGHAI))
    assert [(row.key, row.requests) for row in local] == [(date(2026, 3, 1), 1), (date(2026, 3, 2), 2)]
    in_utc = statistics.by_day(Filters.for_days(date(2026, 3, 1), date(2026, 3, 2), UTC))
    assert [row.requests for row in in_utc] == [3, 0]
    # A range of one Shanghai day starts at 16:00 UTC the day before.
    assert Filters.for_days(date(2026, 3, 2), date(2026, 3, 2), SHANGHAI).start == at(1, 16)


@pytest.mark.django_db
def test_a_day_across_a_clock_change_is_23_hours_long(bob, gpt):
    # New York moved its clocks forward on 2026-03-08: that day lasts from 05:00 to 04:00 UTC.
    filters = Filters.for_days(date(2026, 3, 8), date(2026, 3, 8), NEW_YORK)
    assert filters.end - filters.start == timedelta(hours=23)
    record(bob, gpt, datetime(2026, 3, 9, 3, 59, tzinfo=UTC))  # 23:59 on the 8th in New York
    record(bob, gpt, datetime(2026, 3, 9, 4, 0, tzinfo=UTC))  # midnight on the 9th
    assert [row.requests for row in statistics.by_day(filters)] == [1]


@pytest.mark.django_db
def test_the_page_counts_in_the_admins_time_zone(client_alice, alice, bob, gpt):
    record(bob, gpt, at(1, 16, 30))  # March 2 in Shanghai, March 1 in UTC
    Profile.objects.filter(user=alice).update(time_zone="Asia/Shanghai")
    query = {"period": "custom", "first": "2026-03-02", "last": "2026-03-02"}
    page = client_alice.get(STATISTICS, query)
    assert figure(page, "requests") == "1"
    assert "Asia/Shanghai" in page.text
    Profile.objects.filter(user=alice).update(time_zone="UTC")
    assert figure(client_alice.get(STATISTICS, query), "requests") == "0"


@pytest.mark.django_db
def test_filters_narrow_the_rows(usage, bob, charlie, gpt, other_model):
    team = Group.objects.create(name="Research")
    charlie.groups.add(team)
    assert statistics.totals(utc_filters(user_id=bob.pk)).requests == 3
    assert statistics.totals(utc_filters(model_id=gpt.pk)).requests == 3
    assert statistics.totals(utc_filters(provider_id=other_model.provider_id)).requests == 2
    assert statistics.totals(utc_filters(source=UsageRecord.Source.TITLE)).requests == 1
    assert statistics.totals(utc_filters(group_id=team.pk)).requests == 2
    assert statistics.totals(utc_filters(user_id=bob.pk, model_id=other_model.pk)).cost == Decimal("0.5")
    groups = {row.label: row.requests for row in statistics.by_group(utc_filters())}
    assert groups == {"Research": 2, "(no group)": 3}


@pytest.mark.django_db
def test_the_breakdowns_and_top_members(usage, bob, charlie):
    report = statistics.report(utc_filters(), everyone=True)
    assert [(row.label, row.requests) for row in report.breakdowns["model"]] == [("Other Y", 2), ("GPT X", 3)]
    assert {row.label: row.requests for row in report.breakdowns["provider"]} == {"Other": 2, "Acme": 3}
    assert {row.key: row.requests for row in report.breakdowns["source"]} == {"chat": 4, "title": 1}
    assert [(row.label, row.cost) for row in report.top_users] == [
        ("charlie", Decimal("2.25125")),
        ("bob", Decimal("0.5025")),
    ]
    assert sum(row.requests for row in report.days) == report.totals.requests


def figure(page, name: str) -> str:
    match = re.search(rf'data-figure="{name}">([^<]*)<', page.text)
    assert match, f"no {name} on the page"
    return match.group(1).strip()


@pytest.mark.django_db
def test_the_admin_page_shows_the_totals_and_drills_down(client_alice, usage, bob, charlie):
    Profile.objects.filter(user__username="alice").update(time_zone="UTC")
    page = client_alice.get(STATISTICS, RANGE)
    assert page.status_code == 200
    assert figure(page, "requests") == "5"
    assert figure(page, "cost") == "2.7538"
    assert figure(page, "error_rate") == "20.0 %"
    assert "<svg" in page.text and 'class="bar"' in page.text
    assert "style=" not in page.text.split('id="content-main"')[1]  # the CSP allows no inline style

    # From a top member to their records, with the conversations' titles.
    link = re.search(rf'<a href="([^"]+user__id__exact={bob.pk}[^"]*)">bob</a>', page.text)
    assert link, "no link to bob's records"
    records = client_alice.get(link.group(1).replace("&amp;", "&"))
    assert records.status_code == 200
    assert "Bob&#x27;s budget plan" in records.text
    assert "3 usage records" in records.text
    assert "Charlie" not in records.text


@pytest.mark.django_db
def test_the_admin_links_to_the_statistics(client_alice):
    assert STATISTICS in client_alice.get("/admin/").text
    assert STATISTICS in client_alice.get("/admin/conversations/usagerecord/").text


@pytest.mark.django_db
def test_the_members_list_has_everyones_totals(client_alice, usage, bob, charlie):
    Profile.objects.filter(user__username="alice").update(time_zone="UTC")
    page = client_alice.get(MEMBERS, RANGE)
    assert page.status_code == 200
    assert "2 members used the models" in page.text
    assert page.text.index(">charlie</a>") < page.text.index(">bob</a>")  # most cost first
    exported = read_csv(client_alice.get(MEMBERS, {**RANGE, "export": "csv"}))
    assert {row["name"]: row["requests"] for row in exported if row["section"] == "user"} == {
        "charlie": "2",
        "bob": "3",
    }


def read_csv(response) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.content.decode())))


@pytest.mark.django_db
def test_the_csv_is_what_the_page_shows(client_alice, usage):
    Profile.objects.filter(user__username="alice").update(time_zone="UTC")
    rows = read_csv(client_alice.get(STATISTICS, {**RANGE, "export": "csv"}))
    report = statistics.report(utc_filters(), everyone=True)
    total = next(row for row in rows if row["section"] == "total")
    assert total["name"] == "2026-03-01..2026-03-10"
    assert int(total["requests"]) == report.totals.requests
    assert Decimal(total["cost"]) == report.totals.cost
    assert float(total["ttft_p50_ms"]) == pytest.approx(report.totals.ttft_p50, abs=0.05)
    days = [row for row in rows if row["section"] == "day"]
    assert [row["name"] for row in days] == [(FIRST + timedelta(days=n)).isoformat() for n in range(10)]
    assert [int(row["requests"]) for row in days] == [row.requests for row in report.days]
    assert {row["section"] for row in rows} == {
        "total",
        "day",
        "model",
        "provider",
        "source",
        "group",
        "user",
    }
    model_rows = [(row["name"], int(row["requests"])) for row in rows if row["section"] == "model"]
    assert model_rows == [(row.label, row.requests) for row in report.breakdowns["model"]]
    # The same filters as the page.
    only_titles = read_csv(client_alice.get(STATISTICS, {**RANGE, "source": "title", "export": "csv"}))
    assert next(row for row in only_titles if row["section"] == "total")["requests"] == "1"


@pytest.mark.django_db
def test_the_admin_pages_are_for_staff_only(client, client_bob, usage, charlie):
    for url in (STATISTICS, MEMBERS, f"{STATISTICS}?export=csv"):
        for visitor in (client, client_bob):
            response = visitor.get(url)
            assert response.status_code == 302
            assert response["Location"].startswith("/admin/login/")
    # Staff without the permission to view usage records: refused.
    staff = make_user("dora", "dora-password-long-enough", is_staff=True)
    assert logged_in_client(staff).get(STATISTICS).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    assert logged_in_client(staff).get(STATISTICS).status_code == 200


@pytest.mark.django_db
def test_my_usage_shows_only_my_own(client_bob, usage, bob, charlie):
    Profile.objects.filter(user=bob).update(time_zone="UTC")
    page = client_bob.get(MY_USAGE, RANGE)
    assert page.status_code == 200
    own = statistics.totals(utc_filters(user_id=bob.pk))
    assert figure(page, "requests") == str(own.requests) == "3"
    assert figure(page, "cost") == "0.5025"
    # Nothing of charlie's: not his model, his conversation, his name, nor a member or group filter.
    assert "Other Y" in page.text  # bob used it too
    for text in ("charlie", "Charlie", 'name="user"', 'name="group"', "Top members", "By group"):
        assert text not in page.text
    # Asking for charlie's rows changes nothing.
    sneaky = client_bob.get(MY_USAGE, {**RANGE, "user": charlie.pk, "user_id": charlie.pk})
    assert figure(sneaky, "requests") == "3"
    exported = read_csv(client_bob.get(MY_USAGE, {**RANGE, "user": charlie.pk, "export": "csv"}))
    total = next(row for row in exported if row["section"] == "total")
    assert (total["requests"], Decimal(total["cost"])) == ("3", own.cost)
    assert {row["section"] for row in exported} == {"total", "day", "model", "provider", "source"}


@pytest.mark.django_db
def test_another_members_usage_is_not_reachable(client, client_charlie, usage, bob):
    # Charlie's own page has his figures only; the admin's list of bob's records is not his to open.
    page = client_charlie.get(MY_USAGE, {**RANGE, "user": bob.pk})
    assert figure(page, "requests") == "2"
    assert "Bob" not in page.text
    drill_down = f"/admin/conversations/usagerecord/?user__id__exact={bob.pk}"
    assert client_charlie.get(drill_down).status_code == 302
    assert client.get(MY_USAGE).status_code == 302  # logged out: to the login page


@pytest.mark.django_db
def test_a_bad_range_falls_back_to_30_days_and_says_why(client_bob):
    page = client_bob.get(MY_USAGE, {"period": "custom", "first": "2026-03-10", "last": "2026-03-01"})
    assert page.status_code == 200
    assert "The last day comes before the first." in page.text
    today = timezone.localdate()
    assert (today - timedelta(days=29)).isoformat() in page.text


@pytest.mark.django_db
def test_the_periods_end_today(bob, gpt):
    today = date(2026, 3, 10)
    assert Filters.for_period("today", today, UTC).days() == [today]
    assert Filters.for_period("7d", today, UTC).first_day == date(2026, 3, 4)
    assert len(Filters.for_period("30d", today, UTC).days()) == 30


@pytest.mark.django_db
def test_seed_usage_makes_the_records_asked_for(db):
    call_command("seed_usage", records=1200, days=10, users=4, models=3, batch=500, stdout=io.StringIO())
    assert UsageRecord.objects.count() == 1200
    assert UsageRecord.objects.values("user").distinct().count() == 4
    assert UsageRecord.objects.values("model").distinct().count() == 3
    oldest = UsageRecord.objects.order_by("started_at").first().started_at
    assert oldest >= timezone.now() - timedelta(days=10)
    report = statistics.report(Filters.for_period("30d", timezone.localdate(), UTC), everyone=True)
    assert report.totals.requests == 1200
    assert sum(row.requests for row in report.breakdowns["model"]) == 1200


@pytest.mark.django_db(transaction=True)
async def test_a_real_reply_shows_in_my_usage(bob, bob_conversation, offline_upstream):
    socket = Socket(await database_sync_to_async(session_cookie)(bob))
    assert await socket.open()
    conversation = str(bob_conversation.public_id)
    await socket.send(type="subscribe", conversation=conversation)
    await socket.until("snapshot")
    await socket.send(type="send", conversation=conversation, text=offline(reply="One two three four."))
    await socket.until("reply.done")
    await socket.close()

    def page_and_ledger():
        usage_row = UsageRecord.objects.get(user=bob)
        page = logged_in_client(bob).get(MY_USAGE, {"period": "today"})
        return page, offline_upstream.request(str(usage_row.request_id))["usage"]

    page, reported = await database_sync_to_async(page_and_ledger)()
    assert figure(page, "requests") == "1"
    assert figure(page, "completion_tokens") == str(reported["completion_tokens"])
    assert figure(page, "prompt_tokens") == str(reported["prompt_tokens"])


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_percentiles_read_alongside_give_the_same_totals(usage):
    # On PostgreSQL, outside a transaction, report() reads the percentiles on a second connection
    # while it sums on this one; the figures are those of the plain sequential reading.
    filters = utc_filters()
    assert not connection.in_atomic_block
    with CaptureQueriesContext(connection) as here:
        alongside = statistics.report(filters, everyone=True).totals
    if connection.vendor == "postgresql":
        assert not [query for query in here.captured_queries if "PERCENTILE_CONT" in query["sql"]]
    with transaction.atomic():  # inside one, everything is read on this connection
        in_turn = statistics.report(filters, everyone=True).totals
    assert vars(alongside) == vars(in_turn) == vars(statistics.totals(filters))
    assert alongside.ttft_p50 is not None and alongside.requests > 0


@pytest.mark.django_db
def test_the_one_pass_report_equals_the_table_by_table_queries(usage, bob, charlie):
    # On PostgreSQL report() reads every table in one GROUPING SETS pass; the ORM's queries, one per
    # table, are the reference (on SQLite report() is made of them).
    both, research = Group.objects.create(name="Both"), Group.objects.create(name="Research")
    bob.groups.add(both)
    charlie.groups.add(both, research)
    filters = utc_filters()
    report = statistics.report(filters, everyone=True)

    def figures(rows):
        return sorted(
            (str(row.key), row.label, row.requests, row.errors, row.prompt_tokens, row.cost) for row in rows
        )

    assert figures(report.days) == figures(statistics.by_day(filters))
    assert figures(report.breakdowns["model"]) == figures(statistics.by_model(filters))
    assert figures(report.breakdowns["provider"]) == figures(statistics.by_provider(filters))
    assert figures(report.breakdowns["source"]) == figures(statistics.by_source(filters))
    assert figures(report.breakdowns["group"]) == figures(statistics.by_group(filters))
    assert figures(report.top_users) == figures(statistics.by_user(filters))
    assert {row.label: row.requests for row in report.breakdowns["group"]} == {"Both": 5, "Research": 2}
    # The days, in a zone where some of them begin the evening before in UTC.
    local = Filters.for_days(FIRST, LAST, SHANGHAI)
    assert figures(statistics.report(local, everyone=False).days) == figures(statistics.by_day(local))


@pytest.mark.parametrize(
    ("requests", "cost", "request_scale", "cost_scale"),
    [
        (1, Decimal("0.0003"), ["0", "1"], ["0", "0.00025", "0.0005"]),
        (7, Decimal("0.12"), ["0", "5", "10"], ["0", "0.1", "0.2"]),
        (0, Decimal(0), ["0"], ["0"]),
    ],
)
def test_a_chart_scale_reads_in_whole_requests_and_short_costs(requests, cost, request_scale, cost_scale):
    days = [statistics.Row(key=date(2026, 11, 30), label="2026-11-30", requests=requests, cost=cost)]
    by_requests = statistics_pages.bar_chart(days, "requests", "Requests by day")
    by_cost = statistics_pages.bar_chart(days, "cost", "Cost by day", decimals=4)
    assert [label for _y, label in by_requests.ticks] == request_scale
    assert [label for _y, label in by_cost.ticks] == cost_scale
