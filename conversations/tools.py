"""Tools the model may call, run by the server: two built-in ones (a calculator and a clock) and the
HTTP tools an admin defines (models.Tool).

A conversation turns tools on by name (Conversation.tools); context.build_request sends their
definitions, generation.py runs the calls the model makes and sends the results back. Whatever goes
wrong in a call (bad arguments, a refused address, a timeout, an HTTP error) becomes the call's result
text, starting with "Error:", so the model can read it and try otherwise: a tool never breaks a reply.
"""

import ast
import functools
import json
import math
import operator
import zoneinfo
from collections.abc import Callable, Collection
from typing import Any

from cryptography.fernet import InvalidToken
from django.utils import timezone
from django.utils.translation import gettext as _
from jsonschema.exceptions import best_match

from conversations import outbound, schemas, upstream
from conversations.models import Tool

RESULT_LIMIT_BYTES = 64 * 1024  # of an HTTP tool's response; a result goes into the model's context
EXPRESSION_CHARS = 200
MAX_INT_BITS = 10_000  # about 3,000 digits: big enough for arithmetic, small enough to stay instant
MAX_NODES = 100

CALCULATOR = "calculator"
CURRENT_TIME = "current_time"

BUILTINS: dict[str, dict[str, Any]] = {
    CALCULATOR: {
        "description": (
            "Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses, the constants "
            "pi, e and tau, and sqrt, abs, round, floor, ceil, exp, log (natural, or log(x, base)), log10, "
            "sin, cos, tan, asin, acos, atan, min, max."
        ),
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "For example (2 + 3) * 4 ** 2"}},
            "required": ["expression"],
            "additionalProperties": False,
        },
    },
    CURRENT_TIME: {
        "description": "The current date, time and weekday in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "An IANA time zone such as Europe/Berlin or Asia/Shanghai; UTC if omitted.",
                }
            },
            "additionalProperties": False,
        },
    },
}


class ToolError(Exception):
    """A call that cannot be carried out; the message is the result the model reads."""


# --- What a conversation may turn on, and what the upstream is told -------------------------------


def available_tool_names() -> list[str]:
    """The built-in tools, then the enabled HTTP tools (one query)."""
    names = list(BUILTINS)
    names += [
        name
        for name in Tool.objects.filter(enabled=True).values_list("name", flat=True)
        if name not in BUILTINS
    ]
    return names


def definitions(names: Collection[str]) -> list[dict[str, Any]]:
    """The `tools` array of a request for these names, in OpenAI's format; names of tools that no
    longer exist or were disabled are left out. One query when an HTTP tool is among them."""
    found: dict[str, tuple[str, dict[str, Any]]] = {
        name: (spec["description"], spec["parameters"]) for name, spec in BUILTINS.items() if name in names
    }
    wanted = [name for name in names if name not in BUILTINS]
    if wanted:
        for tool in Tool.objects.filter(name__in=wanted, enabled=True):
            found[tool.name] = (tool.description, tool.parameters_schema or {"type": "object"})
    return [
        {
            "type": "function",
            "function": {"name": name, "description": found[name][0], "parameters": found[name][1]},
        }
        for name in names
        if name in found
    ]


def schema_problem(schema: Any) -> str | None:
    """Why a tool's parameters schema cannot be used, or None: it must be a valid JSON schema
    (draft 2020-12) describing an object, as function calling requires."""
    problem = schemas.problem(schema)
    if problem:
        return problem
    if schema.get("type") != "object":
        return _('The parameters schema must describe an object ("type": "object").')
    return None


# --- Running a call -------------------------------------------------------------------------------


def assemble(calls: dict[int, dict[str, str]], pieces: list[dict[str, Any]]) -> None:
    """Add one delta's tool-call pieces to the calls being read, by index: the id and name arrive
    once, the arguments in fragments to concatenate. Some OpenAI-compatible layers send no index: a
    piece with an id not seen yet then starts a call of its own, and one without an id continues the
    last call."""
    for piece in pieces:
        if not isinstance(piece, dict):
            continue
        call = calls.setdefault(_index_of(calls, piece), {"id": "", "name": "", "arguments": ""})
        function = piece.get("function") or {}
        if piece.get("id") and not call["id"]:
            call["id"] = str(piece["id"])
        if function.get("name") and not call["name"]:
            call["name"] = str(function["name"])
        if function.get("arguments"):
            call["arguments"] += str(function["arguments"])


def _index_of(calls: dict[int, dict[str, str]], piece: dict[str, Any]) -> int:
    index = piece.get("index")
    if isinstance(index, int | str) and str(index).isdigit():
        return int(index)
    piece_id = piece.get("id")
    for known, call in calls.items():
        if piece_id and call["id"] == str(piece_id):
            return known
    if piece_id or not calls:
        return max(calls, default=-1) + 1
    return max(calls)


async def run(call: dict[str, str], enabled: Collection[str]) -> str:
    """The result of one call: the tool's output, or "Error: …" for the model to read."""
    name = call.get("name", "")
    try:
        if name not in enabled:
            raise ToolError(f"There is no tool named {name!r} in this conversation.")
        arguments = _arguments(call.get("arguments", ""))
        if name == CALCULATOR:
            return calculate(_text_argument(arguments, "expression", required=True))
        if name == CURRENT_TIME:
            return current_time(_text_argument(arguments, "timezone") or "UTC")
        return await _call_http_tool(name, arguments)
    except ToolError as error:
        return f"Error: {error}"


