"""JSON Schemas that members and admins write (a reply's schema, a tool's parameters): checked when
saved, then validated without ever leaving the server's hands.

Two things jsonschema does by default must not happen here, since the schema comes from a member and
validation runs in a thread the whole process shares:
- a `$ref` it cannot resolve locally is fetched over the network (or from a file): here only refs
  inside the schema ("#…") are allowed, and the validator gets an empty registry that fetches nothing;
- `pattern` runs Python's backtracking `re`, where `^(a+)+$` takes hours on forty characters: here it
  runs on RE2, in linear time. `patternProperties` (run by several keywords, all on `re`) is refused.
"""

from collections.abc import Iterator
from typing import Any

import re2
from django.utils.translation import gettext as _
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a pattern RE2 cannot take is reported to the member, not logged


def problem(schema: Any) -> str | None:
    """Why a schema cannot be used, in the member's language, or None."""
    if not isinstance(schema, dict):
        return _("The schema must be a JSON object.")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        return _("The schema is not a valid JSON schema: %(reason)s") % {"reason": error.message}
    for key, value in _walk(schema):
        if key in ("$ref", "$dynamicRef") and not (isinstance(value, str) and value.startswith("#")):
            return _("The schema may refer only to its own parts (%(key)s starting with #).") % {"key": key}
        if key == "patternProperties":
            return _("patternProperties is not supported; list the properties instead.")
        if key == "pattern" and isinstance(value, str) and _compiled(value) is None:
            return _("The pattern %(pattern)s uses a regular expression feature that is not supported.") % {
                "pattern": value
            }
    return None


def validator(schema: dict[str, Any]) -> Any:
    """A validator for a schema that problem() accepted: formats checked, nothing fetched, RE2 patterns."""
    return _SafeValidator(schema, registry=Registry(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    compiled = _compiled(pattern)
    if compiled is None or compiled.search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _compiled(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        return None


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every key and value in a schema, however deep (iteratively: a deep schema is no recursion risk)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                yield key, value
                stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)


_SafeValidator = validators.extend(Draft202012Validator, {"pattern": _pattern})
