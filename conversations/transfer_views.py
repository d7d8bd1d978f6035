"""Download a conversation as a file, and import conversations from one (conversations/transfer.py).

Both answer like the sidebar API (views.api_view): a 401 or a typed JSON error, never a login page,
and someone else's conversation is a 404.
"""

import json
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from conversations import events, transfer
from conversations.views import BadRequest, api_view, conversation_or_404

# Multipart framing around the file: a request longer than the limit plus this is refused unread.
MULTIPART_OVERHEAD_BYTES = 16 * 1024


@never_cache
@require_GET
@api_view
def export(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """GET ?format=md|json: the conversation as a download."""
    conversation = conversation_or_404(request, public_id)
    kind = request.GET.get("format", "md")
    if kind == "md":
        body = transfer.export_markdown(conversation)
        content_type = "text/markdown; charset=utf-8"
    elif kind == "json":
        body = json.dumps(transfer.export_json(conversation), ensure_ascii=False, indent=2) + "\n"
        content_type = "application/json"
    else:
        raise BadRequest("bad_format", _("The export format must be “md” or “json”."))
    response = HttpResponse(body.encode(), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, transfer.file_name(conversation, kind))
    return response


@require_POST
@api_view
def import_conversations(request: HttpRequest) -> JsonResponse:
    """POST multipart/form-data with the file as "file": 201 and the new conversations."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > settings.IMPORT_MAX_BYTES + MULTIPART_OVERHEAD_BYTES:
        raise _refused(transfer.too_large())
    upload = request.FILES.get("file")
    if upload is None:
        raise BadRequest("no_file", _("Choose a file to import."))
    if upload.size > settings.IMPORT_MAX_BYTES:
        raise _refused(transfer.too_large())
    try:
        conversations = transfer.import_file(request.user, upload.read())
    except transfer.ImportRefused as error:
        raise _refused(error) from error
    return JsonResponse(
        {"conversations": [events.conversation_summary(c) for c in conversations]}, status=201
    )


def _refused(error: transfer.ImportRefused) -> BadRequest:
    return BadRequest(error.code, error.detail, status=error.status)
