"""Per-request middleware: Server-Timing; the member's language and time zone; a CSP nonce on every
page."""

import time
import zoneinfo
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation
from django.utils.decorators import sync_and_async_middleware


class ServerTimingMiddleware:
    """A Server-Timing header on every response: the server's time and its database share, so the
    browser's network panel and bench/history.py show where a slow page's time went."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        database = _DatabaseTime()
        with connection.execute_wrapper(database):
            response = self.get_response(request)
        total_ms = (time.perf_counter() - started) * 1000
        response["Server-Timing"] = (
            f'db;dur={database.seconds * 1000:.1f};desc="{database.queries} queries", total;dur={total_ms:.1f}'
        )
        return response


class _DatabaseTime:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.queries = 0

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.queries += 1


class MemberPreferencesMiddleware:
    """After LocaleMiddleware (which follows the browser) and authentication: the member's choice wins."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        profile = getattr(user, "profile", None) if user.is_authenticated else None
        if profile and profile.language:
            translation.activate(profile.language)
            request.LANGUAGE_CODE = profile.language
        if profile and profile.time_zone:
            try:
                timezone.activate(zoneinfo.ZoneInfo(profile.time_zone))
            except zoneinfo.ZoneInfoNotFoundError:
                timezone.deactivate()
        else:
            timezone.deactivate()
        return self.get_response(request)


@sync_and_async_middleware
def nonce_on_every_page(get_response: Callable) -> Callable:
    """django-csp adds the nonce to script-src only on pages that used it; every page gets one, so
    the policy is the same everywhere and a template that adds a script later needs no change."""

    def touch(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.get("Content-Type", "").startswith("text/html"):
            str(request.csp_nonce)
        return response

    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponse:
            return touch(request, await get_response(request))

    else:

        def middleware(request: HttpRequest) -> HttpResponse:
            return touch(request, get_response(request))

    return middleware
