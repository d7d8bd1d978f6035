"""The sidebar's folders: list, create, rename and delete them (moving a conversation is a PATCH of the
conversation, views.conversation_detail).

They answer like the rest of the sidebar API (views.api_view): JSON, a 401 or a typed error, and
someone else's folder is a 404, as if it did not exist. Every change is announced to the member's
other tabs (folder.created / updated / deleted, docs/websocket.md).
"""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from conversations import events
from conversations.models import Folder
from conversations.views import BadRequest, api_view, folder_or_404, json_body

NAME_MAX_CHARS = Folder._meta.get_field("name").max_length


def _clean_name(request: HttpRequest) -> str:
    """The body's `name`: text, spaces collapsed, neither empty nor too long."""
    body = json_body(request, {"name"})
    if not isinstance(body.get("name"), str):
        raise BadRequest("bad_request", _("The folder name must be text."))
    name = " ".join(body["name"].split())
    if not name:
        raise BadRequest("bad_request", _("The folder needs a name."))
    if len(name) > NAME_MAX_CHARS:
        raise BadRequest(
            "too_large", _("The folder name is longer than %(count)d characters.") % {"count": NAME_MAX_CHARS}
        )
    return name


@never_cache
@require_http_methods(["GET", "POST"])
@api_view
def folder_list(request: HttpRequest) -> JsonResponse:
    """GET: the member's folders by name. POST {"name"}: a new folder."""
    if request.method == "GET":
        folders = Folder.objects.for_user(request.user)
        return JsonResponse({"folders": [events.folder_summary(folder) for folder in folders]})
    name = _clean_name(request)
    with transaction.atomic():
        folder = Folder.objects.create(owner=request.user, name=name)
        events.announce_folder("created", folder)
    return JsonResponse({"folder": events.folder_summary(folder)}, status=201)


@never_cache
@require_http_methods(["PATCH", "DELETE"])
@api_view
def folder_detail(request: HttpRequest, folder_id: int) -> JsonResponse:
    """PATCH {"name"}: rename. DELETE: the folder goes, its conversations stay (out of any folder)."""
    if request.method == "DELETE":
        with transaction.atomic():
            folder = folder_or_404(request, folder_id)
            # Built before delete(), which clears the primary key. The tabs move the folder's
            # conversations out themselves: no event per conversation.
            events.announce_folder("deleted", folder)
            # Conversation.folder is SET_NULL: one UPDATE moves them all out, deleted ones too (Undo
            # may bring one back), their updated_at kept, so each returns to its place in "Recent".
            folder.delete()
        return JsonResponse({"deleted": folder_id})

    name = _clean_name(request)
    with transaction.atomic():
        folder = folder_or_404(request, folder_id)
        if folder.name != name:
            folder.name = name
            folder.save(update_fields=["name"])
            events.announce_folder("updated", folder)
    return JsonResponse({"folder": events.folder_summary(folder)})
