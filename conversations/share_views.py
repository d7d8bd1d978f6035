"""Share links over HTTP: the member's API (make, list, update, revoke), "My shared links", and what a
link opens: the read-only page, its images, and "Continue this conversation" (conversations/sharing.py
does the work).

Every answer for a token that is not usable (unknown, revoked, expired, its conversation deleted) is
`missing()`: the same bytes, so that a guesser learns nothing from them; and each of them counts
towards the guessing limits.
"""

import uuid
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations import sharing
from conversations.attachment_views import SERVED_POLICY
from conversations.client_address import client_address
from conversations.models import ShareLink
from conversations.views import BadRequest, api_view, conversation_or_404, json_body, ui_strings

# --- Answers for a token --------------------------------------------------------------------------


@cache
def _missing_body(language: str) -> bytes:
    # Rendered once per language, without a request: no CSRF token, user or nonce that could tell two
    # misses apart.
    return render_to_string("conversations/share_missing.html").encode()


def _private(response: HttpResponse) -> HttpResponse:
    response["X-Robots-Tag"] = "noindex, nofollow"
    # The token is in the address: no other site hears of it. Not "no-referrer": Chromium then sends
    # "Origin: null" with the page's own form (Continue), which Django's CSRF check refuses.
    response["Referrer-Policy"] = "same-origin"
    response["Cache-Control"] = "no-store"
    return response


def missing() -> HttpResponse:
    """The one answer for a link that cannot be used, whatever the reason."""
    return _private(
        HttpResponse(_missing_body(get_language()), status=404, content_type="text/html; charset=utf-8")
    )


def _throttled() -> HttpResponse:
    response = HttpResponse(
        _("Too many requests. Please wait a minute."), status=429, content_type="text/plain; charset=utf-8"
    )
    response["Retry-After"] = str(settings.SHARE_MISS_WINDOW)
    return _private(response)


def _link_or_answer(request: HttpRequest, token: str) -> ShareLink | HttpResponse:
    """The usable link, or the response to give instead: 429 while guessing is throttled, else 404."""
    guesser = sharing.guesser(client_address(request), request.user)
    if sharing.guesser_throttled(guesser):
        return _throttled()
    link = sharing.find_link(token)
    if link is None:
        return _throttled() if sharing.record_miss(guesser) else missing()
    return link


# --- The shared page ------------------------------------------------------------------------------


@require_GET
def shared_page(request: HttpRequest, token: str) -> HttpResponse:
    found = _link_or_answer(request, token)
    if isinstance(found, HttpResponse):
        return found
    if not sharing.may_view(found, request.user):
        return _private(redirect_to_login(request.get_full_path()))
    shared = sharing.shared_messages(found)
    image_base = reverse("shared_attachment", args=[token, uuid.UUID(int=0)])
    page_data = {
        "messages": sharing.page_messages(shared),
        "image_url": image_base,
        "any_id": str(uuid.UUID(int=0)),
        "strings": ui_strings(),
    }
    context = {
        "page_data": page_data,
        "title": found.title,
        "shared_by": sharing.display_name(found.conversation.owner),
        "shared_at": found.updated_at,
        "token": token,
        "team_only": found.audience == ShareLink.Audience.TEAM,
    }
    return _private(render(request, "conversations/shared.html", context))


@require_GET
def shared_attachment(request: HttpRequest, token: str, public_id: uuid.UUID) -> HttpResponse:
    """An image of the snapshot, under its token only; any other image is a miss like a bad token."""
    found = _link_or_answer(request, token)
    if isinstance(found, HttpResponse):
        return found
    if not sharing.may_view(found, request.user):
        return missing()
    attachment = sharing.shared_attachment(found, public_id)
    if attachment is None:
        over = sharing.record_miss(sharing.guesser(client_address(request), request.user))
        return _throttled() if over else missing()
    response = FileResponse(attachment.file.open("rb"), content_type=attachment.content_type)
    response["Content-Disposition"] = f'inline; filename="image.{attachment.file.name.rsplit(".", 1)[-1]}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = SERVED_POLICY
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    _private(response)
    return response


