"""Apply a member's chosen language and time zone to each request."""

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation


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