def _arguments(text: str) -> dict[str, Any]:
    try:
        arguments = json.loads(text or "{}")
    except ValueError:
        raise ToolError("The arguments are not valid JSON.") from None
    if not isinstance(arguments, dict):
        raise ToolError("The arguments must be a JSON object.")
    return arguments


def _text_argument(arguments: dict[str, Any], name: str, required: bool = False) -> str:
    value = arguments.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ToolError(f"The argument {name!r} must be a string.")
    return value


async def _call_http_tool(name: str, arguments: dict[str, Any]) -> str:
    tool = await Tool.objects.filter(name=name, enabled=True).afirst()
    if tool is None:
        raise ToolError(f"The tool {name!r} is not available any more.")
    schema = tool.parameters_schema or {"type": "object"}
    error = best_match(schemas.validator(schema).iter_errors(arguments))
    if error is not None:
        raise ToolError(f"The arguments do not match the tool's parameters: {error.message}")
    secret_headers = {}
    if tool.secret_header_name:
        try:
            secret_headers[tool.secret_header_name] = tool.secret_header_value
        except InvalidToken:
            raise ToolError("The tool's secret cannot be read; an admin must enter it again.") from None
    try:
        response = await outbound.post_json(
            tool.endpoint,
            arguments,
            headers={"User-Agent": "chatsite", "Accept": "application/json, text/plain;q=0.9, */*;q=0.5"},
            secret_headers=secret_headers,
            allow_private=tool.allow_private_address,
            timeout=tool.timeout_seconds,
            limit=RESULT_LIMIT_BYTES,
        )
    except outbound.OutboundError as refused:
        raise ToolError(str(refused)) from None
    # The result is shown to the member and the model: an endpoint that echoes its request must not
    # hand them the secret header.
    text = response.text
    for secret in secret_headers.values():
        if len(secret) >= 4:
            text = upstream.scrub(text, secret)
    if not 200 <= response.status < 300:
        raise ToolError(f"The tool answered HTTP {response.status}: {text[:1000]}")
    return text


# --- The built-in tools ---------------------------------------------------------------------------


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) | {"UTC"}


def current_time(zone_name: str) -> str:
    """Now in an IANA time zone, e.g. "2026-11-29T22:15:03+01:00 (Sunday) in Europe/Berlin"."""
    # Only names from the zone database: a name is never used as a path.
    if zone_name not in _time_zones():
        raise ToolError(f"Unknown time zone {zone_name[:100]!r}; use an IANA name such as Europe/Berlin.")
    now = timezone.now().astimezone(zoneinfo.ZoneInfo(zone_name))
    return f"{now.isoformat(timespec='seconds')} ({now:%A}) in {zone_name}"


Number = int | float
MAX_ROUND_DIGITS = 100

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": lambda number, *digits: _round(number, *digits),
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "min": min,
    "max": max,
}


def _round(number: Number, *digits: Number) -> Number:
    # round(5, -10**9) would compute 10**(10**9) before answering: the digits are bounded first.
    if digits and (not isinstance(digits[0], int) or abs(digits[0]) > MAX_ROUND_DIGITS):
        raise ToolError(
            f"round takes a whole number of digits between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}."
        )
    return round(number, *digits)


def calculate(expression: str) -> str:
    """Evaluate arithmetic from the parsed syntax tree, never with eval: only numbers, the operators,
    constants and functions listed above, with limits on length, size of integers and exponents."""
    if len(expression) > EXPRESSION_CHARS:
        raise ToolError(f"The expression is longer than {EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):
        raise ToolError("The expression could not be read; use numbers, + - * / // % ** and ( ).") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError("The expression is too complex.")
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise ToolError("Division by zero.") from None
    except OverflowError:
        raise ToolError("The result is too large.") from None
    except (ValueError, TypeError) as error:
        raise ToolError(f"The expression cannot be evaluated: {error}.") from None
    return _format(value)


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError("Only numbers are allowed.")
        return _checked(node.value)
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            raise ToolError(f"Unknown name {node.id!r}.")
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise ToolError("^ is not a power here; use ** (2 ** 10).")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not 1 <= len(node.args) <= 2:
            raise ToolError(f"{node.func.id} takes one or two numbers.")
        arguments = [_evaluate(argument) for argument in node.args]
        return _checked(_FUNCTIONS[node.func.id](*arguments))
    raise ToolError("Only numbers, + - * / // % **, parentheses and the listed functions are allowed.")


def _check_power(base: Number, exponent: Number) -> None:
    # The one operator whose result outgrows its operands without bound: refused before computing.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and abs(base).bit_length() * exponent > MAX_INT_BITS * 2
    ):
        raise ToolError("The result is too large.")


def _checked(value: Any) -> Number:
    if isinstance(value, complex):
        raise ToolError("The result is not a real number.")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("The result is too large.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("The result is too large.")
    return value


def _format(value: Number) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.15g}"
    return str(value)