@login_required
@require_POST
def continue_shared(request: HttpRequest, token: str) -> HttpResponse:
    """Copy the snapshot into a new conversation of the member's and open it."""
    found = _link_or_answer(request, token)
    if isinstance(found, HttpResponse):
        return found
    conversation = sharing.continue_from(found, request.user)
    return redirect(conversation)


# --- The member's API -----------------------------------------------------------------------------


def _own_link(request: HttpRequest, link_id: int) -> ShareLink:
    """One of the member's links; anyone else's is a 404, as if it did not exist."""
    return get_object_or_404(ShareLink.objects.for_user(request.user), pk=link_id)


def _refused(error: sharing.ShareRefused) -> BadRequest:
    if error.code == "empty":
        return BadRequest("empty", _("There is nothing to share yet: wait for the reply to finish."))
    return BadRequest(error.code, _("Choose one of the expiries offered."))


def _create_options(request: HttpRequest) -> tuple[str, int | None]:
    body = json_body(request, {"audience", "expires_in_days"})
    audience = body.get("audience", ShareLink.Audience.ANYONE)
    if audience not in ShareLink.Audience.values:
        raise BadRequest("bad_audience", _("Choose who may open the link."))
    try:
        return audience, sharing.expiry_choice(body.get("expires_in_days"))
    except sharing.ShareRefused as error:
        raise _refused(error) from error


@never_cache
@require_http_methods(["GET", "POST"])
@api_view
def conversation_shares(request: HttpRequest, public_id: uuid.UUID) -> JsonResponse:
    """GET: this conversation's links (each with its `path` while it works). POST {audience,
    expires_in_days}: a new link, with its full address."""
    conversation = conversation_or_404(request, public_id)
    if request.method == "GET":
        links = ShareLink.objects.for_user(request.user).filter(conversation=conversation)
        return JsonResponse({"shares": [sharing.link_data(link) for link in links]})
    audience, days = _create_options(request)
    try:
        link, token = sharing.create_link(conversation, audience, days)
    except sharing.ShareRefused as error:
        raise _refused(error) from error
    url = request.build_absolute_uri(reverse("shared_page", args=[token]))
    return JsonResponse({"share": sharing.link_data(link), "url": url}, status=201)


@never_cache
@require_GET
@api_view
def share_list(request: HttpRequest) -> JsonResponse:
    links = ShareLink.objects.for_user(request.user)
    return JsonResponse({"shares": [sharing.link_data(link) for link in links]})


@never_cache
@require_http_methods(["DELETE"])
@api_view
def share_detail(request: HttpRequest, link_id: int) -> JsonResponse:
    """DELETE revokes the link (kept, for the member's list)."""
    link = _own_link(request, link_id)
    sharing.revoke(link)
    return JsonResponse({"share": sharing.link_data(link)})


@never_cache
@require_POST
@api_view
def share_snapshot(request: HttpRequest, link_id: int) -> JsonResponse:
    """Take the link's snapshot again: the same address shows the conversation as it is now."""
    link = _own_link(request, link_id)
    if link.conversation.deleted_at is not None or sharing.state_of(link) != "active":
        raise BadRequest("not_active", _("This link no longer works; make a new one."))
    try:
        sharing.update_snapshot(link)
    except sharing.ShareRefused as error:
        raise _refused(error) from error
    return JsonResponse({"share": sharing.link_data(link)})


# --- My shared links ------------------------------------------------------------------------------


@login_required
@never_cache
def my_shares(request: HttpRequest) -> HttpResponse:
    links = ShareLink.objects.for_user(request.user)
    rows: list[dict[str, Any]] = []
    for link in links:
        path = sharing.link_path(link)
        rows.append(
            {
                "link": link,
                "state": sharing.state_of(link),
                "deleted": link.conversation.deleted_at is not None,
                "url": request.build_absolute_uri(path) if path else "",
            }
        )
    return render(request, "conversations/my_shares.html", {"rows": rows})


@login_required
@require_POST
def revoke_mine(request: HttpRequest, link_id: int) -> HttpResponse:
    sharing.revoke(_own_link(request, link_id))
    messages.success(request, _("The link is revoked."))
    return redirect("my_shares")
