"""The request parameters a conversation (or an assistant) may set: one table of their rules, the check
made when they are saved, and the filter that sends a model only what it takes.

A conversation stores what its member chose, whatever the model; the model decides at send time what
goes upstream (request_parameters), so switching models never loses a setting. A reasoning model
takes `max_completion_tokens` where others take `max_tokens`: the one value is sent under the name the
model expects.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from conversations import schemas
from conversations.models import ChatModel
from conversations.tools import available_tool_names

MAX_TOKENS = 1_000_000
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
MAX_LOGIT_BIAS_ENTRIES = 300
MAX_USER_CHARS = 256
MAX_N = 8  # replies per request; only the first is shown, but the member pays for all of them
SEED_RANGE = (-(2**63), 2**63 - 1)
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
TOOL_CHOICES = ("none", "auto", "required")
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_TOOLS = 32
SYSTEM_PROMPT_MAX_CHARS = 32_000


@dataclass(frozen=True)
class Spec:
    kind: str  # number, integer, stop, logit_bias, text, choice, tool_choice, response_format
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    needs: str = ""  # the ChatModel capability it needs: reasoning, json, tools; "" for none


PARAMETERS: dict[str, Spec] = {
    "temperature": Spec("number", 0, 2),
    "top_p": Spec("number", 0, 1),
    "max_tokens": Spec("integer", 1, MAX_TOKENS),
    "max_completion_tokens": Spec("integer", 1, MAX_TOKENS),
    "stop": Spec("stop"),
    "presence_penalty": Spec("number", -2, 2),
    "frequency_penalty": Spec("number", -2, 2),
    "seed": Spec("integer", *SEED_RANGE),
    "n": Spec("integer", 1, MAX_N),
    "logit_bias": Spec("logit_bias", -100, 100),
    "user": Spec("text", 0, MAX_USER_CHARS),
    "tool_choice": Spec("tool_choice", needs="tools"),
    "reasoning_effort": Spec("choice", choices=REASONING_EFFORTS, needs="reasoning"),
    "response_format": Spec("response_format", needs="json"),
}

# What a model that lists no supported parameters of its own is sent: what every Chat Completions API
# takes, and for reasoning models what OpenAI's take (they refuse the sampling parameters).
DEFAULT_PARAMETERS = frozenset(
    {"temperature", "top_p", "max_tokens", "stop", "presence_penalty", "frequency_penalty", "seed", "user"}
)
DEFAULT_REASONING_PARAMETERS = frozenset({"max_completion_tokens", "seed", "user"})
# Sent wherever the model has the capability, unless its admin listed its parameters.
CAPABILITY_PARAMETERS = frozenset({"reasoning_effort", "response_format", "tool_choice"})
_CAPABILITY_FIELDS = {"reasoning": "supports_reasoning", "json": "supports_json", "tools": "supports_tools"}


class ParameterError(Exception):
    """A parameter broke its rule; `detail` names both, for the member."""

    code = "bad_parameter"

    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


# --- Validation -----------------------------------------------------------------------------------


def validate(parameters: Any, tools: list[str] | None = None) -> dict[str, Any]:
    """The parameters, checked against PARAMETERS; raises ParameterError. A null value means unset and
    is dropped. `tools` are the conversation's tools: tool_choice may only name one of them (None:
    not known yet, checked later)."""
    if not isinstance(parameters, dict):
        raise ParameterError("parameters", _("The parameters must be an object."))
    cleaned: dict[str, Any] = {}
    for name, value in parameters.items():
        spec = PARAMETERS.get(name)
        if spec is None:
            raise ParameterError(name, _("Unknown parameter: %(name)s.") % {"name": name})
        if value is None:
            continue
        cleaned[name] = _CHECKS[spec.kind](name, spec, value)
    choice = cleaned.get("tool_choice")
    if tools is not None and isinstance(choice, dict) and choice["function"]["name"] not in tools:
        raise ParameterError(
            "tool_choice",
            _("tool_choice names %(tool)s, which is not one of this conversation's tools.")
            % {"tool": choice["function"]["name"]},
        )
    return cleaned


def valid_subset(parameters: Any) -> dict[str, Any]:
    """What of an imported file's parameters would pass validate(), one by one: an edited file must
    not smuggle other request fields in, and one bad value should not lose the rest. Without tools,
    so a tool_choice is left out."""
    if not isinstance(parameters, dict):
        return {}
    kept: dict[str, Any] = {}
    for name, value in parameters.items():
        if name == "tool_choice":
            continue
        try:
            kept.update(validate({name: value}))
        except ParameterError:
            continue
    return kept


def validate_tools(tools: Any) -> list[str]:
    """A list of distinct names of available tools; raises ParameterError."""
    if not isinstance(tools, list) or not all(isinstance(name, str) for name in tools):
        raise ParameterError("tools", _("tools must be a list of tool names."))
    if len(tools) > MAX_TOOLS:
        raise ParameterError("tools", _("At most %(count)d tools can be on.") % {"count": MAX_TOOLS})
    available = set(available_tool_names())
    for name in tools:
        if name not in available:
            raise ParameterError("tools", _("Unknown tool: %(name)s.") % {"name": name})
    return list(dict.fromkeys(tools))


def clean_settings(settings: Any) -> dict[str, Any]:
    """A new conversation's settings from the send frame ({system_prompt, parameters, tools}, each
    optional) as Conversation fields; raises ParameterError."""
    if not isinstance(settings, dict) or not set(settings) <= {"system_prompt", "parameters", "tools"}:
        raise ParameterError("settings", _("settings takes system_prompt, parameters and tools."))
    fields: dict[str, Any] = {}
    if "system_prompt" in settings:
        prompt = settings["system_prompt"]
        if not isinstance(prompt, str) or len(prompt) > SYSTEM_PROMPT_MAX_CHARS:
            raise ParameterError(
                "system_prompt",
                _("The system prompt must be text of at most %(count)d characters.")
                % {"count": SYSTEM_PROMPT_MAX_CHARS},
            )
        fields["system_prompt"] = prompt
    if "tools" in settings:
        fields["tools"] = validate_tools(settings["tools"])
    if "parameters" in settings:
        fields["parameters"] = validate(settings["parameters"], fields.get("tools", []))
    return fields


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _range_error(name: str, spec: Spec) -> ParameterError:
    return ParameterError(
        name,
        _("%(name)s must be between %(low)s and %(high)s.")
        % {"name": name, "low": spec.low, "high": spec.high},
    )


def _number(name: str, spec: Spec, value: Any) -> float:
    if not _is_number(value):
        raise ParameterError(name, _("%(name)s must be a number.") % {"name": name})
    if not spec.low <= value <= spec.high:
        raise _range_error(name, spec)
    return value


def _integer(name: str, spec: Spec, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, _("%(name)s must be a whole number.") % {"name": name})
    if not spec.low <= value <= spec.high:
        raise _range_error(name, spec)
    return value


def _stop(name: str, spec: Spec, value: Any) -> str | list[str]:
    sequences = [value] if isinstance(value, str) else value
    if not isinstance(sequences, list) or not all(isinstance(item, str) and item for item in sequences):
        raise ParameterError(name, _("stop must be text or a list of non-empty texts."))
    if len(sequences) > MAX_STOP_SEQUENCES or any(len(item) > MAX_STOP_CHARS for item in sequences):
        raise ParameterError(
            name,
            _("stop takes at most %(count)d sequences of at most %(chars)d characters each.")
            % {"count": MAX_STOP_SEQUENCES, "chars": MAX_STOP_CHARS},
        )
    return value


def _logit_bias(name: str, spec: Spec, value: Any) -> dict[str, int | float]:
    if not isinstance(value, dict):
        raise ParameterError(name, _("logit_bias must map token ids to numbers."))
    if len(value) > MAX_LOGIT_BIAS_ENTRIES:
        raise ParameterError(
            name, _("logit_bias takes at most %(count)d tokens.") % {"count": MAX_LOGIT_BIAS_ENTRIES}
        )
    for token, bias in value.items():
        if not token.isascii() or not token.isdigit():
            raise ParameterError(name, _("logit_bias keys must be token ids (whole numbers)."))
        if not _is_number(bias) or not spec.low <= bias <= spec.high:
            raise _range_error(name, spec)
    return value


def _text(name: str, spec: Spec, value: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError(name, _("%(name)s must be text.") % {"name": name})
    if len(value) > spec.high:
        raise ParameterError(
            name, _("%(name)s is longer than %(count)d characters.") % {"name": name, "count": spec.high}
        )
    return value


def _choice(name: str, spec: Spec, value: Any) -> str:
    if value not in spec.choices:
        raise ParameterError(
            name,
            _("%(name)s must be one of: %(choices)s.") % {"name": name, "choices": ", ".join(spec.choices)},
        )
    return value


def _tool_choice(name: str, spec: Spec, value: Any) -> str | dict[str, Any]:
    if value in TOOL_CHOICES:
        return value
    function = value.get("function") if isinstance(value, dict) else None
    if (
        not isinstance(function, dict)
        or value.get("type") != "function"
        or set(value) != {"type", "function"}
        or set(function) != {"name"}
        or not isinstance(function["name"], str)
    ):
        raise ParameterError(
            name,
            _('tool_choice must be none, auto, required or {"type": "function", "function": {"name": …}}.'),
        )
    return value


def _response_format(name: str, spec: Spec, value: Any) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object" and set(value) == {"type"}:
        return value
    if kind != "json_schema" or set(value) != {"type", "json_schema"}:
        raise ParameterError(name, _("response_format must be JSON mode (json_object) or a JSON schema."))
    settings = value["json_schema"]
    if not isinstance(settings, dict) or not set(settings) <= {"name", "description", "schema", "strict"}:
        raise ParameterError(name, _("json_schema takes name, description, schema and strict."))
    if not isinstance(settings.get("name"), str) or not SCHEMA_NAME.match(settings["name"]):
        raise ParameterError(name, _("The schema's name must be 1 to 64 letters, digits, _ or -."))
    if not isinstance(settings.get("description", ""), str) or not isinstance(
        settings.get("strict", False), bool
    ):
        raise ParameterError(name, _("The schema's description must be text and strict true or false."))
    schema = settings.get("schema")
    if not isinstance(schema, dict):
        raise ParameterError(name, _("The JSON schema must be an object."))
    problem = schemas.problem(schema)
    if problem:
        raise ParameterError(name, problem)
    return value


_CHECKS = {
    "number": _number,
    "integer": _integer,
    "stop": _stop,
    "logit_bias": _logit_bias,
    "text": _text,
    "choice": _choice,
    "tool_choice": _tool_choice,
    "response_format": _response_format,
}


# --- What a model is sent -------------------------------------------------------------------------


def supported_names(model: ChatModel) -> list[str]:
    """The parameters this model takes, in table order: the admin's list if there is one, else the
    defaults for its kind; never one whose capability the model lacks."""
    if model.supported_parameters:
        names = set(model.supported_parameters)
    elif model.supports_reasoning:
        names = DEFAULT_REASONING_PARAMETERS | CAPABILITY_PARAMETERS
    else:
        names = DEFAULT_PARAMETERS | CAPABILITY_PARAMETERS
    return [
        name
        for name, spec in PARAMETERS.items()
        if name in names and (not spec.needs or getattr(model, _CAPABILITY_FIELDS[spec.needs]))
    ]


def request_parameters(parameters: dict[str, Any], model: ChatModel, tools_on: bool) -> dict[str, Any]:
    """What of a conversation's parameters goes upstream to this model."""
    supported = set(supported_names(model))
    chosen = dict(parameters)
    # One output limit, under the name the model expects; the other name's value when only it is set.
    takes_completion = "max_completion_tokens" in supported and (
        model.supports_reasoning or "max_tokens" not in supported
    )
    wanted, other = (
        ("max_completion_tokens", "max_tokens")
        if takes_completion
        else ("max_tokens", "max_completion_tokens")
    )
    limit = chosen.pop(wanted, None)
    fallback = chosen.pop(other, None)
    if limit is not None or fallback is not None:
        chosen[wanted] = limit if limit is not None else fallback
    if not tools_on:
        chosen.pop("tool_choice", None)
    return {name: value for name, value in chosen.items() if name in supported}
