"""Assistants: presets (name, system prompt, model, parameters, tools) shared with the whole team.

Every member lists them and may create one; only its creator or staff may change or delete it (403 for
anyone else, 404 for no such assistant). They answer like the rest of the chat's API (views.api_view):
JSON, a 401 or a typed error; parameters are checked by conversations/parameters.py before saving.
"""

from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from conversations import catalog, parameters
from conversations.models import Assistant
from conversations.views import SYSTEM_PROMPT_MAX_CHARS, BadRequest, api_view, assistant_data, json_body

NAME_MAX_CHARS = Assistant._meta.get_field("name").max_length
DESCRIPTION_MAX_CHARS = Assistant._meta.get_field("description").max_length
FIELDS = {"name", "description", "system_prompt", "model", "parameters", "tools"}


@never_cache
@require_http_methods(["GET", "POST"])
@api_view
def assistant_list(request: HttpRequest) -> JsonResponse:
    """GET: every assistant, by name. POST: a new one, created by the member."""
    if request.method == "GET":
        return JsonResponse({"assistants": [assistant_data(a) for a in Assistant.objects.all()]})
    fields = _clean(request, json_body(request, FIELDS), creating=True)
    assistant = Assistant(created_by=request.user, **fields)
    _save(assistant)
    return JsonResponse({"assistant": assistant_data(assistant)}, status=201)


@never_cache
@require_http_methods(["PATCH", "DELETE"])
@api_view
def assistant_detail(request: HttpRequest, assistant_id: int) -> JsonResponse:
    """PATCH: change some fields. DELETE: remove it; conversations started from it keep their settings."""
    with transaction.atomic():
        assistant = Assistant.objects.select_for_update().filter(pk=assistant_id).first()
        if assistant is None:
            raise BadRequest("not_found", _("No such assistant."), status=404)
        if not (request.user.is_staff or assistant.created_by_id == request.user.pk):
            raise BadRequest("forbidden", _("Only its creator or an admin may change this assistant."), 403)
        if request.method == "DELETE":
            assistant.delete()
            return JsonResponse({"deleted": assistant_id})
        fields = _clean(request, json_body(request, FIELDS), creating=False)
        if "tools" in fields or "parameters" in fields:
            # tool_choice may name only a tool that is on, whichever of the two changed.
            parameters.validate(
                fields.get("parameters", assistant.parameters), fields.get("tools", assistant.tools)
            )
        for name, value in fields.items():
            setattr(assistant, name, value)
        assistant.updated_at = timezone.now()
        _save(assistant)
    return JsonResponse({"assistant": assistant_data(assistant)})


def _save(assistant: Assistant) -> None:
    try:
        with transaction.atomic():  # a savepoint: a taken name fails this save only
            assistant.save()
    except IntegrityError:
        raise BadRequest("name_taken", _("An assistant with this name exists already.")) from None


def _clean(request: HttpRequest, body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    """The body's fields checked: texts within their limits, a model the member may use, valid
    parameters and tools."""
    fields: dict[str, Any] = {}
    if creating or "name" in body:
        name = body.get("name")
        if not isinstance(name, str) or not " ".join(name.split()):
            raise BadRequest("bad_request", _("The assistant needs a name."))
        fields["name"] = _text(" ".join(name.split()), NAME_MAX_CHARS, _("The name"))
    for field, limit, label in (
        ("description", DESCRIPTION_MAX_CHARS, _("The description")),
        ("system_prompt", SYSTEM_PROMPT_MAX_CHARS, _("The system prompt")),
    ):
        if field in body:
            if not isinstance(body[field], str):
                raise BadRequest("bad_request", _("%(field)s must be text.") % {"field": label})
            fields[field] = _text(body[field], limit, label)
    if body.get("model") is not None:
        model = catalog.usable_model(request.user, body["model"]) if type(body["model"]) is int else None
        if model is None:
            raise BadRequest("unknown_model", _("That model is not available to you."))
        fields["model"] = model
    elif "model" in body:
        fields["model"] = None
    if "tools" in body:
        fields["tools"] = parameters.validate_tools(body["tools"])
    if "parameters" in body:
        tools = fields.get("tools", [] if creating else None)
        fields["parameters"] = parameters.validate(body["parameters"], tools)
    return fields


def _text(value: str, limit: int, label: str) -> str:
    if len(value) > limit:
        raise BadRequest(
            "too_large",
            _("%(field)s is longer than %(count)d characters.") % {"field": label, "count": limit},
        )
    return value
