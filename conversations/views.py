"""The chat page and the small JSON API of its sidebar; messages themselves travel over the socket."""

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from conversations import catalog, events, listing, parameters, search, sharing, tools
from conversations.models import Assistant, ChatModel, Conversation, Folder

TITLE_MAX_CHARS = Conversation._meta.get_field("title").max_length
SYSTEM_PROMPT_MAX_CHARS = parameters.SYSTEM_PROMPT_MAX_CHARS
# Stands in for a conversation id in the URL patterns handed to the page.
_ANY_ID = uuid.UUID(int=0)


class BadRequest(Exception):
    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


def _error(code: str, detail: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "detail": detail}}, status=status)


def api_view(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """Members only, answered in JSON: a script gets a 401 or a 404 it can read, never a login page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return _error("login_required", _("Please log in again."), status=401)
        try:
            return view(request, *args, **kwargs)
        except Http404:
            return _error("not_found", _("No such conversation."), status=404)
        except BadRequest as error:
            return _error(error.code, error.detail, status=error.status)
        except parameters.ParameterError as error:
            body = {"code": error.code, "detail": error.detail, "parameter": error.parameter}
            return JsonResponse({"error": body}, status=400)

    return wrapper


def conversation_or_404(request: HttpRequest, public_id: uuid.UUID) -> Conversation:
    """Return the member's conversation; 404 for anyone else's, so ids leak nothing."""
    return get_object_or_404(Conversation.objects.for_user(request.user), public_id=public_id)


# --- The page -------------------------------------------------------------------------------------


@login_required
@ensure_csrf_cookie
def chat(request: HttpRequest) -> HttpResponse:
    """The chat page with a new, empty conversation."""
    return _render_chat(request, None)


@login_required
@ensure_csrf_cookie
def conversation(request: HttpRequest, public_id: uuid.UUID) -> HttpResponse:
    """The chat page with one of the member's conversations open."""
    return _render_chat(request, conversation_or_404(request, public_id))


def _render_chat(request: HttpRequest, selected: Conversation | None) -> HttpResponse:
    conversations, next_cursor = listing.sidebar_page(request.user)
    folders, filed = listing.folder_pages(request.user)
    models = catalog.usable_models(request.user)
    page_data = {
        "selected": str(selected.public_id) if selected else None,
        "conversations": [events.conversation_summary(c) for c in conversations + filed],
        "next": next_cursor,
        "folders": folders,
        "models": [_model_choice(model) for model in models],
        "default_model": _default_model(request, models),
        "tools": tools.available_tool_names(),
        "assistants": [assistant_data(assistant) for assistant in Assistant.objects.all()],
        "limits": {
            "title_max_chars": TITLE_MAX_CHARS,
            "search_max_chars": search.MAX_QUERY_CHARS,
            "folder_name_max_chars": Folder._meta.get_field("name").max_length,
            "system_prompt_max_chars": SYSTEM_PROMPT_MAX_CHARS,
            "image_max_bytes": settings.IMAGE_MAX_BYTES,
            "images_per_message": settings.IMAGES_PER_MESSAGE,
        },
        "urls": {
            "chat": reverse("chat"),
            "conversation": reverse("conversation", args=[_ANY_ID]),
            "conversation_list": reverse("conversation_list"),
            "conversation_detail": reverse("conversation_detail", args=[_ANY_ID]),
            "conversation_restore": reverse("conversation_restore", args=[_ANY_ID]),
            "conversation_export": reverse("conversation_export", args=[_ANY_ID]),
            "folder_list": reverse("folder_list"),
            "folder_detail": reverse("folder_detail", args=[0]),
            "conversation_import": reverse("conversation_import"),
            "attachment_upload": reverse("attachment_upload"),
            "attachment": reverse("attachment", args=[_ANY_ID]),
            "assistant_list": reverse("assistant_list"),
            "assistant_detail": reverse("assistant_detail", args=[0]),
            "conversation_shares": reverse("conversation_shares", args=[_ANY_ID]),
            "share_detail": reverse("share_detail", args=[0]),
            "share_snapshot": reverse("share_snapshot", args=[0]),
            "login": reverse("login"),
            "socket": "/ws/chat/",
        },
        "any_id": str(_ANY_ID),
        "strings": ui_strings(),
    }
    context = {"page_data": page_data, "models": page_data["models"], "selected": selected}
    return render(request, "conversations/chat.html", context)


def _model_choice(model: ChatModel) -> dict[str, Any]:
    offline = model.provider.is_offline
    label = model.display_name
    if offline and "offline" not in label.lower():
        label = _("Offline demo (%(name)s)") % {"name": label}
    return {
        "id": model.pk,
        "label": label,
        "offline": offline,
        # What the settings panel shows for this model (conversations/parameters.py).
        "parameters": parameters.supported_names(model),
        "tools": model.supports_tools,
        "vision": model.supports_vision,  # whether images may be attached
    }


def assistant_data(assistant: Assistant) -> dict[str, Any]:
    return {
        "id": assistant.pk,
        "name": assistant.name,
        "description": assistant.description,
        "system_prompt": assistant.system_prompt,
        "model": assistant.model_id,
        "parameters": assistant.parameters,
        "tools": assistant.tools,
        "created_by": assistant.created_by_id,
    }


def conversation_detail_data(conversation: Conversation) -> dict[str, Any]:
    """The sidebar's summary and what the settings panel edits: model, system prompt, parameters, tools."""
    return {
        **events.conversation_summary(conversation),
        "model": conversation.model_id,
        "system_prompt": conversation.system_prompt,
        "parameters": conversation.parameters,
        "tools": conversation.tools,
    }


def _default_model(request: HttpRequest, models: list[ChatModel]) -> int | None:
    """The model a new conversation starts with: as messaging._model_for() picks it."""
    profile = getattr(request.user, "profile", None)
    usable = [model.pk for model in models]
    if profile is not None and profile.default_model_id in usable:
        return profile.default_model_id
    return min(usable, default=None)


def ui_strings() -> dict[str, str]:
    """The words chat.js shows, translated here until the JavaScript catalog exists."""
    return {
        "new_conversation": _("New conversation"),
        "pinned": _("Pinned"),
        "recent": _("Recent"),
        "pin": _("Pin"),
        "unpin": _("Unpin"),
        "rename": _("Rename"),
        "rename_label": _("New title"),
        "delete": _("Delete"),
        "conversation_deleted": _("Conversation deleted"),
        "folder_deleted": _("Folder deleted; its conversations are kept"),
        "undo": _("Undo"),
        "move_to": _("Move to…"),
        "no_folder": _("No folder"),
        "no_folders": _("No folders yet"),
        "new_folder": _("New folder"),
        "folder_name_label": _("Folder name"),
        "folder_empty": _("No conversations in this folder"),
        "show_more": _("Show more"),
        "you": _("You"),
        "assistant": _("Assistant"),
        "regenerate": _("Regenerate"),
        "retry": _("Retry"),
        "copy": _("Copy"),
        "copied": _("Copied"),
        "copy_code": _("Copy code"),
        "previous_version": _("Previous version"),
        "next_version": _("Next version"),
        "version": _("Version %(index)s of %(count)s"),
        "edit": _("Edit"),
        "edit_label": _("Edit your message"),
        "save": _("Save"),
        "cancel": _("Cancel"),
        "jump_to_latest": _("Jump to latest"),
        "older_messages": _("Show older messages"),
        "stopped": _("Stopped"),
        "cut_at_length": _("The reply reached its length limit (max tokens) and stops here."),
        "filtered": _("The provider's content filter stopped this reply."),
        "interrupted": _("Interrupted"),
        "error": _("The reply failed."),
        "thinking": _("Writing…"),
        "reasoning": _("Reasoning"),
        "thinking_for": _("Thinking… %(seconds)s s"),
        "thought_for": _("Thought for %(seconds)s s"),
        "json_valid": _("Valid JSON"),
        "json_matches_schema": _("Matches schema"),
        "json_not_json": _("Not valid JSON"),
        "json_not_object": _("Not a JSON object"),
        "json_schema_mismatch": _("Does not match the schema"),
        "json_schema_invalid": _("The schema is not valid"),
        "json_root": _("(whole reply)"),
        "json_more_errors": _("…and %(count)s more"),
        "tool_call": _("Tool call: %(name)s"),
        "tool_result": _("Tool result"),
        "tool_result_of": _("Tool result: %(name)s"),
        "image": _("[image]"),
        "context_note_one": _("1 earlier message was left out to fit the model's context window."),
        "context_note": _("%(count)s earlier messages were left out to fit the model's context window."),
        "blocked_image": _("[image not shown: %(alt)s]"),
        "blocked_image_no_alt": _("[image not shown]"),
        "empty_title": _("How can I help?"),
        "empty_hint": _("Enter sends, Shift+Enter starts a new line."),
        "connecting": _("Connecting…"),
        "reconnecting": _("Connection lost. Reconnecting…"),
        "session_ended": _("Your session has ended. Please log in again."),
        "not_found": _("That conversation no longer exists."),
        "request_failed": _("That did not work. Please try again."),
        "too_long": _("The message is too long."),
        "offline_badge": _("Offline demo"),
        "offline_hint": _("Replies come from the built-in offline demo, not from a real model."),
        "no_matches": _("No conversation matches."),
        "importing": _("Importing…"),
        "settings_saved": _("Settings saved."),
        "invalid_json": _("%(field)s is not valid JSON."),
        "assistant_saved": _("Assistant “%(name)s” saved."),
        "assistant_name_needed": _("Give the assistant a name."),
        "no_assistant": _("No assistant"),
        "call_tool": _("Call %(name)s"),
        "attach_images": _("Attach images"),
        "attached_image": _("Attached image"),
        "remove_image": _("Remove image"),
        "uploading_image": _("Uploading image…"),
        "image_failed": _("The image could not be attached."),
        "image_needs_vision": _("This model does not accept images. Choose a model that does."),
        "too_many_images": _("At most %(count)s images can go with one message."),
        "image_too_large": _("The image is larger than %(limit)s MB."),
        "drop_images": _("Drop images to attach them"),
        "share_created": _("Link created. You can copy it again from the list below."),
        "share_copy_link": _("Copy link"),
        "share_updated": _("Snapshot updated: the link now shows the conversation as it is."),
        "share_revoked": _("Link revoked."),
        "share_none": _("No links to this conversation yet."),
        "share_anyone": _("Anyone with the link"),
        "share_team": _("Team members only"),
        "share_expires": _("expires %(date)s"),
        "share_never_expires": _("never expires"),
        "share_messages": _("%(count)s messages"),
        "share_state_expired": _("expired"),
        "share_state_revoked": _("revoked"),
        "share_update": _("Update snapshot"),
        "share_revoke": _("Revoke"),
    }


# --- The sidebar API ------------------------------------------------------------------------------


def _parse_cursor(value: str) -> tuple[datetime, int]:
    stamp, _sep, pk = value.partition("|")
    try:
        updated_at = parse_datetime(stamp)
        pk_number = int(pk)
    except ValueError:
        updated_at = None
    if updated_at is None or timezone.is_naive(updated_at):
        raise BadRequest("bad_cursor", _("The page cursor is not valid."))
    return updated_at, pk_number


@never_cache
@require_GET
@api_view
def conversation_list(request: HttpRequest) -> JsonResponse:
    before = _parse_cursor(request.GET["before"]) if request.GET.get("before") else None
    query = _search_query(request)
    if query:
        results, next_cursor = listing.search_page(request.user, query, before)
        return JsonResponse({"conversations": results, "next": next_cursor})
    answer: dict[str, Any] = {}
    if request.GET.get("folder"):
        conversations, next_cursor = listing.folder_page(request.user, _folder_from(request), before)
    else:
        conversations, next_cursor = listing.sidebar_page(request.user, before)
        if before is None:
            answer["folders"], filed = listing.folder_pages(request.user)
            conversations += filed
    answer["conversations"] = [events.conversation_summary(c) for c in conversations]
    answer["next"] = next_cursor
    return JsonResponse(answer)


def _folder_from(request: HttpRequest) -> Folder:
    """`folder`, one of the member's folders: anyone else's is a 404, as if it did not exist."""
    value = request.GET["folder"]
    return folder_or_404(request, int(value) if value.isascii() and value.isdigit() else None)


def _search_query(request: HttpRequest) -> str:
    """`q`, trimmed; "" lists as usual. Bounded, so that one request cannot ask for a huge pattern."""
    # PostgreSQL refuses a NUL in a query parameter (and its text columns never hold one).
    query = request.GET.get("q", "").replace("\x00", "").strip()
    if len(query) > search.MAX_QUERY_CHARS:
        raise BadRequest(
            "too_large",
            _("The search is longer than %(count)d characters.") % {"count": search.MAX_QUERY_CHARS},
        )
    return query


@never_cache
@require_http_methods(["GET", "PATCH", "DELETE"])
@api_view
def conversation_detail(request: HttpRequest, public_id: uuid.UUID) -> JsonResponse:
    if request.method == "GET":
        conversation = conversation_or_404(request, public_id)
        return JsonResponse({"conversation": conversation_detail_data(conversation)})
    if request.method == "DELETE":
        with transaction.atomic():
            conversation = conversation_or_404(request, public_id)
            conversation.deleted_at = timezone.now()
            conversation.save(update_fields=["deleted_at"])
            # Undo brings the conversation back, not its links: a member who deleted it meant them gone.
            sharing.revoke_links_of(conversation)
            events.announce_conversation("deleted", conversation)
        return JsonResponse({"deleted": str(conversation.public_id)})

    changes = _clean_changes(request)
    with transaction.atomic():
        conversation = conversation_or_404(request, public_id)
        if "model" in changes and changes["model"] is not None:
            changes["model"] = _usable_model(request, changes["model"])
        if "folder" in changes and changes["folder"] is not None:
            changes["folder"] = own_folder(request, changes["folder"])
            if changes["folder"] is None:
                raise BadRequest("unknown_folder", _("No such folder."))
        if "parameters" in changes or "tools" in changes:
            # tool_choice may name only a tool that is on, whichever of the two changed.
            parameters.validate(
                changes.get("parameters", conversation.parameters), changes.get("tools", conversation.tools)
            )
        if "title" in changes:
            # A renamed conversation is one the member is working with: it moves to the top.
            changes["updated_at"] = timezone.now()
        for field, value in changes.items():
            setattr(conversation, field, value)
        if changes:
            conversation.save(update_fields=list(changes))
            events.announce_conversation("updated", conversation)
    return JsonResponse({"conversation": conversation_detail_data(conversation)})


@never_cache
@require_POST
@api_view
def conversation_restore(request: HttpRequest, public_id: uuid.UUID) -> JsonResponse:
    """Undo a delete: the owner's conversation deleted within models.RESTORE_WINDOW comes back where
    it was in the list (its updated_at is kept); anyone else's, or an older delete, is a 404."""
    with transaction.atomic():
        conversation = get_object_or_404(
            Conversation.objects.restorable_by(request.user), public_id=public_id
        )
        conversation.deleted_at = None
        conversation.save(update_fields=["deleted_at"])
        # For the other tabs it is a conversation their list does not have: a new one.
        events.announce_conversation("created", conversation)
    return JsonResponse({"conversation": events.conversation_summary(conversation)})


def json_body(request: HttpRequest, fields: set[str]) -> dict[str, Any]:
    """The request's JSON object; a body of anything else, or with a field not in `fields`, is refused."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise BadRequest("bad_json", _("The request body is not a JSON object."))
    unknown = set(body) - fields
    if unknown:
        raise BadRequest("bad_request", _("Unknown field: %(field)s.") % {"field": sorted(unknown)[0]})
    return body


def _clean_changes(request: HttpRequest) -> dict[str, Any]:
    """The fields a PATCH may change, checked for type and length; unknown fields are refused."""
    body = json_body(request, {"title", "pinned", "model", "system_prompt", "folder", "parameters", "tools"})

    changes: dict[str, Any] = {}
    if "title" in body:
        if not isinstance(body["title"], str):
            raise BadRequest("bad_request", _("The title must be text."))
        title = " ".join(body["title"].split())
        if len(title) > TITLE_MAX_CHARS:
            raise BadRequest(
                "too_large", _("The title is longer than %(count)d characters.") % {"count": TITLE_MAX_CHARS}
            )
        changes["title"] = title
    if "pinned" in body:
        if not isinstance(body["pinned"], bool):
            raise BadRequest("bad_request", _("“pinned” must be true or false."))
        changes["pinned"] = body["pinned"]
    if "model" in body:
        model = body["model"]
        if model is not None and (isinstance(model, bool) or not isinstance(model, int)):
            raise BadRequest("bad_request", _("The model must be a model id."))
        changes["model"] = model
    if "folder" in body:
        folder = body["folder"]
        if folder is not None and (isinstance(folder, bool) or not isinstance(folder, int)):
            raise BadRequest("bad_request", _("The folder must be a folder id or null."))
        changes["folder"] = folder
    if "system_prompt" in body:
        if not isinstance(body["system_prompt"], str):
            raise BadRequest("bad_request", _("The system prompt must be text."))
        if len(body["system_prompt"]) > SYSTEM_PROMPT_MAX_CHARS:
            raise BadRequest(
                "too_large",
                _("The system prompt is longer than %(count)d characters.")
                % {"count": SYSTEM_PROMPT_MAX_CHARS},
            )
        changes["system_prompt"] = body["system_prompt"]
    if "tools" in body:
        changes["tools"] = parameters.validate_tools(body["tools"])
    if "parameters" in body:
        changes["parameters"] = parameters.validate(body["parameters"])
    return changes


def own_folder(request: HttpRequest, folder_id: int | None) -> Folder | None:
    return Folder.objects.for_user(request.user).filter(pk=folder_id).first() if folder_id else None


def folder_or_404(request: HttpRequest, folder_id: int | None) -> Folder:
    """One of the member's folders: anyone else's is a 404, as if it did not exist."""
    folder = own_folder(request, folder_id)
    if folder is None:
        raise BadRequest("not_found", _("No such folder."), status=404)
    return folder


def _usable_model(request: HttpRequest, model_id: int) -> ChatModel:
    model = catalog.usable_model(request.user, model_id)
    if model is None:
        raise BadRequest("unknown_model", _("That model is not available to you."))
    return model
