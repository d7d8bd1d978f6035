"""What is sent upstream for a reply: the system prompt, the selected path as OpenAI messages, and the
conversation's parameters that the model accepts."""

from typing import Any

from conversations.models import ChatModel, Conversation, Message

# Sent when a model names no supported parameters of its own: what every Chat Completions API takes.
COMMON_PARAMETERS = frozenset(
    {"temperature", "top_p", "max_tokens", "stop", "presence_penalty", "frequency_penalty", "seed"}
)


def to_openai(message: Message) -> dict[str, Any] | None:
    """One message in the upstream's format; None for what is not sent (failed replies with no text)."""
    text = "".join(part.get("text", "") for part in message.parts if part.get("type") == "text")
    if message.role == Message.Role.ASSISTANT and not text:
        return None
    return {"role": message.role, "content": text}


def build_request(
    conversation: Conversation, path: list[Message], model: ChatModel
) -> tuple[dict[str, Any], int]:
    """The request body for the reply that follows `path`, and its size in characters."""
    messages: list[dict[str, Any]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for message in path:
        converted = to_openai(message)
        if converted is not None:
            messages.append(converted)
    allowed = set(model.supported_parameters) or COMMON_PARAMETERS
    payload: dict[str, Any] = {
        "model": model.upstream_id,
        "messages": messages,
        **{name: value for name, value in conversation.parameters.items() if name in allowed},
    }
    prompt_chars = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
    return payload, prompt_chars
