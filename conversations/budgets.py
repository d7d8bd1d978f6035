"""Budgets and rate limits: admission before every upstream call, settlement after it.

An admin sets Limits (tokens or cost per day or month, requests per minute) on a member or on a group,
where a group's limit applies to each of its members. Before a reply's upstream call, admit() reserves
the request's worst case (the estimated prompt plus the answer's token allowance, or that at the
model's prices, or one request) against every limit that applies, each by one conditional UPDATE of the
member's LimitUsage row for the current window: `used + reserved + amount <= limit`. The UPDATE is
atomic on SQLite and PostgreSQL alike, so N parallel requests with room for one admit exactly one, in
one process or many. The reservations ride on the UsageRecord; when the record finishes (usage.finish,
or the sweeper for a process that died), settle() releases them and adds what was really used.

Windows reset at the start of the day or month in BUDGET_TIME_ZONE (TIME_ZONE unless set). With no
Limit rows at all a send costs no query here: the rows are kept in memory like the model catalog.
"""

import math
import threading
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import formats, timezone
from django.utils.timesince import timeuntil
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations.models import ChatModel, Limit, LimitUsage, UsageRecord

VERSION_KEY = "chatsite:limits-version"
MAX_AGE_SECONDS = 60.0
MILLION = Decimal(1_000_000)


class LimitReached(Exception):
    """A request refused by a limit: `code` is rate_limited or budget_exceeded."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


@dataclass(frozen=True)
class _Snapshot:
    version: str
    loaded_at: float
    by_user: dict[int, list[Limit]]
    by_group: dict[int, list[Limit]]


_snapshot: _Snapshot | None = None
_lock = threading.Lock()


def changed(**_signal_arguments: Any) -> None:
    """A limit was added, changed or removed: every process reloads on its next use."""
    global _snapshot
    _snapshot = None
    cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)


def limits_for(user_id: int) -> list[Limit]:
    """The member's own limits and those of their groups."""
    snapshot = _current()
    limits = list(snapshot.by_user.get(user_id, ()))
    if snapshot.by_group:
        for group_id in Group.objects.filter(user=user_id).values_list("pk", flat=True):
            limits += snapshot.by_group.get(group_id, ())
    return limits


