"""Replies asked for as JSON: checked once when they finish, the verdict kept on the message.

A conversation's parameters may hold an OpenAI `response_format`: `{"type": "json_object"}` (any JSON
object) or `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`. Providers honour it
to different degrees, so the finished reply is parsed and, for a schema, validated (JSON Schema 2020-12)
and the result is stored as one more part of the reply, which the page shows as a badge or a list of
errors by path:

    {"type": "json_check", "mode": "json_schema", "name": "answer", "parsed": true, "valid": false,
     "errors": [{"path": "/items/0/price", "message": "-1 is less than the minimum of 0"}],
     "more_errors": 0}

`path` is a JSON pointer into the reply ("" is the whole reply). Messages are the parser's and
jsonschema's, in English; the two failures of chatsite's own carry a `code` the page words in the
member's language: `not_json` and `not_object` (JSON mode asks for an object). Format checking is on: a schema that
names a format asks for it, and jsonschema checks those it can without extra packages (date, email,
ipv4, ipv6, uuid, regex; others, such as date-time and uri, pass unchecked).
"""

import json
from typing import Any

import referencing.exceptions

from conversations import schemas

PART_TYPE = "json_check"
TOOL_PARTS = {"tool_call", "tool_result"}
MAX_ERRORS = 20
# Counting stops here: a long array that breaks the schema in every item need not be walked to the end.
MAX_COUNTED_ERRORS = 1000
MAX_MESSAGE_CHARS = 300
# Longer replies are not checked: parsing and validating them in the shared database thread would
# hold up every other member's saves.
MAX_CHECKED_CHARS = 1_000_000


def unfenced(text: str) -> str:
    """The text inside a ```json fence that wraps the whole reply, else the text. (Models often wrap
    JSON in a fence although asked for JSON alone.) String operations, not a regex: a backtracking
    pattern over a long reply of spaces took seconds."""
    stripped = text.strip()
    if len(stripped) < 6 or not (stripped.startswith("```") and stripped.endswith("```")):
        return text
    opening, newline, inside = stripped[3:-3].partition("\n")
    if not newline or opening.strip(" \t") not in ("", "json", "JSON"):
        return text
    inside = inside.rstrip(" \t")
    return inside.removesuffix("\n")


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and every other parser) does not.
    raise ValueError(f"{name} is not valid JSON")


def _pointer(path: Any) -> str:
    """A JSON pointer (RFC 6901) for a jsonschema error's path."""
    return "".join("/" + str(key).replace("~", "~0").replace("/", "~1") for key in path)


def _sort_key(error: Any) -> list[tuple[int, Any]]:
    # Items in numeric order (2 before 10), keys alphabetically, parents before children.
    return [(0, key) if isinstance(key, int) else (1, str(key)) for key in error.absolute_path]


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def check(text: str, response_format: Any) -> dict[str, Any] | None:
    """The json_check part for a reply, or None when the reply was not asked for as JSON."""
    if not isinstance(response_format, dict):
        return None
    mode = response_format.get("type")
    if mode not in {"json_object", "json_schema"}:
        return None
    result: dict[str, Any] = {"type": PART_TYPE, "mode": mode}
    schema = None
    if mode == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        result["name"] = str(spec.get("name", "")) if isinstance(spec, dict) else ""
    errors: list[dict[str, str]] = []
    more = 0
    if len(text) > MAX_CHECKED_CHARS:
        too_long = f"The reply is longer than {MAX_CHECKED_CHARS:,} characters and was not checked."
        return {
            **result,
            "parsed": False,
            "valid": False,
            "errors": [],
            "more_errors": 0,
            "schema_error": too_long,
        }
    try:
        value = json.loads(unfenced(text), parse_constant=_refuse_constant)
        parsed = True
    except RecursionError:
        parsed = False
        errors.append({"path": "", "code": "not_json", "message": "The JSON is nested too deeply."})
    except json.JSONDecodeError as error:
        parsed = False
        detail = f"{error.msg} (line {error.lineno}, column {error.colno})"
        errors.append({"path": "", "code": "not_json", "message": detail})
    except ValueError as error:
        parsed = False
        errors.append({"path": "", "code": "not_json", "message": str(error)})
    if parsed and mode == "json_object" and not isinstance(value, dict):
        errors.append({"path": "", "code": "not_object", "message": "The reply is not a JSON object."})
    if parsed and schema is not None:
        problem = schemas.problem(schema)
        if problem is None:
            try:
                errors, more = _validate(value, schema)
            except (RecursionError, referencing.exceptions.Unresolvable) as error:
                # Nested deeper than the validator goes, or a ref saved before refs were checked: the
                # reply is saved all the same, with the reason instead of a verdict.
                problem = _short(f"The reply could not be checked: {type(error).__name__}")
        if problem:
            result["schema_error"] = problem
    result.update(
        parsed=parsed,
        valid=parsed and not errors and "schema_error" not in result,
        errors=errors,
        more_errors=more,
    )
    return result


def _validate(value: Any, schema: dict[str, Any]) -> tuple[list[dict[str, str]], int]:
    validator = schemas.validator(schema)
    found = []
    for error in validator.iter_errors(value):
        found.append(error)
        if len(found) >= MAX_COUNTED_ERRORS:
            break
    found.sort(key=_sort_key)
    shown = [
        {"path": _pointer(error.absolute_path), "message": _short(error.message)}
        for error in found[:MAX_ERRORS]
    ]
    return shown, len(found) - len(shown)


def answer_text(parts: list[dict[str, Any]]) -> str:
    """The reply's final answer: its text after the last tool call or result (the text of earlier
    tool steps is the model talking while it works, not the JSON asked for)."""
    tool_parts = [index for index, part in enumerate(parts) if part.get("type") in TOOL_PARTS]
    after = parts[tool_parts[-1] + 1 :] if tool_parts else parts
    return "".join(part.get("text", "") for part in after if part.get("type") == "text")


def with_check(parts: list[dict[str, Any]], response_format: Any) -> list[dict[str, Any]]:
    """A finished reply's parts with its json_check part added, when it was asked for as JSON and has
    an answer (a reply that stopped at a tool call has nothing to check)."""
    text = answer_text(parts)
    if not text.strip():
        return parts
    result = check(text, response_format)
    return parts if result is None else [*parts, result]
