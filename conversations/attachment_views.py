"""Images for vision models: upload one (conversations/images.py does the checking), and read it back.

An image travels over HTTP, never over the chat socket (daphne caps frames at 1 MiB); a `send`
then names it by id (docs/websocket.md). The upload answers like the sidebar API (views.api_view).
Reading is for the owner only: anyone else, signed in or not, gets the same 404 as for an id that
does not exist, so ids leak nothing.
"""

import uuid

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from conversations import images
from conversations.models import Attachment
from conversations.views import BadRequest, api_view

# Multipart framing around the file: a request longer than the limit plus this is refused unread.
MULTIPART_OVERHEAD_BYTES = 16 * 1024
# The image is inert: nothing in it may run, load or be sniffed as something else.
SERVED_POLICY = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"


def attachment_summary(attachment: Attachment) -> dict[str, object]:
    return {
        "id": str(attachment.public_id),
        "width": attachment.width,
        "height": attachment.height,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "url": reverse("attachment", args=[attachment.public_id]),
    }


@require_POST
@api_view
def upload(request: HttpRequest) -> JsonResponse:
    """POST multipart/form-data with the image as "file": 201 and {id, width, height, url}."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    # Checked before the multipart body is parsed; the file itself is checked again below.
    if length > settings.IMAGE_MAX_BYTES + MULTIPART_OVERHEAD_BYTES:
        raise _refused(images.too_large())
    upload = request.FILES.get("file")
    if upload is None:
        raise BadRequest("no_file", _("Choose an image to attach."))
    if upload.size > settings.IMAGE_MAX_BYTES:
        raise _refused(images.too_large())
    try:
        attachment = images.save_upload(request.user, upload.read())
    except images.ImageRefused as error:
        raise _refused(error) from error
    return JsonResponse(attachment_summary(attachment), status=201)


@require_GET
def serve(request: HttpRequest, public_id: uuid.UUID) -> FileResponse:
    """The stored image, to its owner only."""
    attachment = attachment_for_viewer(request, public_id)
    response = FileResponse(attachment.file.open("rb"), content_type=attachment.content_type)
    response["Content-Disposition"] = f'inline; filename="image.{attachment.file.name.rsplit(".", 1)[-1]}"'
    response["X-Content-Type-Options"] = "nosniff"
    # Set here, django-csp leaves it alone: opened on its own, the image gets a sandbox, no page.
    response["Content-Security-Policy"] = SERVED_POLICY
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    # The file never changes under its id; only its owner's browser keeps it.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    response["Vary"] = "Cookie"
    return response


def attachment_for_viewer(request: HttpRequest, public_id: uuid.UUID) -> Attachment:
    """The one access rule for reading an image: its owner's. (Share viewers come with sharing.)"""
    if not request.user.is_authenticated:
        raise Http404
    attachment = Attachment.objects.filter(owner=request.user, public_id=public_id).first()
    if attachment is None:
        raise Http404
    return attachment


def _refused(error: images.ImageRefused) -> BadRequest:
    return BadRequest(error.code, error.detail, status=error.status)
