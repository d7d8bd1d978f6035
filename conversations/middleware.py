"""Per-request middleware: the member's language and time zone; a CSP nonce on every page."""

import zoneinfo
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation
from django.utils.decorators import sync_and_async_middleware


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
