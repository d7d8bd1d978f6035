"""The context budget: what of a conversation fits the model's context window.

A request is estimated before it is sent: each message's characters times the model's tokens per
character, plus a fixed cost per message and per image. The system prompt and the newest turn are
always sent; the oldest whole turns are left out until the estimate and the room reserved for the
answer fit the window. A turn is a user message with everything that answered it, so a tool call is
never sent without its results (an API refuses a tool result whose call is missing, and the reverse).
When even the newest turn does not fit, the send is refused before any upstream call.

The ratio is learned from the prompt_tokens the upstream reports (calibrate(), in the transaction
that finishes the reply's usage record): no tokenizer is downloaded or run.
"""

import json
import math
from dataclasses import dataclass
from typing import Any

from django.db.models import F
from django.utils.translation import gettext as _

from conversations.models import ChatModel

MESSAGE_TOKENS = 4  # role and separators of one message (3 to 4 in OpenAI's chat format)
# One image at high detail (1024 x 1024 at OpenAI). Providers count images very differently, so this
# is a generous fixed cost rather than something learned.
IMAGE_TOKENS = 765
DEFAULT_ANSWER_TOKENS = 1024  # reserved for the answer when the conversation sets no max_tokens
SAFETY = 1.05  # the ratio is an average; one prompt can hold more tokens per character than usual
ALWAYS_SENT = {"system", "developer"}

LEARNING_RATE = 0.3  # the newest sample's weight in the moving average of the ratio
MIN_SAMPLE_CHARS = 200  # below this a prompt is mostly per-message cost and rounding: it teaches little
RATIO_RANGE = (0.05, 2.0)  # tokens per character: about 0.25 for English prose, over 1 for Chinese


class ContextTooLongError(Exception):
    """Even the system prompt and the newest turn do not fit the model's context window."""

    code = "context_too_long"


@dataclass(frozen=True)
class Fitted:
    omitted: int  # messages left out, oldest first
    prompt_chars: int  # characters of what is sent: the usage estimate when the upstream reports none
    estimate: int  # prompt tokens, estimated


def fit(payload: dict[str, Any], model: ChatModel) -> Fitted:
    """Leave the oldest whole turns out of payload["messages"] (in place) until the request fits."""
    ratio = model.tokens_per_char
    messages: list[dict[str, Any]] = payload["messages"]
    tools_chars = _tools_chars(payload)
    fixed = math.ceil(tools_chars * ratio)
    turns: list[list[int]] = []  # indices into messages
    for index, message in enumerate(messages):
        if message.get("role") in ALWAYS_SENT:
            fixed += _tokens(message, ratio)
        elif message.get("role") == "user" or not turns:
            turns.append([index])
        else:
            turns[-1].append(index)
    costs = [sum(_tokens(messages[index], ratio) for index in turn) for turn in turns]
    limit = (model.context_window - answer_tokens(payload, model)) / SAFETY
    estimate = fixed + sum(costs)
    dropped = 0
    while estimate > limit and dropped < len(turns) - 1:
        estimate -= costs[dropped]
        dropped += 1
    if estimate > limit:
        raise ContextTooLongError(
            _(
                "This message is too long for the model's context window (about %(tokens)s tokens, "
                "%(limit)s fit). Shorten it, or choose a model with a larger window."
            )
            % {"tokens": estimate, "limit": max(int(limit), 0)}
        )
    left_out = {index for turn in turns[:dropped] for index in turn}
    if left_out:
        payload["messages"] = [m for index, m in enumerate(messages) if index not in left_out]
    return Fitted(
        omitted=len(left_out),
        prompt_chars=tools_chars + sum(_chars(m) for m in payload["messages"]),
        estimate=estimate,
    )


def answer_tokens(payload: dict[str, Any], model: ChatModel) -> int:
    """Room kept for the answer: the request's max_tokens, at most half the window."""
    asked = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
        return min(asked, model.context_window // 2)
    return min(DEFAULT_ANSWER_TOKENS, model.context_window // 4)


def note(omitted: int) -> dict[str, Any]:
    """The reply's part that says what was left out; the chat shows it above the reply."""
    return {"type": "context_note", "omitted_messages": omitted}


def calibrate(model: ChatModel, payload: dict[str, Any], prompt_tokens: int) -> None:
    """Move the model's tokens per character towards what the upstream reported for this request.

    One UPDATE by expression, so that replies finishing together in several processes all count.
    It sends no post_save signal on purpose: the catalog (catalog.py) would otherwise be reloaded by
    every process after every reply. This process's catalog copy follows at once below; the others
    read the new ratio when their copy is next reloaded (catalog.MAX_AGE_SECONDS at the latest).
    """
    messages = payload.get("messages") or []
    chars = _tools_chars(payload) + sum(_chars(m) for m in messages)
    if prompt_tokens <= 0 or chars < MIN_SAMPLE_CHARS or any(_images(m) for m in messages):
        return  # images are a guessed fixed cost: a request with one says nothing about text
    low, high = RATIO_RANGE
    sample = min(max((prompt_tokens - MESSAGE_TOKENS * len(messages)) / chars, low), high)
    ChatModel.objects.filter(pk=model.pk).update(
        tokens_per_char=F("tokens_per_char") * (1 - LEARNING_RATE) + sample * LEARNING_RATE
    )
    # A float assigned on the shared copy: readers see the old ratio or the new one, both valid.
    model.tokens_per_char = model.tokens_per_char * (1 - LEARNING_RATE) + sample * LEARNING_RATE


def _tokens(message: dict[str, Any], ratio: float) -> int:
    return math.ceil(_chars(message) * ratio) + MESSAGE_TOKENS + IMAGE_TOKENS * _images(message)


def _chars(message: dict[str, Any]) -> int:
    """The characters a tokenizer reads: text, and tool calls as the JSON they are sent as."""
    content = message.get("content")
    if isinstance(content, str):
        chars = len(content)
    elif isinstance(content, list):
        chars = sum(
            len(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    else:
        chars = 0
    if message.get("tool_calls"):
        chars += len(json.dumps(message["tool_calls"]))
    return chars


def _images(message: dict[str, Any]) -> int:
    content = message.get("content")
    if not isinstance(content, list):
        return 0
    return sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")


def _tools_chars(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload["tools"])) if payload.get("tools") else 0