def window(period: str, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The current window of a period: [start, end) as aware datetimes."""
    now = (now or timezone.now()).astimezone(_zone())
    if period == Limit.Period.MINUTE:
        start = now.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Limit.Period.DAY:
        return start, start + timedelta(days=1)  # wall-clock arithmetic: midnight after a DST change too
    start = start.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def estimate(model: ChatModel, payload: dict[str, Any], prompt_chars: int) -> dict[str, Decimal]:
    """A request's worst case per kind: the prompt estimated from the model's calibrated ratio plus
    the answer's allowance (max_completion_tokens, max_tokens, else BUDGET_ANSWER_TOKENS)."""
    prompt = math.ceil(prompt_chars * model.tokens_per_char)
    answer = (
        payload.get("max_completion_tokens") or payload.get("max_tokens") or settings.BUDGET_ANSWER_TOKENS
    )
    answer *= max(1, int(payload.get("n") or 1))
    cost = (prompt * model.input_price + answer * model.output_price) / MILLION
    return {
        Limit.Kind.TOKENS: Decimal(prompt + answer),
        Limit.Kind.COST: cost,
        Limit.Kind.REQUESTS: Decimal(1),
    }


def admit(
    user_id: int, model: ChatModel, payload: dict[str, Any], prompt_chars: int, *, rates: bool = True
) -> list[list[Any]]:
    """Reserve the request against every limit of the member, or raise LimitReached (and reserve
    nothing: call it inside the transaction that saves the request). Returns the reservations for
    UsageRecord.reservations: [[LimitUsage id, kind, amount], ...]. rates=False leaves out requests per
    minute: a reply's later tool steps spend tokens and money, but the member asked only once."""
    limits = [limit for limit in limits_for(user_id) if rates or limit.kind != Limit.Kind.REQUESTS]
    if not limits:
        return []
    amounts = estimate(model, payload, prompt_chars)
    reservations = []
    # Rates first: a member over their rate should hear that, not that a budget is near.
    for limit in sorted(limits, key=lambda limit: limit.period != Limit.Period.MINUTE):
        amount = amounts[limit.kind]
        start, end = window(limit.period)
        row_id = _usage_row(limit, user_id, start)
        room = limit.amount - amount
        admitted = (
            LimitUsage.objects.filter(pk=row_id)
            .alias(held=F("used") + F("reserved"))
            .filter(held__lte=room)
            .update(reserved=F("reserved") + amount)
        )
        if not admitted:
            raise _refusal(limit, row_id, end, amount)
        reservations.append([row_id, limit.kind, str(amount)])
    return reservations


def settle(record: UsageRecord, tokens: int, cost: Decimal) -> None:
    """Release the record's reservations and count what the request really used; a request that
    reserved nothing (a title) still counts against the member's budgets."""
    actual = {Limit.Kind.TOKENS: Decimal(tokens), Limit.Kind.COST: cost, Limit.Kind.REQUESTS: Decimal(1)}
    if record.reservations:
        with transaction.atomic():
            for row_id, kind, amount in record.reservations:
                LimitUsage.objects.filter(pk=row_id).update(
                    reserved=F("reserved") - Decimal(amount), used=F("used") + actual[kind]
                )
        return
    if record.user_id is None:
        return
    counted = [
        limit
        for limit in limits_for(record.user_id)
        if limit.kind != Limit.Kind.REQUESTS and actual[limit.kind]
    ]
    if counted:
        with transaction.atomic():
            for limit in counted:
                row_id = _usage_row(limit, record.user_id, window(limit.period)[0])
                LimitUsage.objects.filter(pk=row_id).update(used=F("used") + actual[limit.kind])


def settle_lapsed(records: list[UsageRecord]) -> None:
    """Records whose process died: what they really used is unknown, so their reservations count
    as used (the upstream may have charged for all of it)."""
    for record in records:
        for row_id, _kind, amount in record.reservations:
            LimitUsage.objects.filter(pk=row_id).update(
                reserved=F("reserved") - Decimal(amount), used=F("used") + Decimal(amount)
            )


def near_limit(row: LimitUsage) -> Decimal:
    """How full a window is, in percent of its limit (for the admin)."""
    if not row.limit.amount:
        return Decimal(100)
    return ((row.used + row.reserved) * 100 / row.limit.amount).quantize(Decimal("0.1"))


def _usage_row(limit: Limit, user_id: int, start: datetime) -> int:
    row_id = (
        LimitUsage.objects.filter(limit=limit, user_id=user_id, window_start=start)
        .values_list("pk", flat=True)
        .first()
    )
    if row_id is not None:
        return row_id
    try:
        with transaction.atomic():  # a savepoint: a parallel request may create the same row
            return LimitUsage.objects.create(limit=limit, user_id=user_id, window_start=start).pk
    except IntegrityError:
        return LimitUsage.objects.get(limit=limit, user_id=user_id, window_start=start).pk


def _refusal(limit: Limit, row_id: int, end: datetime, needed: Decimal) -> LimitReached:
    whose = _(" (the limit of the group %(group)s)") % {"group": limit.group.name} if limit.group_id else ""
    if limit.kind == Limit.Kind.REQUESTS:
        detail = ngettext(
            "Rate limited: at most %(amount)s request %(period)s%(whose)s. Try again in %(wait)s.",
            "Rate limited: at most %(amount)s requests %(period)s%(whose)s. Try again in %(wait)s.",
            int(limit.amount),
        )
        return LimitReached(
            "rate_limited",
            detail
            % {
                "amount": _number(limit.amount),
                "period": limit.get_period_display(),
                "whose": whose,
                "wait": _("%(seconds)s s")
                % {"seconds": max(1, math.ceil((end - timezone.now()).total_seconds()))},
            },
        )
    row = LimitUsage.objects.get(pk=row_id)
    detail = _(
        "Out of budget: %(used)s of %(amount)s %(kind)s %(period)s used%(whose)s, and this request "
        "may need up to %(needed)s. It resets on %(reset)s, in %(wait)s."
    )
    return LimitReached(
        "budget_exceeded",
        detail
        % {
            "used": _number(row.used + row.reserved),
            "amount": _number(limit.amount),
            "needed": _number(needed),
            "kind": limit.get_kind_display(),
            "period": limit.get_period_display(),
            "whose": whose,
            "reset": formats.date_format(end, "DATETIME_FORMAT") + f" ({end.tzname()})",
            "wait": timeuntil(end),
        },
    )


def _number(value: Decimal) -> str:
    shown = int(value) if value == value.to_integral_value() else round(value, 4)
    return formats.number_format(shown, use_l10n=True, force_grouping=True)


def _zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.BUDGET_TIME_ZONE)


def _current() -> _Snapshot:
    global _snapshot
    version = cache.get(VERSION_KEY)
    if version is None:
        cache.add(VERSION_KEY, uuid.uuid4().hex, timeout=None)
        version = cache.get(VERSION_KEY, "")
    snapshot = _snapshot
    if snapshot is not None and snapshot.version == version and _age(snapshot) < MAX_AGE_SECONDS:
        return snapshot
    with _lock:
        by_user: dict[int, list[Limit]] = {}
        by_group: dict[int, list[Limit]] = {}
        for limit in Limit.objects.select_related("group"):
            if limit.user_id:
                by_user.setdefault(limit.user_id, []).append(limit)
            else:
                by_group.setdefault(limit.group_id, []).append(limit)
        _snapshot = _Snapshot(version, time.monotonic(), by_user, by_group)
    return _snapshot


def _age(snapshot: _Snapshot) -> float:
    return time.monotonic() - snapshot.loaded_at
