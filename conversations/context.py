"""What is sent upstream for a reply: the system prompt, the selected path as OpenAI messages, and the
conversation's parameters that the model accepts."""

import json
from typing import Any

from conversations import images, parameters, tools
from conversations.models import ChatModel, Conversation, Message

# Stands in for an image the model is not sent (it is written for the model, not the member).
IMAGE_NOT_SENT = "[An image was attached here; it is not available to this model.]"


def to_openai(message: Message, image_urls: dict[str, str] | None = None) -> dict[str, Any] | None:
    """One message in the upstream's format; None for what is not sent (failed replies with no text).
    `image_urls` holds the data: URLs of the images its parts name. Replies that called tools go
    through tool_turns instead."""
    if message.role == Message.Role.TOOL:  # a result saved as its own message (an import)
        result = next((p for p in message.parts if p.get("type") == "tool_result"), {})
        return {
            "role": "tool",
            "tool_call_id": result.get("tool_call_id", ""),
            "content": _result_text(result),
        }
    text = "".join(part.get("text", "") for part in message.parts if part.get("type") == "text")
    if message.role == Message.Role.ASSISTANT and not text:
        return None
    content = with_images(message, text, image_urls or {})
    return {"role": message.role, "content": content}


def with_images(message: Message, text: str, image_urls: dict[str, str]) -> str | list[dict[str, Any]]:
    """A user message with images: its parts as text and image_url parts, the form vision models take.
    An image without a URL (a model without vision was chosen after it was sent, or its file is gone)
    is a note, so the model knows one was there; with no image left, the content is plain text."""
    if message.role != Message.Role.USER or not any(p.get("type") == "image" for p in message.parts):
        return text
    content: list[dict[str, Any]] = []
    for part in message.parts:
        if part.get("type") == "text" and part.get("text"):
            content.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image":
            url = image_urls.get(str(part.get("attachment")))
            if url:
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": IMAGE_NOT_SENT})
    if any(part["type"] == "image_url" for part in content):
        return content
    return "\n\n".join(part["text"] for part in content)


def build_request(
    conversation: Conversation, path: list[Message], model: ChatModel
) -> tuple[dict[str, Any], int]:
    """The request body for the reply that follows `path`, and its size in characters."""
    messages: list[dict[str, Any]] = []
    # Read here, in the database thread, once per request: one query, only when images are named.
    image_urls = images.data_urls(conversation, path) if model.supports_vision else {}
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for message in path:
        if message.role == Message.Role.ASSISTANT and has_tool_calls(message.parts):
            messages += tool_turns(message.parts, with_reasoning=message.model_id == model.pk)
            continue
        converted = to_openai(message, image_urls)
        if converted is not None:
            messages.append(converted)
    # Tools that were turned on and still exist; a tool_choice is sent only with them.
    definitions = tools.definitions(conversation.tools) if conversation.tools and model.supports_tools else []
    tools_on = bool(definitions)
    payload: dict[str, Any] = {
        "model": model.upstream_id,
        "messages": messages,
        **parameters.request_parameters(conversation.parameters, model, tools_on),
    }
    if definitions:
        payload["tools"] = definitions
    prompt_chars = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
    return payload, prompt_chars


# --- Replies that called tools -----------------------------------------------------------------------

# The result of a call that never finished (the reply was stopped or the server went down meanwhile):
# an API refuses a tool call without its result.
NO_RESULT = "No result: the call did not finish."


def has_tool_calls(parts: list[dict[str, Any]]) -> bool:
    return any(part.get("type") == "tool_call" for part in parts)


def tool_turns(parts: list[dict[str, Any]], *, with_reasoning: bool = False) -> list[dict[str, Any]]:
    """A reply's parts as the upstream's messages.

    A reply that called tools is one message here (generation.py appends each step's text, calls and
    results to it); upstream it is each step's assistant message with its `tool_calls`, one `tool`
    message per call, and the final answer. `with_reasoning` sends each step's reasoning back as
    `reasoning_content` on its tool-call message (see reasoning_back), for the model that wrote it.
    """
    turns: list[dict[str, Any]] = []
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    results: dict[str, str] = {}

    def close_step() -> None:
        if calls:
            turn: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(text) or None,
                "tool_calls": [
                    {
                        "id": call.get("id", ""),
                        "type": "function",
                        "function": {
                            "name": call.get("name", ""),
                            "arguments": call.get("arguments") or "{}",
                        },
                    }
                    for call in calls
                ],
            }
            if with_reasoning and reasoning:
                turn["reasoning_content"] = "".join(reasoning)
            turns.append(turn)
            turns.extend(
                {
                    "role": "tool",
                    "tool_call_id": call.get("id", ""),
                    "content": results.get(call.get("id"), NO_RESULT),
                }
                for call in calls
            )
        elif "".join(text):
            turns.append({"role": "assistant", "content": "".join(text)})
        text.clear()
        reasoning.clear()
        calls.clear()
        results.clear()

    for part in parts:
        kind = part.get("type")
        # A step is text, then calls, then their results: what follows results begins the next step.
        if (kind in ("text", "reasoning") and calls) or (kind == "tool_call" and results):
            close_step()
        if kind == "text":
            text.append(part.get("text", ""))
        elif kind == "reasoning":
            reasoning.append(part.get("text", ""))
        elif kind == "tool_call":
            calls.append(part)
        elif kind == "tool_result":
            results[part.get("tool_call_id")] = _result_text(part)
    close_step()
    return turns


def _result_text(part: dict[str, Any]) -> str:
    content = part.get("content", "")
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
